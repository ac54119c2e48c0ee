import type { FastifyReply } from "fastify";
import type { ClientFormat } from "../metering/metadata-record.js";
import type { LimitState } from "./rate-limits.js";

/** OpenAI's duration style for reset headers: `20ms`, `1s`, `6m0s`. */
export function openAIDuration(ms: number): string {
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const seconds = Math.ceil(ms / 1000);
  const minutes = Math.floor(seconds / 60);
  return minutes === 0 ? `${seconds}s` : `${minutes}m${seconds % 60}s`;
}

/** Sets the caller's format's rate-limit headers for requests and, when known, tokens. */
export function setRateLimitHeaders(
  reply: FastifyReply,
  format: ClientFormat,
  requests: LimitState,
  tokens: LimitState | null,
): void {
  if (format === "openai") {
    reply.header("x-ratelimit-limit-requests", String(requests.limit));
    reply.header("x-ratelimit-remaining-requests", String(requests.remaining));
    reply.header("x-ratelimit-reset-requests", openAIDuration(requests.resetMs));
    if (tokens !== null) {
      reply.header("x-ratelimit-limit-tokens", String(tokens.limit));
      reply.header("x-ratelimit-remaining-tokens", String(tokens.remaining));
      reply.header("x-ratelimit-reset-tokens", openAIDuration(tokens.resetMs));
    }
    return;
  }
  const now = Date.now();
  reply.header("anthropic-ratelimit-requests-limit", String(requests.limit));
  reply.header("anthropic-ratelimit-requests-remaining", String(requests.remaining));
  reply.header("anthropic-ratelimit-requests-reset", new Date(now + requests.resetMs).toISOString());
  if (tokens !== null) {
    reply.header("anthropic-ratelimit-tokens-limit", String(tokens.limit));
    reply.header("anthropic-ratelimit-tokens-remaining", String(tokens.remaining));
    reply.header("anthropic-ratelimit-tokens-reset", new Date(now + tokens.resetMs).toISOString());
  }
}
