/**
 * Token counters of one request. `input` counts every input token, cached ones
 * included; `cachedInput` is the part read from a prompt cache. `output` includes
 * reasoning tokens; `reasoning` is that part.
 */
export interface TokenUsage {
  input: number;
  output: number;
  cachedInput: number;
  reasoning: number;
}

function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

function field(record: unknown, key: string): unknown {
  return typeof record === "object" && record !== null ? (record as Record<string, unknown>)[key] : undefined;
}

/** Reads OpenAI's `usage` object; null when the supplier sent none. */
export function fromOpenAIUsage(usage: unknown): TokenUsage | null {
  if (typeof usage !== "object" || usage === null) return null;
  return {
    input: count(field(usage, "prompt_tokens")),
    output: count(field(usage, "completion_tokens")),
    cachedInput: count(field(field(usage, "prompt_tokens_details"), "cached_tokens")),
    reasoning: count(field(field(usage, "completion_tokens_details"), "reasoning_tokens")),
  };
}
