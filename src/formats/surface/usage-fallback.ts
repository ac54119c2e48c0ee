import { countTextTokens, estimateInputTokens } from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";

/**
 * Keeps a stream's output text (in memory, for this stream only) in case the
 * supplier never reports usage; then Lethe counts tokens itself and marks the
 * record as estimated. Once the supplier's usage arrives, nothing more is kept.
 */
export class UsageFallback {
  private readonly parts: string[] = [];
  private reported = false;

  /** The supplier reported usage: stop keeping output. */
  markReported(): void {
    this.reported = true;
    this.parts.length = 0;
  }

  add(text: string): void {
    if (!this.reported) this.parts.push(text);
  }

  /**
   * When no usage was reported, estimates it from the request and the output seen.
   * Returns true when it had to estimate.
   */
  settle(exchange: Exchange, requestBody: Record<string, unknown>): boolean {
    if (this.reported) return false;
    let output = 0;
    for (const part of this.parts) output += countTextTokens(part);
    this.parts.length = 0;
    exchange.usage = { input: estimateInputTokens(requestBody), output, cachedInput: 0, reasoning: 0 };
    exchange.tokensEstimated = true;
    this.reported = true;
    return true;
  }
}
