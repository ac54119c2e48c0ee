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
import { type Supplier, type SupplierCall, type SupplierResult, type WireEvent, wireEvent } from "../supplier.js";

/** The API version Lethe speaks when the client named none. */
export const DEFAULT_ANTHROPIC_VERSION = "2023-06-01";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Maps Anthropic's in-stream `error` event to an UpstreamError by its type alone.
 * Retryable, because routing retries only before the first byte reached the client.
 */
function streamError(data: Record<string, unknown>): UpstreamError {
  const type = isObject(data.error) ? data.error.type : undefined;
  if (type === "overloaded_error") {
    return new UpstreamError("LETHE_UPSTREAM_OVERLOADED", "The supplier is overloaded.", {
      upstreamStatus: 529,
      retryable: true,
    });
  }
  return new UpstreamError("LETHE_UPSTREAM_ERROR", "The supplier reported an error during the stream.", {
    upstreamStatus: 200,
    retryable: true,
  });
}

/** Anthropic's API versions are dates (`2023-06-01`). */
const VERSION_FORMAT = /^\d{4}-\d{2}-\d{2}$/;

/** Anthropic's Messages API (and servers that speak it). */
export class AnthropicSupplier implements Supplier {
  readonly id: SupplierId;
  readonly format = "anthropic" as const;
  private readonly http: SupplierHttpClient;
  private readonly baseHeaders: Record<string, string>;
  private readonly messagesPath: string;

  constructor(config: SupplierConfig) {
    this.id = config.id;
    this.http = new SupplierHttpClient(config);
    // accept base URLs given with or without the /v1 suffix
    this.messagesPath = /\/v1\/?$/.test(new URL(config.baseUrl ?? "").pathname) ? "/messages" : "/v1/messages";
    this.baseHeaders = { ...BASE_REQUEST_HEADERS, ...config.headers };
    if (config.apiKey !== null) this.baseHeaders["x-api-key"] = config.apiKey;
  }

  /** Header sets already built, per version and streaming, for calls without a beta header. */
  private readonly builtHeaders = new Map<string, Record<string, string>>();

  private headers(call: { stream: boolean; headers?: Record<string, string> }): Record<string, string> {
    const version = call.headers?.["anthropic-version"] ?? DEFAULT_ANTHROPIC_VERSION;
    const beta = call.headers?.["anthropic-beta"];
    // a value from the client is kept past its request only when it is a date, as Anthropic's
    // versions are: anything else is built per call and let go with it
    if (beta !== undefined || !VERSION_FORMAT.test(version)) return this.buildHeaders(version, call.stream, beta);
    // nearly every call names one of a handful of versions: build each set once, not per call
    const key = `${call.stream ? "s" : "j"}${version}`;
    let headers = this.builtHeaders.get(key);
    if (headers === undefined) {
      headers = this.buildHeaders(version, call.stream, undefined);
      if (this.builtHeaders.size < 64) this.builtHeaders.set(key, headers);
    }
    return headers;
  }

  private buildHeaders(version: string, stream: boolean, beta: string | undefined): Record<string, string> {
    return {
      ...this.baseHeaders,
      "anthropic-version": version,
      ...(beta !== undefined && { "anthropic-beta": beta }),
      ...(stream && { accept: "text/event-stream" }),
    };
  }

  async send(call: SupplierCall): Promise<SupplierResult> {
    const answer = await this.http.post(
      this.messagesPath,
      call.text ?? JSON.stringify(call.body),
      this.headers(call),
      call.cancellation,
      call.timeouts,
    );
    if (isRejection(answer)) return { kind: "rejected", error: answer.error, detail: answer.detail };
    if (call.stream) {
      const giveUp = () => answer.abort("deadline");
      return { kind: "stream", events: this.readEvents(answer), giveUp, sentAt: answer.sentAt };
    }
    const json = await readJsonObject(answer);
    if (json.body.type !== "message") throw badUpstreamResponse("The supplier sent a response that is not a message.");
    return { kind: "json", ...json };
  }

  /** Asks the supplier's own `count_tokens` endpoint; the result is `{ input_tokens }`. */
  async countTokens(call: SupplierCall): Promise<SupplierResult> {
    const path = `${this.messagesPath}/count_tokens`;
    const answer = await this.http.post(
      path,
      JSON.stringify(call.body),
      this.headers(call),
      call.cancellation,
      call.timeouts,
    );
    if (isRejection(answer)) return { kind: "rejected", error: answer.error, detail: answer.detail };
    const { body } = await readJsonObject(answer);
    if (typeof body.input_tokens !== "number") throw badUpstreamResponse("The supplier's token count is not a number.");
    return { kind: "json", body };
  }

  /**
   * Parses Anthropic's event stream; it is complete once `message_stop` arrived, or once a
   * `message_delta` with its stop reason did (the answer is whole: a stream cut after it lacks
   * only `message_stop`, which the client gets from Lethe all the same).
   */
  private async *readEvents(response: UpstreamResponse): AsyncGenerator<WireEvent> {
    let whole = false;
    try {
      for await (const message of readSse(response)) {
        const data = parseStreamEvent(message.data, "event");
        if (data.type === "error" || message.event === "error") throw streamError(data);
        yield wireEvent(message.event, data, message.data);
        if (data.type === "message_stop") {
          // the client's stream ends here, even if the supplier holds its response open; the
          // rest of the body is drained apart, so the connection stays reusable
          response.finishEarly();
          return;
        }
        if (data.type === "message_delta") whole = isObject(data.delta) && typeof data.delta.stop_reason === "string";
      }
    } catch (thrown) {
      if (!(whole && lostOnlyTheEnd(thrown))) throw thrown;
    }
    if (whole) yield { event: "message_stop", data: { type: "message_stop" } };
    else if (!response.aborted) throw badUpstreamResponse("The supplier's stream ended before it was complete.");
  }

  full(): boolean {
    return this.http.full;
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}
