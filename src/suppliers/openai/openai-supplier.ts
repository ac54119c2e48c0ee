import type { SupplierId } from "../../config/ids.js";
import type { SupplierConfig } from "../../config/load-config.js";
import { UpstreamError } from "../../errors/lethe-error.js";
import { badUpstreamResponse, parseStreamEvent, readJsonObject } from "../http/read-json.js";
import { readSse } from "../http/read-sse.js";
import {
  BASE_REQUEST_HEADERS,
  isRejection,
  SupplierHttpClient,
  type UpstreamResponse,
} from "../http/supplier-http-client.js";
import { lostOnlyTheEnd } from "../http/upstream-failure.js";
import {
  type JsonAnswer,
  type Supplier,
  type SupplierCall,
  type SupplierResult,
  type WireEvent,
  wireEvent,
} from "../supplier.js";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function hasFinishReason(chunk: Record<string, unknown>): boolean {
  const choices = chunk.choices;
  if (!Array.isArray(choices)) return false;
  for (const choice of choices) if (isObject(choice) && typeof choice.finish_reason === "string") return true;
  return false;
}

/** The final chunk of a stream that asked for usage: the usage, and no choices. */
function isUsageChunk(chunk: Record<string, unknown>): boolean {
  return isObject(chunk.usage) && Array.isArray(chunk.choices) && chunk.choices.length === 0;
}

/**
 * Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, Together, Groq…).
 * Subclasses for particular servers override only what they do differently.
 */
export class OpenAICompatibleSupplier implements Supplier {
  readonly id: SupplierId;
  readonly format = "openai" as const;
  protected readonly http: SupplierHttpClient;
  private readonly jsonHeaders: Record<string, string>;
  /** The same, accepting an event stream: built once, not spread per streamed request. */
  private readonly streamHeaders: Record<string, string>;
  private readonly sendStoreFalse: boolean;

  constructor(config: SupplierConfig) {
    this.id = config.id;
    this.sendStoreFalse = config.sendStoreFalse;
    this.http = new SupplierHttpClient(config);
    this.jsonHeaders = { ...BASE_REQUEST_HEADERS, ...config.headers };
    if (config.apiKey !== null) this.jsonHeaders.authorization = `Bearer ${config.apiKey}`;
    this.streamHeaders = { ...this.jsonHeaders, accept: "text/event-stream" };
  }

  async send(call: SupplierCall): Promise<SupplierResult> {
    const headers = call.stream ? this.streamHeaders : this.jsonHeaders;
    // ask the supplier not to keep the completion (OpenAI stores some by default); a
    // spliced text holds it already
    if (this.sendStoreFalse && call.text === undefined) call.body.store = false;
    const answer = await this.http.post(
      "/chat/completions",
      call.text ?? JSON.stringify(call.body),
      headers,
      call.cancellation,
      call.timeouts,
    );
    if (isRejection(answer)) return { kind: "rejected", error: answer.error, detail: answer.detail };
    if (call.stream) {
      const giveUp = () => answer.abort("deadline");
      return { kind: "stream", events: this.readChunks(answer), giveUp, sentAt: answer.sentAt };
    }
    return { kind: "json", ...(await this.readJson(answer)) };
  }

  /** Reads a whole non-streaming completion. */
  protected async readJson(response: UpstreamResponse): Promise<JsonAnswer> {
    const parsed = await readJsonObject(response);
    if (!Array.isArray(parsed.body.choices)) {
      throw badUpstreamResponse("The supplier sent a response that is not a chat completion.");
    }
    return parsed;
  }

  /** Turns the SSE stream into parsed chunk events, ending at OpenAI's `[DONE]`. */
  protected async *readChunks(response: UpstreamResponse): AsyncGenerator<WireEvent> {
    let finished = false;
    // the usage chunk (no choices) comes last, after every finish_reason: Lethe always asks for it
    let whole = false;
    try {
      for await (const message of readSse(response)) {
        // OpenAI ends every stream with a literal [DONE] event, which is not JSON. The client's
        // stream ends here, even if the supplier holds its response open; the rest of the body
        // is drained apart, so the connection stays reusable
        if (message.data === "[DONE]") {
          response.finishEarly();
          return;
        }
        const data = parseStreamEvent(message.data, "chunk");
        // some OpenAI-compatible servers report failures as an `error` chunk mid-stream
        if (data.error !== undefined && data.error !== null) {
          throw new UpstreamError("LETHE_UPSTREAM_ERROR", "The supplier reported an error during the stream.", {
            upstreamStatus: 200,
            // only ever retried when it is the very first event: nothing reached the client yet
            retryable: true,
          });
        }
        if (!finished && hasFinishReason(data)) finished = true;
        else if (finished && isUsageChunk(data)) whole = true;
        yield wireEvent(message.event, data, message.data);
      }
    } catch (thrown) {
      // the connection broke after the answer was whole (its finish reason and its final usage
      // came): the client lacks only [DONE], which its stream gets from Lethe all the same
      if (whole && lostOnlyTheEnd(thrown)) return;
      throw thrown;
    }
    // a stream that ended without [DONE] is complete only if a finish_reason arrived
    if (!finished && !response.aborted) {
      // the socket ended cleanly but the stream never finished: treat as a broken stream
      throw badUpstreamResponse("The supplier's stream ended before it was complete.");
    }
  }

  full(): boolean {
    return this.http.full;
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}
