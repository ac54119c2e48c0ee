import {
  CHARACTERS_PER_TOKEN,
  countTextsTokens,
  estimateInputTokens,
  MAX_COUNTED_CHARACTERS,
} from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";
import { noTokens } from "../../metering/token-usage.js";

/**
 * Keeps a stream's output text (in memory, for this stream only) until the supplier's
 * final usage arrives; should the stream end first (a client abort, a reset, an error
 * event, a supplier that reports none), Lethe counts the output itself and marks the
 * record as estimated. Once the final usage arrives, nothing more is kept.
 */
export class UsageFallback {
  private readonly parts: string[] = [];
  /** Characters kept in `parts`: the tokenizer reads no more than MAX_COUNTED_CHARACTERS of them. */
  private kept = 0;
  /**
   * Characters past those, counted and not kept: a stream that never reports usage (a broken
   * or hostile supplier) held every delta until the gateway ran out of memory.
   */
  private beyond = 0;
  /** The supplier's final counts arrived. */
  private reported = false;
  /** The supplier counted the input already (Anthropic's `message_start`); output is still to come. */
  private inputReported = false;

  /**
   * The supplier counted the input, and only a first output count: Anthropic's
   * `message_start` says 1 output token, and the real count comes with `message_delta`
   * at the end. A stream cut before then is billed for the output that was relayed.
   */
  markInputReported(): void {
    this.inputReported = true;
  }

  /** The supplier reported its final usage: stop keeping output. */
  markReported(): void {
    this.reported = true;
    this.parts.length = 0;
    this.kept = 0;
  }

  add(text: string): void {
    if (this.reported) return;
    if (this.kept + text.length <= MAX_COUNTED_CHARACTERS) {
      this.parts.push(text);
      this.kept += text.length;
    } else this.beyond += text.length;
  }

  /** Characters of output held for the count (tests: it stays bounded). */
  get heldCharacters(): number {
    return this.kept;
  }

  /**
   * When no final usage was reported, estimates what is missing: the output seen (never
   * below what the supplier counted so far), and the input unless the supplier counted it.
   * Returns true when it had to estimate.
   */
  settle(exchange: Exchange, requestBody: Record<string, unknown>): boolean {
    if (this.reported) return false;
    // counted as one text: a word a stream split between two deltas ("hel", "lo") is one
    // token, which counted delta by delta became two (a cut stream billed up to twice its
    // output); what the tokenizer would not have read anyway is estimated as it would have been
    const output = exchange.estimatedOutput(
      countTextsTokens([this.parts.join("")]) + Math.ceil(this.beyond / CHARACTERS_PER_TOKEN),
    );
    this.parts.length = 0;
    const counted = this.inputReported ? exchange.usage : null;
    exchange.usage =
      counted !== null
        ? { ...counted, output: Math.max(counted.output, output) }
        : { ...noTokens(), input: estimateInputTokens(requestBody), output };
    exchange.tokensEstimated = true;
    this.reported = true;
    return true;
  }
}
