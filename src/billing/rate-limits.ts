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

/** What one limiter holds for a request: its tokens there, and when the window they count in ends. */
interface Held {
  limiter: RateLimiterAbstract;
  key: string;
  tokens: number;
  windowEndsAt: number;
}

/** Tokens held against TPM limits for one request, adjusted once its usage is known. */
export interface TokenHold {
  held: Held[];
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
  /** Limiters by size, per kind: looked up on every request, so by number rather than a built name. */
  private readonly limiters = {
    rpm: new Map<number, RateLimiterAbstract>(),
    tpm: new Map<number, RateLimiterAbstract>(),
  };
  /** Set while Redis is away, so the warning is logged once per outage rather than per request. */
  private degraded = false;

  constructor(
    private readonly defaults: { rpm: number; tpm: number },
    private readonly log: EventLog,
    private readonly redis: { client: Redis; prefix: string } | null = null,
  ) {}

  /** One limiter per kind and size: rate-limiter-flexible limiters have a fixed number of points. */
  private limiter(kind: "rpm" | "tpm", points: number): RateLimiterAbstract {
    let limiter = this.limiters[kind].get(points);
    if (limiter === undefined) {
      const name = `${kind}:${points}`;
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
      this.limiters[kind].set(points, limiter);
    }
    return limiter;
  }

  /**
   * Counts `amount` on a limiter; a 429 when over, and Redis trouble degrades to memory.
   * A refused count is given back: a refused request holds nothing, or its tokens would
   * crowd out requests that fit in what is really left.
   */
  private async consume(kind: "rpm" | "tpm", points: number, key: string, amount: number, what: string) {
    this.watchRedis();
    const limiter = this.limiter(kind, points);
    try {
      return { limiter, result: await limiter.consume(key, amount) };
    } catch (thrown) {
      if (thrown instanceof RateLimiterRes) {
        await this.giveBack(limiter, key, amount);
        const left = { limit: points, remaining: Math.max(0, points - (thrown.consumedPoints - amount)) };
        throw new RateLimitedError(
          kind === "rpm" ? "requests" : "tokens",
          { ...left, resetMs: Math.max(0, thrown.msBeforeNext) },
          what,
        );
      }
      this.log.event("rate_limit_degraded", { dependency: "redis" });
      return { limiter, result: new RateLimiterRes(points, 0, 0, false) };
    }
  }

  /** Warns when Redis goes away: the insurance limiter takes over silently, counting per replica. */
  private watchRedis(): void {
    if (this.redis === null) return;
    const away = this.redis.client.status !== "ready";
    if (away && !this.degraded) this.log.event("rate_limit_degraded", { dependency: "redis" });
    this.degraded = away;
  }

  private async giveBack(limiter: RateLimiterAbstract, key: string, amount: number): Promise<void> {
    await limiter.reward(key, amount).catch(() => this.log.event("rate_limit_degraded", { dependency: "redis" }));
  }

  /** Counts one request against the account's and the key's RPM. */
  async admitRequest(auth: AuthContext): Promise<LimitState> {
    const points = auth.rpm ?? this.defaults.rpm;
    const account = await this.consume("rpm", points, `a:${auth.accountId}`, 1, "requests");
    let tightest = state(points, account.result);
    if (auth.keyRpm !== null) {
      let key: Awaited<ReturnType<RateLimits["consume"]>>;
      try {
        key = await this.consume("rpm", auth.keyRpm, `k:${auth.keyId}`, 1, "this key's requests");
      } catch (error) {
        // refused by the key's own limit: the account's other keys must not pay for it
        await this.giveBack(account.limiter, `a:${auth.accountId}`, 1);
        throw error;
      }
      const keyState = state(auth.keyRpm, key.result);
      if (keyState.remaining < tightest.remaining) tightest = keyState;
    }
    return tightest;
  }

  /** Holds a request's estimated tokens against the account's and the key's TPM. */
  async reserveTokens(auth: AuthContext, tokens: number): Promise<{ hold: TokenHold; state: LimitState }> {
    const points = auth.tpm ?? this.defaults.tpm;
    const amount = Math.min(tokens, points);
    const accountKey = `a:${auth.accountId}`;
    const account = await this.consume("tpm", points, accountKey, amount, "tokens");
    const now = Date.now();
    const hold: TokenHold = {
      held: [
        { limiter: account.limiter, key: accountKey, tokens: amount, windowEndsAt: now + account.result.msBeforeNext },
      ],
    };
    let tightest = state(points, account.result);
    if (auth.keyTpm !== null) {
      const keyAmount = Math.min(amount, auth.keyTpm);
      let key: Awaited<ReturnType<RateLimits["consume"]>>;
      try {
        key = await this.consume("tpm", auth.keyTpm, `k:${auth.keyId}`, keyAmount, "this key's tokens");
      } catch (error) {
        // refused by the key's own limit: nothing stays held against the account
        await this.giveBack(account.limiter, accountKey, amount);
        throw error;
      }
      hold.held.push({
        limiter: key.limiter,
        key: `k:${auth.keyId}`,
        tokens: keyAmount,
        windowEndsAt: now + key.result.msBeforeNext,
      });
      const keyState = state(auth.keyTpm, key.result);
      if (keyState.remaining < tightest.remaining) tightest = keyState;
    }
    return { hold, state: tightest };
  }

  /**
   * Corrects the held tokens to what the request really used. The response never waits
   * for it; the promise (which never rejects) tells tests when the correction is stored.
   */
  settleTokens(hold: TokenHold, actualTokens: number): Promise<void> {
    const now = Date.now();
    let changes: Promise<void> | null = null;
    for (const { limiter, key, tokens, windowEndsAt } of hold.held) {
      const difference = actualTokens - tokens;
      // tokens held in a window that has since ended expired with it: there is nothing to give back
      if (difference === 0 || (difference < 0 && now >= windowEndsAt)) continue;
      const change = (difference > 0 ? limiter.penalty(key, difference) : limiter.reward(key, -difference)).then(
        noop,
        this.logWriteFailure,
      );
      changes = changes === null ? change : Promise.all([changes, change]).then(noop);
    }
    return changes ?? Promise.resolve();
  }

  /** Logs a limiter write that failed (Redis away); bound once, not per request. */
  private readonly logWriteFailure = (): void => this.log.event("rate_limit_degraded", { dependency: "redis" });
}

function noop(): void {}
