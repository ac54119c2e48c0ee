import { createHmac, hkdfSync } from "node:crypto";
import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { LetheError } from "../errors/lethe-error.js";

const WINDOW_MS = 60_000;

/** Ended windows are swept at most this often, however many addresses failed at different times. */
const SWEEP_EVERY_MS = 1_000;

/** Failures of one address in its fixed window, and when that window ends (epoch milliseconds). */
interface FailureWindow {
  failures: number;
  endsAt: number;
}

/**
 * Slows down key guessing: failed authentications are counted per client address,
 * and an address over the limit is refused before its key is even looked at. The
 * address is kept only as a keyed hash, and only for the throttle window.
 *
 * In memory the windows are this process's own and every answer is synchronous. A
 * request checks the address only when some address failed in a window still open,
 * and the address's hash is computed once per connection: a scanner's failures do
 * not put every other caller's requests through an HMAC and a promise for a minute.
 */
export class AuthThrottle {
  private readonly subkey: Buffer;
  private readonly shared: RateLimiterRedis | null;
  private readonly windows = new Map<string, FailureWindow>();
  private nextSweepAt = Number.POSITIVE_INFINITY;
  /** The hashed address of each live connection; the socket already holds the address itself. */
  private readonly connectionKeys = new WeakMap<object, string>();

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

  /**
   * Refuses an address that failed too often in the window: undefined when it may go on,
   * a rejected promise when it may not. With Redis, other replicas' failures count too,
   * so every check asks Redis.
   */
  check(address: string, connection?: object): Promise<void> | undefined {
    if (this.shared !== null) return this.lookUpShared(this.addressKey(address, connection));
    if (this.windows.size === 0) return undefined;
    const now = Date.now();
    if (now >= this.nextSweepAt) this.sweep(now);
    if (this.windows.size === 0) return undefined;
    const window = this.windows.get(this.addressKey(address, connection));
    if (window === undefined || window.endsAt <= now || window.failures < this.failuresPerMinute) return undefined;
    return Promise.reject(throttled(window.endsAt - now));
  }

  /** Counts one failed authentication. */
  async recordFailure(address: string, connection?: object): Promise<void> {
    const key = this.addressKey(address, connection);
    if (this.shared !== null) {
      await this.shared.consume(key).catch((thrown: unknown) => {
        if (!(thrown instanceof RateLimiterRes)) return;
      });
      return;
    }
    const now = Date.now();
    let window = this.windows.get(key);
    if (window === undefined || window.endsAt <= now) {
      window = { failures: 0, endsAt: now + WINDOW_MS };
      this.windows.set(key, window);
      this.nextSweepAt = Math.min(this.nextSweepAt, window.endsAt);
    }
    window.failures++;
  }

  private async lookUpShared(key: string): Promise<void> {
    const result = await this.shared?.get(key).catch(() => null);
    if (result != null && result.consumedPoints >= this.failuresPerMinute) throw throttled(result.msBeforeNext);
  }

  private addressKey(address: string, connection: object | undefined): string {
    if (connection === undefined) return this.hash(address);
    let key = this.connectionKeys.get(connection);
    if (key === undefined) {
      key = this.hash(address);
      this.connectionKeys.set(connection, key);
    }
    return key;
  }

  private hash(address: string): string {
    return createHmac("sha256", this.subkey).update(address).digest("base64url").slice(0, 22);
  }

  /** Drops ended windows; the next sweep is due when the earliest open one ends. */
  private sweep(now: number): void {
    let earliest = Number.POSITIVE_INFINITY;
    for (const [key, window] of this.windows) {
      if (window.endsAt <= now) this.windows.delete(key);
      else earliest = Math.min(earliest, window.endsAt);
    }
    this.nextSweepAt = Math.max(earliest, now + SWEEP_EVERY_MS);
  }
}

function throttled(msLeft: number): LetheError {
  return new LetheError("LETHE_AUTH_THROTTLED", "Too many failed authentications from this address; retry later.", {
    retryAfterSeconds: Math.max(1, Math.ceil(msLeft / 1000)),
  });
}
