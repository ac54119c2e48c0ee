import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterRes } from "rate-limiter-flexible";
import { LetheError } from "../errors/lethe-error.js";
import type { AuthContext } from "../keys/authenticator.js";
import { after, type MaybePromise } from "../lang/maybe-promise.js";
import type { EventLog } from "../logging/event-log.js";
import { FixedWindows, type WindowCount } from "./fixed-windows.js";

const WINDOW_MS = 60_000;

/** One limit as the rate-limit headers report it. */
export interface LimitState {
  limit: number;
  remaining: number;
  resetMs: number;
}

type Kind = "rpm" | "tpm";
type Scope = "account" | "key";

/** Where the windows live: this process's memory, or Redis when replicas share them. */
interface LimitCounters {
  /** Adds `amount` to the id's window (opening a new one when the last ended); never refuses. */
  add(kind: Kind, scope: Scope, id: string, amount: number): MaybePromise<WindowCount>;
  /** Takes `amount` off the id's current window; never rejects. */
  subtract(kind: Kind, scope: Scope, id: string, amount: number): MaybePromise<void>;
}

/**
 * Tokens held against TPM limits for one request, corrected once its usage is known. Each
 * hold remembers when its window ends: tokens held in a window that has since ended
 * expired with it, and are not given back to the next one.
 */
export interface TokenHold {
  accountId: string;
  accountTokens: number;
  accountWindowEndsAt: number;
  keyId: string | null;
  keyTokens: number;
  keyWindowEndsAt: number;
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

function state(limit: number, count: WindowCount, now: number): LimitState {
  return { limit, remaining: Math.max(0, limit - count.consumed), resetMs: Math.max(0, count.endsAt - now) };
}

/**
 * Requests-per-minute and tokens-per-minute limits per account and per key, in fixed
 * one-minute windows, counted in memory, or in Redis when configured (then shared by
 * every replica, with a per-replica memory limiter taking over while Redis is away).
 * In memory every answer is synchronous: no promise on the request path.
 */
export class RateLimits {
  private readonly counters: LimitCounters;

  constructor(
    private readonly defaults: { rpm: number; tpm: number },
    log: EventLog,
    redis: { client: Redis; prefix: string } | null = null,
  ) {
    this.counters = redis === null ? new MemoryCounters() : new RedisCounters(redis, log);
  }

  /**
   * Counts `amount` on the id's window; over `points` it is given back (a refused request
   * holds nothing, or its tokens would crowd out requests that fit) and refused with a 429.
   */
  private take(kind: Kind, scope: Scope, id: string, points: number, amount: number): MaybePromise<LimitState> {
    const counted = this.counters.add(kind, scope, id, amount);
    if (counted instanceof Promise) return counted.then((count) => this.judge(kind, scope, id, points, amount, count));
    return this.judge(kind, scope, id, points, amount, counted);
  }

  private judge(
    kind: Kind,
    scope: Scope,
    id: string,
    points: number,
    amount: number,
    count: WindowCount,
  ): MaybePromise<LimitState> {
    const now = Date.now();
    if (count.consumed <= points) return state(points, count, now);
    const left = state(points, { consumed: count.consumed - amount, endsAt: count.endsAt }, now);
    const refused = new RateLimitedError(kind === "rpm" ? "requests" : "tokens", left, refusedWhat(kind, scope));
    return after(this.counters.subtract(kind, scope, id, amount), () => {
      throw refused;
    });
  }

  /**
   * Counts under the key's own limit once its account's counted `accountAmount`: a refusal
   * by the key's limit gives the account that back, so its other keys do not pay for it.
   */
  private takeForKey(
    kind: Kind,
    auth: AuthContext,
    points: number,
    amount: number,
    accountAmount: number,
  ): MaybePromise<LimitState> {
    const giveBack = (refused: unknown) =>
      after(this.counters.subtract(kind, "account", auth.accountId, accountAmount), () => {
        throw refused;
      });
    let counted: MaybePromise<LimitState>;
    try {
      counted = this.take(kind, "key", auth.keyId, points, amount);
    } catch (refused) {
      return giveBack(refused);
    }
    return counted instanceof Promise ? counted.catch(giveBack) : counted;
  }

  /** Counts one request against the account's and the key's RPM. */
  admitRequest(auth: AuthContext): MaybePromise<LimitState> {
    const points = auth.rpm ?? this.defaults.rpm;
    return after(this.take("rpm", "account", auth.accountId, points, 1), (account) => {
      if (auth.keyRpm === null) return account;
      return after(this.takeForKey("rpm", auth, auth.keyRpm, 1, 1), (key) => tighter(account, key));
    });
  }

  /**
   * Holds a request's estimated tokens against the account's and the key's TPM. An estimate
   * above a limit holds the whole limit (the estimate counts the body's bytes and a default
   * output allowance, both generous), but a request whose own `max_tokens` (`asked`) is over
   * the limit could never be served within it: refused, as OpenAI refuses a request too large.
   */
  reserveTokens(auth: AuthContext, tokens: number, asked = 0): MaybePromise<{ hold: TokenHold; state: LimitState }> {
    const points = auth.tpm ?? this.defaults.tpm;
    if (asked > points || (auth.keyTpm !== null && asked > auth.keyTpm)) throw requestTooLarge();
    const amount = Math.min(tokens, points);
    return after(this.take("tpm", "account", auth.accountId, points, amount), (account) => {
      const hold: TokenHold = {
        accountId: auth.accountId,
        accountTokens: amount,
        accountWindowEndsAt: Date.now() + account.resetMs,
        keyId: null,
        keyTokens: 0,
        keyWindowEndsAt: 0,
      };
      if (auth.keyTpm === null) return { hold, state: account };
      const keyAmount = Math.min(amount, auth.keyTpm);
      return after(this.takeForKey("tpm", auth, auth.keyTpm, keyAmount, amount), (key) => {
        hold.keyId = auth.keyId;
        hold.keyTokens = keyAmount;
        hold.keyWindowEndsAt = Date.now() + key.resetMs;
        return { hold, state: tighter(account, key) };
      });
    });
  }

  /**
   * Corrects the held tokens to what the request really used. The response never waits
   * for it; the result (a promise only with Redis, which never rejects) tells tests when
   * the correction is stored.
   */
  settleTokens(hold: TokenHold, actualTokens: number): MaybePromise<void> {
    const now = Date.now();
    const account = this.correct(
      "account",
      hold.accountId,
      actualTokens - hold.accountTokens,
      hold.accountWindowEndsAt,
      now,
    );
    if (hold.keyId === null) return account;
    const key = this.correct("key", hold.keyId, actualTokens - hold.keyTokens, hold.keyWindowEndsAt, now);
    if (account instanceof Promise || key instanceof Promise) return Promise.all([account, key]).then(noop);
    return undefined;
  }

  private correct(scope: Scope, id: string, difference: number, windowEndsAt: number, now: number): MaybePromise<void> {
    // tokens held in a window that has since ended expired with it: there is nothing to give back
    if (difference === 0 || (difference < 0 && now >= windowEndsAt)) return undefined;
    if (difference < 0) return this.counters.subtract("tpm", scope, id, -difference);
    return after(this.counters.add("tpm", scope, id, difference), noop);
  }
}

function tighter(account: LimitState, key: LimitState): LimitState {
  return key.remaining < account.remaining ? key : account;
}

function requestTooLarge(): LetheError {
  return new LetheError(
    "LETHE_RATE_LIMITED",
    "This request's max_tokens is above the tokens-per-minute limit: it can never be served within it.",
    { param: "max_tokens", hopeless: true },
  );
}

function refusedWhat(kind: Kind, scope: Scope): string {
  const what = kind === "rpm" ? "requests" : "tokens";
  return scope === "account" ? what : `this key's ${what}`;
}

function noop(): void {}

/** Fixed windows in this process's memory, one set per limit and scope: no promise made. */
class MemoryCounters implements LimitCounters {
  private readonly windows: Record<Kind, Record<Scope, FixedWindows>> = {
    rpm: { account: new FixedWindows(WINDOW_MS), key: new FixedWindows(WINDOW_MS) },
    tpm: { account: new FixedWindows(WINDOW_MS), key: new FixedWindows(WINDOW_MS) },
  };

  add(kind: Kind, scope: Scope, id: string, amount: number): WindowCount {
    return this.windows[kind][scope].add(id, amount);
  }

  subtract(kind: Kind, scope: Scope, id: string, amount: number): void {
    this.windows[kind][scope].subtract(id, amount);
  }
}

/**
 * Windows in Redis through rate-limiter-flexible, shared by every replica; while Redis is
 * unreachable its memory insurance limiter counts per replica, and the outage is logged
 * once rather than per request.
 */
class RedisCounters implements LimitCounters {
  private readonly limiters: Record<Kind, RateLimiterRedis>;
  private degraded = false;

  constructor(
    private readonly redis: { client: Redis; prefix: string },
    private readonly log: EventLog,
  ) {
    const limiter = (kind: Kind) =>
      new RateLimiterRedis({
        storeClient: redis.client,
        // refusals are decided by RateLimits against each caller's own limit: counts only here
        points: Number.MAX_SAFE_INTEGER,
        duration: WINDOW_MS / 1000,
        keyPrefix: `${redis.prefix}rl:${kind}`,
        insuranceLimiter: new RateLimiterMemory({
          points: Number.MAX_SAFE_INTEGER,
          duration: WINDOW_MS / 1000,
          keyPrefix: `rl:${kind}`,
        }),
        rejectIfRedisNotReady: true,
      });
    this.limiters = { rpm: limiter("rpm"), tpm: limiter("tpm") };
  }

  async add(kind: Kind, scope: Scope, id: string, amount: number): Promise<WindowCount> {
    this.watchRedis();
    try {
      const result: RateLimiterRes = await this.limiters[kind].penalty(redisKey(scope, id), amount);
      return { consumed: result.consumedPoints, endsAt: Date.now() + result.msBeforeNext };
    } catch {
      // neither Redis nor the insurance limiter answered: admit rather than refuse everyone
      this.log.event("rate_limit_degraded", { dependency: "redis" });
      return { consumed: 0, endsAt: Date.now() };
    }
  }

  /**
   * Gives tokens back to a window, never below zero and never to a window Redis no longer
   * has (a restart, an eviction, an expiry just passed): rate-limiter-flexible's `reward`
   * would create the key afresh at minus the amount, and the next minute would admit that
   * much beyond the limit.
   */
  async subtract(kind: Kind, scope: Scope, id: string, amount: number): Promise<void> {
    this.watchRedis();
    // while Redis is away the windows are the insurance limiter's, in memory: give back there
    const toInsurance = () => this.limiters[kind].reward(redisKey(scope, id), amount).then(noop, noop);
    if (this.degraded) return toInsurance();
    const key = `${this.redis.prefix}rl:${kind}:${redisKey(scope, id)}`;
    await this.redis.client.eval(GIVE_BACK, 1, key, amount).then(noop, toInsurance);
  }

  /** Warns when Redis goes away: the insurance limiter takes over silently, counting per replica. */
  private watchRedis(): void {
    const away = this.redis.client.status !== "ready";
    if (away && !this.degraded) this.log.event("rate_limit_degraded", { dependency: "redis" });
    this.degraded = away;
  }
}

/** Decrements a window's count by at most what it holds, and only if the window exists. */
const GIVE_BACK = `local count = tonumber(redis.call('get', KEYS[1]))
if count == nil then return nil end
local amount = math.min(tonumber(ARGV[1]), count)
if amount > 0 then return redis.call('decrby', KEYS[1], amount) end
return count`;

function redisKey(scope: Scope, id: string): string {
  return scope === "account" ? `a:${id}` : `k:${id}`;
}
