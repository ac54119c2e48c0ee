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

/** Sets the caller's format's rate-limit headers of one kind (`requests` or `tokens`). */
export function setRateLimitHeaders(
  reply: FastifyReply,
  format: ClientFormat,
  kind: "requests" | "tokens",
  limit: LimitState,
): void {
  if (format === "openai") {
    reply.header(`x-ratelimit-limit-${kind}`, String(limit.limit));
    reply.header(`x-ratelimit-remaining-${kind}`, String(limit.remaining));
    reply.header(`x-ratelimit-reset-${kind}`, openAIDuration(limit.resetMs));
    return;
  }
  reply.header(`anthropic-ratelimit-${kind}-limit`, String(limit.limit));
  reply.header(`anthropic-ratelimit-${kind}-remaining`, String(limit.remaining));
  reply.header(`anthropic-ratelimit-${kind}-reset`, new Date(Date.now() + limit.resetMs).toISOString());
}
