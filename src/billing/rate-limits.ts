import type { Redis } from "ioredis";
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { LetheError } from "../errors/lethe-error.js";
import type { AuthContext } from "../keys/authenticator.js";
import type { EventLog } from "../logging/event-log.js";

const WINDOW_SECONDS = 60;

/** One limit as the rate-limit headers report it. */
export interface LimitState {
  limit: number;
  remaining: number;
  resetMs: number;
}

/** Tokens held against TPM limits for one request, adjusted once its usage is known. */
export interface TokenHold {
  held: { limiter: RateLimiterAbstract; key: string }[];
  tokens: number;
}

function state(limit: number, result: RateLimiterRes): LimitState {
  return { limit, remaining: Math.max(0, result.remainingPoints), resetMs: Math.max(0, result.msBeforeNext) };
}

/** A 429 that knows the limit it hit, so the response can carry its headers. */
export class RateLimitedError extends LetheError {
  constructor(
    readonly limitKind: "requests" | "tokens",
    readonly limit: LimitState,
    what: string,
  ) {
    super("LETHE_RATE_LIMITED", `Rate limit reached for ${what} per minute; retry later.`, {
      retryAfterSeconds: Math.max(1, Math.ceil(limit.resetMs / 1000)),
    });
  }
}

/**
 * Requests-per-minute and tokens-per-minute limits per account and per key, counted
 * in memory, or in Redis when configured (then shared by every replica, with a
 * per-replica memory limiter taking over while Redis is unreachable).
 */
export class RateLimits {
  private readonly limiters = new Map<string, RateLimiterAbstract>();

  constructor(
    private readonly defaults: { rpm: number; tpm: number },
    private readonly log: EventLog,
    private readonly redis: { client: Redis; prefix: string } | null = null,
  ) {}

  /** One limiter per kind and size: rate-limiter-flexible limiters have a fixed number of points. */
  private limiter(kind: "rpm" | "tpm", points: number): RateLimiterAbstract {
    const name = `${kind}:${points}`;
    let limiter = this.limiters.get(name);
    if (limiter === undefined) {
      const memory = new RateLimiterMemory({ points, duration: WINDOW_SECONDS, keyPrefix: name });
      limiter =
        this.redis === null
          ? memory
          : new RateLimiterRedis({
              storeClient: this.redis.client,
              points,
              duration: WINDOW_SECONDS,
              keyPrefix: `${this.redis.prefix}rl:${name}`,
              insuranceLimiter: memory,
              rejectIfRedisNotReady: true,
            });
      this.limiters.set(name, limiter);
    }
    return limiter;
  }

  /** Counts `points` on a limiter; a 429 when over, and Redis trouble degrades to memory. */
  private async consume(kind: "rpm" | "tpm", points: number, key: string, amount: number, what: string) {
    const limiter = this.limiter(kind, points);
    try {
      return { limiter, result: await limiter.consume(key, amount) };
    } catch (thrown) {
      if (thrown instanceof RateLimiterRes) {
        throw new RateLimitedError(kind === "rpm" ? "requests" : "tokens", state(points, thrown), what);
      }
      this.log.event("rate_limit_degraded", { dependency: "redis" });
      return { limiter, result: new RateLimiterRes(points, 0, 0, false) };
    }
  }

  /** Counts one request against the account's and the key's RPM. */
  async admitRequest(auth: AuthContext): Promise<LimitState> {
    const points = auth.rpm ?? this.defaults.rpm;
    const account = await this.consume("rpm", points, `a:${auth.accountId}`, 1, "requests");
    let tightest = state(points, account.result);
    if (auth.keyRpm !== null) {
      const key = await this.consume("rpm", auth.keyRpm, `k:${auth.keyId}`, 1, "this key's requests");
      const keyState = state(auth.keyRpm, key.result);
      if (keyState.remaining < tightest.remaining) tightest = keyState;
    }
    return tightest;
  }

  /** Holds a request's estimated tokens against the account's and the key's TPM. */
  async reserveTokens(auth: AuthContext, tokens: number): Promise<{ hold: TokenHold; state: LimitState }> {
    const points = auth.tpm ?? this.defaults.tpm;
    const amount = Math.min(tokens, points);
    const account = await this.consume("tpm", points, `a:${auth.accountId}`, amount, "tokens");
    const hold: TokenHold = { held: [{ limiter: account.limiter, key: `a:${auth.accountId}` }], tokens: amount };
    let tightest = state(points, account.result);
    if (auth.keyTpm !== null) {
      const key = await this.consume(
        "tpm",
        auth.keyTpm,
        `k:${auth.keyId}`,
        Math.min(amount, auth.keyTpm),
        "this key's tokens",
      );
      hold.held.push({ limiter: key.limiter, key: `k:${auth.keyId}` });
      const keyState = state(auth.keyTpm, key.result);
      if (keyState.remaining < tightest.remaining) tightest = keyState;
    }
    return { hold, state: tightest };
  }

  /** Corrects the held tokens to what the request really used (never blocks the response). */
  settleTokens(hold: TokenHold, actualTokens: number): void {
    const difference = actualTokens - hold.tokens;
    if (difference === 0) return;
    for (const { limiter, key } of hold.held) {
      const change = difference > 0 ? limiter.penalty(key, difference) : limiter.reward(key, -difference);
      change.catch(() => this.log.event("rate_limit_degraded", { dependency: "redis" }));
    }
  }
}
