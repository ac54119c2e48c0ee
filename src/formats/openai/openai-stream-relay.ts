import type { LetheError } from "../../errors/lethe-error.js";
import type { Exchange } from "../../metering/exchange.js";
import { fromOpenAIUsage, toOpenAIUsage } from "../../metering/token-usage.js";
import type { WireEvent } from "../../suppliers/supplier.js";
import type { ClientRequest, StreamTranslator } from "../surface/client-surface.js";
import { spliceModel, withoutNullMember } from "../surface/splice-model.js";
import { UsageFallback } from "../surface/usage-fallback.js";
import { renderOpenAIError } from "./openai-error.js";

const DONE = "data: [DONE]\n\n";
const USAGE_KEY = '"usage"';
const OUTPUT_KEYS = ["content", "refusal", "reasoning_content", "reasoning"] as const;

function hasFinishReason(choices: unknown[]): boolean {
  for (const choice of choices) {
    if (typeof (choice as { finish_reason?: unknown } | null)?.finish_reason === "string") return true;
  }
  return false;
}

/**
 * Relays an OpenAI supplier's chunks to an OpenAI client: rewrites `model` to the
 * configured id, meters `usage`, and drops the usage Lethe forced when the client
 * did not ask for it.
 */
export class OpenAIStreamRelay implements StreamTranslator {
  private readonly fallback = new UsageFallback();
  private id: unknown = undefined;
  private created: unknown = undefined;
  /** A choice of the stream has its finish_reason: usage from here on is final. */
  private finished = false;

  constructor(
    private readonly request: ClientRequest,
    private readonly exchange: Exchange,
  ) {}

  event(event: WireEvent): string | null {
    const chunk = event.data;
    this.id ??= chunk.id;
    this.created ??= chunk.created;
    const usage = chunk.usage;
    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    if (!this.finished) this.finished = hasFinishReason(choices);
    // counts no model could reach are not billed (the fallback counts): nor does the client read them
    let refused = false;
    if (usage !== undefined && usage !== null) {
      const counted = fromOpenAIUsage(usage);
      refused = counted === null;
      if (counted !== null) {
        this.exchange.usage = counted;
        // counts that come before the answer finished (a server reporting the prompt up front,
        // or counting as it goes) are not the last: output relayed after them is still counted,
        // so a stream cut before its final usage is billed for it
        if (this.finished) this.fallback.markReported();
        else this.fallback.markInputReported();
      }
    }
    const keepUsage = (this.request.wantsStreamUsage && !refused) || usage === undefined;
    if (!keepUsage && choices.length === 0) return null;
    if (this.noteOutput(choices)) this.exchange.markFirstToken();
    const spliced = this.splice(chunk, event.text, keepUsage, usage);
    if (spliced !== undefined) return `data: ${spliced}\n\n`;
    if (!keepUsage) delete chunk.usage;
    chunk.model = this.exchange.model;
    return `data: ${JSON.stringify(chunk)}\n\n`;
  }

  /** The chunk as the supplier wrote it, with the configured model and without a stripped `"usage":null`, when it can be edited safely. */
  private splice(
    chunk: Record<string, unknown>,
    text: string | undefined,
    keepUsage: boolean,
    usage: unknown,
  ): string | undefined {
    if (text === undefined) return undefined;
    // the chunk Lethe bills by (one a stream) goes out as Lethe read it: a key written twice,
    // at any depth (JSON.parse keeps the last, some parsers the first), would let the client
    // read other counts than the ones billed
    if (usage !== null && usage !== undefined) return undefined;
    // nor one whose usage may be written twice (a parser keeping the first would read counts):
    // `"usage"` found twice anywhere, a key or not, is reason enough (two native scans)
    if (text.indexOf(USAGE_KEY) !== text.lastIndexOf(USAGE_KEY)) return undefined;
    const edited = keepUsage ? text : usage === null ? withoutNullMember(text, "usage") : undefined;
    return edited === undefined ? undefined : spliceModel(edited, chunk.model, this.exchange.model);
  }

  /** True when a chunk carries output the client will see (text, refusal, reasoning, tool calls). */
  private noteOutput(choices: unknown[]): boolean {
    let output = false;
    for (const choice of choices) {
      const delta = (choice as { delta?: Record<string, unknown> | null }).delta;
      if (delta === undefined || delta === null) continue;
      for (const key of OUTPUT_KEYS) {
        const value = delta[key];
        // servers that send both reasoning fields (vLLM) send the same text twice: count it once
        if (key === "reasoning" && typeof delta.reasoning_content === "string" && delta.reasoning_content !== "")
          continue;
        if (typeof value === "string" && value !== "") {
          output = true;
          this.fallback.add(value);
        }
      }
      if (Array.isArray(delta.tool_calls) && delta.tool_calls.length > 0) {
        output = true;
        this.fallback.add(JSON.stringify(delta.tool_calls));
      }
    }
    return output;
  }

  end(): string {
    const estimated = this.fallback.settle(this.exchange, this.request.body);
    if (!estimated || !this.request.wantsStreamUsage || this.exchange.usage === null) return DONE;
    // the client asked for usage and the supplier sent none: give it Lethe's count
    const chunk = { id: this.id, object: "chat.completion.chunk", created: this.created, model: this.exchange.model };
    return `data: ${JSON.stringify({ ...chunk, choices: [], usage: toOpenAIUsage(this.exchange.usage) })}\n\n${DONE}`;
  }

  error(error: LetheError): string {
    this.fallback.settle(this.exchange, this.request.body);
    // the openai SDK raises an APIError for a chunk with an `error` member
    return `data: ${renderOpenAIError(error)}\n\n${DONE}`;
  }
}
