import { createHmac, hkdfSync } from "node:crypto";
import type { Redis } from "ioredis";
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { LetheError } from "../errors/lethe-error.js";

const WINDOW_SECONDS = 60;

/**
 * Slows down key guessing: failed authentications are counted per client address,
 * and an address over the limit is refused before its key is even looked at. The
 * address is kept only as a keyed hash, and only for the throttle window.
 */
export class AuthThrottle {
  private readonly limiter: RateLimiterAbstract;
  private readonly subkey: Buffer;
  private readonly shared: boolean;
  /** When this process last saw a failed authentication; with none in the window, checks cost nothing. */
  private lastFailureAt = Number.NEGATIVE_INFINITY;

  constructor(
    serverSecret: string,
    private readonly failuresPerMinute: number,
    redis: { client: Redis; prefix: string } | null = null,
  ) {
    this.subkey = Buffer.from(hkdfSync("sha256", serverSecret, "lethe", "lethe/auth-throttle/v1", 32));
    this.shared = redis !== null;
    const memory = new RateLimiterMemory({ points: failuresPerMinute, duration: WINDOW_SECONDS, keyPrefix: "auth" });
    this.limiter =
      redis === null
        ? memory
        : new RateLimiterRedis({
            storeClient: redis.client,
            points: failuresPerMinute,
            duration: WINDOW_SECONDS,
            keyPrefix: `${redis.prefix}auth`,
            insuranceLimiter: memory,
          });
  }

  private addressKey(address: string): string {
    return createHmac("sha256", this.subkey).update(address).digest("base64url").slice(0, 22);
  }

  /**
   * Refuses an address that failed too often in the window. Synchronous (undefined) when
   * there is nothing to look up, which is every request of a process that saw no failure.
   */
  check(address: string): Promise<void> | undefined {
    // no failure here within the window: nobody can be over the limit (other replicas' failures
    // count too when Redis is shared, so then always look)
    if (!this.shared && Date.now() - this.lastFailureAt > WINDOW_SECONDS * 1000) return undefined;
    return this.lookUp(address);
  }

  private async lookUp(address: string): Promise<void> {
    const result = await this.limiter.get(this.addressKey(address)).catch(() => null);
    if (result !== null && result.consumedPoints >= this.failuresPerMinute) {
      throw new LetheError("LETHE_AUTH_THROTTLED", "Too many failed authentications from this address; retry later.", {
        retryAfterSeconds: Math.max(1, Math.ceil(result.msBeforeNext / 1000)),
      });
    }
  }

  /** Counts one failed authentication. */
  async recordFailure(address: string): Promise<void> {
    this.lastFailureAt = Date.now();
    await this.limiter.consume(this.addressKey(address)).catch((thrown: unknown) => {
      if (!(thrown instanceof RateLimiterRes)) return;
    });
  }
}
