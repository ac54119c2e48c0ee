import type { ResponseHeaders } from "../http/response-headers.js";
import type { ClientFormat } from "../metering/metadata-record.js";
import type { LimitState } from "./rate-limits.js";

/** OpenAI's duration style for reset headers: `20ms`, `1s`, `6m0s`. */
export function openAIDuration(ms: number): string {
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const seconds = Math.ceil(ms / 1000);
  const minutes = Math.floor(seconds / 60);
  return minutes === 0 ? `${seconds}s` : `${minutes}m${seconds % 60}s`;
}

let lastResetSecond = Number.NaN;
let lastResetText = "";

/**
 * Anthropic's reset time: RFC 3339 to the second (as Anthropic sends it), rounded up so
 * it never comes before the real reset. Every request in the same second shares one
 * formatted string: formatting a Date costs more than the rest of the header.
 */
export function anthropicResetTime(nowMs: number, resetMs: number): string {
  const second = Math.ceil((nowMs + resetMs) / 1000);
  if (second !== lastResetSecond) {
    lastResetSecond = second;
    lastResetText = `${new Date(second * 1000).toISOString().slice(0, 19)}Z`;
  }
  return lastResetText;
}

/** Header names per format and kind, built once: they are set on every request. */
const OPENAI_NAMES = {
  requests: ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
  tokens: ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"],
} as const;
const ANTHROPIC_NAMES = {
  requests: [
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
  ],
  tokens: [
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
  ],
} as const;

/** Adds the caller's format's rate-limit headers of one kind (`requests` or `tokens`) to `headers`. */
export function addRateLimitHeaders(
  headers: ResponseHeaders,
  format: ClientFormat,
  kind: "requests" | "tokens",
  limit: LimitState,
): void {
  if (format === "openai") {
    const [limitName, remainingName, resetName] = OPENAI_NAMES[kind];
    headers.push(limitName, limit.limit, remainingName, limit.remaining, resetName, openAIDuration(limit.resetMs));
    return;
  }
  const [limitName, remainingName, resetName] = ANTHROPIC_NAMES[kind];
  headers.push(
    limitName,
    limit.limit,
    remainingName,
    limit.remaining,
    resetName,
    anthropicResetTime(Date.now(), limit.resetMs),
  );
}
