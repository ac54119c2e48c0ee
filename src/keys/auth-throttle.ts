import { createHmac, hkdfSync } from "node:crypto";
import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { FixedWindows } from "../billing/fixed-windows.js";
import { LetheError } from "../errors/lethe-error.js";

const WINDOW_MS = 60_000;
/**
 * Addresses whose failures are counted at once, in memory. Past it, a new address's
 * failures go uncounted until windows end: a client with many source addresses (an IPv6
 * /64, a trusted proxy's X-Forwarded-For) otherwise grew the map by each one for a minute,
 * 100,000 of them in 22 s. Guessing a key of 128 random bits gains nothing from the gap;
 * the throttle is there to spare the store the look-ups of a few noisy addresses.
 */
const MAX_COUNTED_ADDRESSES = 100_000;
/**
 * With Redis: how long a connection whose address Redis found under the limit skips asking
 * again, while this process sees no failed authentication at all. Any failure, on any
 * connection, ends every such pause: a guesser holding many connections primed with a
 * good key gets one unchecked guess per replica, not one per connection. A client with a
 * good key saves a Redis round trip per request.
 */
const SHARED_CLEAR_MS = 1_000;

/** The last address a live connection asked about: its hash, and until when (and as of which failure) Redis said it was clear. */
interface ConnectionAddress {
  address: string;
  key: string;
  clearUntil: number;
  /** The process's failure count when Redis said so: any failure since ends the pause. */
  clearAtFailure: number;
}

/**
 * Slows down key guessing: failed authentications are counted per client address,
 * and an address over the limit is refused before its key is even looked at. The
 * address is kept only as a keyed hash, and only for the throttle window.
 *
 * In memory the windows are this process's own and every answer is synchronous. A
 * request checks the address only when some address failed in a window still open
 * (`idle` tells callers when they need not even work the address out), and a
 * connection keeps the hash of the last address it asked about: a direct client's
 * is computed once per connection, and a proxy's connection recomputes it only when
 * the next request comes from another client. A scanner's failures do not put every
 * other caller's requests through an HMAC and a promise for a minute.
 */
export class AuthThrottle {
  private readonly subkey: Buffer;
  private readonly shared: RateLimiterRedis | null;
  /** Failures per hashed address (memory mode). */
  private readonly failures = new FixedWindows(WINDOW_MS);
  /** The last address each live connection asked about, and its hash. */
  private readonly connectionKeys = new WeakMap<object, ConnectionAddress>();
  /** Failed authentications this process has counted: moving it ends every pause. */
  private failuresSeen = 0;

  constructor(
    serverSecret: string,
    private readonly failuresPerMinute: number,
    redis: { client: Redis; prefix: string } | null = null,
  ) {
    this.subkey = Buffer.from(hkdfSync("sha256", serverSecret, "lethe", "lethe/auth-throttle/v1", 32));
    this.shared =
      redis === null
        ? null
        : new RateLimiterRedis({
            storeClient: redis.client,
            points: failuresPerMinute,
            duration: WINDOW_MS / 1000,
            keyPrefix: `${redis.prefix}auth`,
            // while Redis is away each replica counts for itself
            insuranceLimiter: new RateLimiterMemory({
              points: failuresPerMinute,
              duration: WINDOW_MS / 1000,
              keyPrefix: "auth",
            }),
          });
  }

  /** True when no check could refuse anyone: in memory, with no failure in an open window. */
  get idle(): boolean {
    return this.shared === null && this.failures.size === 0;
  }

  /**
   * Refuses an address that failed too often in the window: undefined when it may go on,
   * a rejected promise when it may not. With Redis, other replicas' failures count too,
   * so a check asks Redis, unless the connection's address was found clear within
   * SHARED_CLEAR_MS and this process has counted no failure since.
   */
  check(address: string, connection?: object): Promise<void> | undefined {
    const shared = this.shared;
    if (shared !== null) {
      const seen = connection === undefined ? undefined : this.connectionAddress(address, connection);
      if (seen !== undefined && seen.clearAtFailure === this.failuresSeen && seen.clearUntil > Date.now()) {
        return undefined;
      }
      return this.lookUpShared(shared, seen?.key ?? this.hash(address), seen);
    }
    if (this.failures.size === 0) return undefined;
    const refusal = this.refusalInMemory(this.addressKey(address, connection), Date.now());
    return refusal === null ? undefined : Promise.reject(refusal);
  }

  /** In memory: the refusal for an address key whose window has no failure left, else null. */
  private refusalInMemory(key: string, now: number): LetheError | null {
    const window = this.failures.current(key, now);
    return window === undefined || window.consumed < this.failuresPerMinute ? null : throttled(window.endsAt - now);
  }

  /**
   * Counts a failure in advance, before a key is looked up in the store: the look-ups of a
   * burst of guesses are all on their way before the first fails, and each passed `check`.
   * Refuses (throws, or rejects with Redis) when the address has none left; `release`
   * gives the failure back when the key was good.
   */
  reserve(address: string, connection?: object): Promise<void> | undefined {
    const key = this.addressKey(address, connection);
    const shared = this.shared;
    if (shared === null) {
      const now = Date.now();
      const refusal = this.refusalInMemory(key, now);
      if (refusal !== null) throw refusal;
      this.countFailure(key, now);
      return undefined;
    }
    return shared.consume(key).then(
      () => undefined,
      (refusal: unknown) => {
        // Redis and its insurance both failing lets the look-up go
        if (!(refusal instanceof RateLimiterRes)) return;
        // over the limit: the refusal counted a point all the same, which no failure earned
        shared.reward(key, 1).catch(() => {});
        throw throttled(refusal.msBeforeNext);
      },
    );
  }

  /** Counts a failure in memory, unless the address is new and MAX_COUNTED_ADDRESSES are counted already. */
  private countFailure(key: string, now: number): void {
    if (this.failures.size >= MAX_COUNTED_ADDRESSES && this.failures.current(key, now) === undefined) return;
    this.failures.add(key, 1, now);
  }

  /** Gives back a failure `reserve` counted: the key was good (or could not be checked). */
  release(address: string, connection?: object): void {
    const key = this.addressKey(address, connection);
    if (this.shared === null) this.failures.giveBack(key, 1);
    else this.shared.reward(key, 1).catch(() => {});
  }

  /** Counts one failed authentication; `reserved`: `reserve` counted it already. */
  async recordFailure(address: string, connection?: object, reserved = false): Promise<void> {
    const key = this.addressKey(address, connection);
    // every connection's next request asks Redis again
    this.failuresSeen++;
    if (reserved) return;
    if (this.shared === null) {
      this.countFailure(key, Date.now());
      return;
    }
    // over the limit consume rejects with the count, and with an error when neither Redis nor
    // the insurance limiter answered: either way there is nothing more to do
    await this.shared.consume(key).catch(() => {});
  }

  private async lookUpShared(
    shared: RateLimiterRedis,
    key: string,
    seen: ConnectionAddress | undefined,
  ): Promise<void> {
    const failuresBefore = this.failuresSeen;
    let answered = true;
    const result = await shared.get(key).catch(() => {
      answered = false;
      return null;
    });
    if (result !== null && result.consumedPoints >= this.failuresPerMinute) throw throttled(result.msBeforeNext);
    // no answer at all (Redis and the insurance limiter both failed) clears nothing: the next request asks again
    if (seen !== undefined && answered) {
      seen.clearUntil = Date.now() + SHARED_CLEAR_MS;
      // a failure counted while Redis answered is not in that answer
      seen.clearAtFailure = failuresBefore;
    }
  }

  private addressKey(address: string, connection: object | undefined): string {
    return connection === undefined ? this.hash(address) : this.connectionAddress(address, connection).key;
  }

  private connectionAddress(address: string, connection: object): ConnectionAddress {
    const cached = this.connectionKeys.get(connection);
    if (cached !== undefined && cached.address === address) return cached;
    const entry = { address, key: this.hash(address), clearUntil: 0, clearAtFailure: -1 };
    this.connectionKeys.set(connection, entry);
    return entry;
  }

  private hash(address: string): string {
    return createHmac("sha256", this.subkey).update(address).digest("base64url").slice(0, 22);
  }
}

function throttled(msLeft: number): LetheError {
  return new LetheError("LETHE_AUTH_THROTTLED", "Too many failed authentications from this address; retry later.", {
    retryAfterSeconds: Math.max(1, Math.ceil(msLeft / 1000)),
  });
}
