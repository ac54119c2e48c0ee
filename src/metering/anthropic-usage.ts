import { tokenCount as count, plausibleUsage, type TokenUsage } from "./token-usage.js";

/**
 * Reads Anthropic's `usage`. Anthropic's `input_tokens` excludes cache reads and
 * cache writes; Lethe's `input` counts them all, with `cachedInput` the reads. Null when
 * absent, or when a count is past what any model could reach (MAX_PLAUSIBLE_TOKENS).
 */
export function fromAnthropicUsage(usage: unknown): TokenUsage | null {
  if (typeof usage !== "object" || usage === null) return null;
  const record = usage as Record<string, unknown>;
  const cacheRead = count(record.cache_read_input_tokens);
  const cacheWrite = count(record.cache_creation_input_tokens);
  const details = record.output_tokens_details as Record<string, unknown> | null | undefined;
  return plausibleUsage({
    input: count(record.input_tokens) + cacheRead + cacheWrite,
    output: count(record.output_tokens),
    cachedInput: cacheRead,
    cacheWrite,
    reasoning: count(details?.thinking_tokens),
  });
}

/**
 * Anthropic's `usage` object for Lethe's counters (the reverse of fromAnthropicUsage);
 * reasoning, when there was any, as Anthropic's `output_tokens_details.thinking_tokens`.
 */
export function toAnthropicUsage(usage: TokenUsage): Record<string, unknown> {
  const anthropic: Record<string, unknown> = {
    input_tokens: Math.max(0, usage.input - usage.cachedInput - usage.cacheWrite),
    output_tokens: usage.output,
    cache_read_input_tokens: usage.cachedInput,
    cache_creation_input_tokens: usage.cacheWrite,
  };
  if (usage.reasoning > 0) anthropic.output_tokens_details = { thinking_tokens: usage.reasoning };
  return anthropic;
}
