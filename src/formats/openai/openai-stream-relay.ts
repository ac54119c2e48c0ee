import type { LetheError } from "../../errors/lethe-error.js";
import { countTextTokens, estimateInputTokens } from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";
import { fromOpenAIUsage } from "../../metering/token-usage.js";
import type { WireEvent } from "../../suppliers/supplier.js";
import type { ClientRequest, StreamTranslator } from "../surface/client-surface.js";
import { renderOpenAIError } from "./openai-error.js";

const DONE = "data: [DONE]\n\n";

/** True when a chunk's delta carries output the client will see (text, tool calls, refusal, reasoning). */
function collectOutput(choices: unknown[], parts: string[] | null): boolean {
  let output = false;
  for (const choice of choices) {
    const delta = (choice as { delta?: Record<string, unknown> }).delta;
    if (delta === undefined || delta === null) continue;
    for (const key of ["content", "refusal", "reasoning_content", "reasoning"] as const) {
      const value = delta[key];
      if (typeof value === "string" && value !== "") {
        output = true;
        parts?.push(value);
      }
    }
    if (Array.isArray(delta.tool_calls) && delta.tool_calls.length > 0) {
      output = true;
      if (parts !== null) parts.push(JSON.stringify(delta.tool_calls));
    }
  }
  return output;
}

/**
 * Relays an OpenAI supplier's chunks to an OpenAI client: rewrites `model` to the
 * configured id, meters `usage`, and drops the usage Lethe forced when the client
 * did not ask for it. Output text is kept (in memory, for this stream only) just in
 * case the supplier sends no usage and Lethe must count tokens itself.
 */
export class OpenAIStreamRelay implements StreamTranslator {
  private readonly outputParts: string[] = [];
  private sawUsage = false;

  constructor(
    private readonly request: ClientRequest,
    private readonly exchange: Exchange,
  ) {}

  event(event: WireEvent): string | null {
    const chunk = event.data;
    const usage = chunk.usage;
    if (usage !== undefined && usage !== null) {
      const counted = fromOpenAIUsage(usage);
      if (counted !== null) {
        this.exchange.usage = counted;
        this.sawUsage = true;
      }
    }
    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    if (!this.request.wantsStreamUsage) {
      if (choices.length === 0 && usage !== undefined) return null;
      delete chunk.usage;
    }
    if (collectOutput(choices, this.sawUsage ? null : this.outputParts)) this.exchange.markFirstToken();
    chunk.model = this.exchange.model;
    return `data: ${JSON.stringify(chunk)}\n\n`;
  }

  end(): string {
    this.settleUsage();
    return DONE;
  }

  error(error: LetheError): string {
    this.settleUsage();
    // the openai SDK raises an APIError for a chunk with an `error` member
    return `data: ${renderOpenAIError(error)}\n\n${DONE}`;
  }

  /** Counts tokens locally when the supplier reported none; bills what was produced. */
  private settleUsage(): void {
    if (this.sawUsage) return;
    let output = 0;
    for (const part of this.outputParts) output += countTextTokens(part);
    this.outputParts.length = 0;
    this.exchange.usage = { input: estimateInputTokens(this.request.body), output, cachedInput: 0, reasoning: 0 };
    this.exchange.tokensEstimated = true;
  }
}
