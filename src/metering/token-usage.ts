/**
 * Token counters of one request. `input` counts every input token, cached ones
 * included; `cachedInput` is the part read from a prompt cache, `cacheWrite` the part
 * written to one (Anthropic prices those apart). `output` includes reasoning tokens;
 * `reasoning` is that part.
 */
export interface TokenUsage {
  input: number;
  output: number;
  cachedInput: number;
  cacheWrite: number;
  reasoning: number;
}

/** A request that used no tokens: its counters before any are known. */
export function noTokens(): TokenUsage {
  return { input: 0, output: 0, cachedInput: 0, cacheWrite: 0, reasoning: 0 };
}

/**
 * More tokens than any model reads or writes in one request (the largest context windows
 * hold about ten million). A supplier's count above it is a bug of the supplier's (-1
 * wrapped to 32 bits, 1e300): billed as reported, one answer would drain an account for
 * good. Such usage is read as not reported, and Lethe counts the tokens itself.
 */
export const MAX_PLAUSIBLE_TOKENS = 100_000_000;

/** The usage as read, or null when a counter of it is past MAX_PLAUSIBLE_TOKENS. */
export function plausibleUsage(usage: TokenUsage): TokenUsage | null {
  return usage.input > MAX_PLAUSIBLE_TOKENS ||
    usage.output > MAX_PLAUSIBLE_TOKENS ||
    usage.cachedInput > MAX_PLAUSIBLE_TOKENS ||
    usage.cacheWrite > MAX_PLAUSIBLE_TOKENS ||
    usage.reasoning > MAX_PLAUSIBLE_TOKENS
    ? null
    : usage;
}

/** A token counter from a supplier's JSON: a non-negative whole number, 0 when absent or odd. */
export function tokenCount(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

function field(record: unknown, key: string): unknown {
  return typeof record === "object" && record !== null ? (record as Record<string, unknown>)[key] : undefined;
}

/** Reads OpenAI's `usage` object; null when the supplier sent none, or counts no model could reach. */
export function fromOpenAIUsage(usage: unknown): TokenUsage | null {
  if (typeof usage !== "object" || usage === null) return null;
  return plausibleUsage({
    input: tokenCount(field(usage, "prompt_tokens")),
    output: tokenCount(field(usage, "completion_tokens")),
    cachedInput: tokenCount(field(field(usage, "prompt_tokens_details"), "cached_tokens")),
    cacheWrite: 0,
    reasoning: tokenCount(field(field(usage, "completion_tokens_details"), "reasoning_tokens")),
  });
}

/** OpenAI's `usage` object for Lethe's counters. */
export function toOpenAIUsage(usage: TokenUsage): Record<string, unknown> {
  return {
    prompt_tokens: usage.input,
    completion_tokens: usage.output,
    total_tokens: usage.input + usage.output,
    prompt_tokens_details: { cached_tokens: usage.cachedInput },
    completion_tokens_details: { reasoning_tokens: usage.reasoning },
  };
}
