import { Redis } from "ioredis";

/** How long a command may wait for Redis's answer. */
const COMMAND_TIMEOUT_MS = 1_000;
const WATCHDOG_INTERVAL_MS = 1_000;

/**
 * Lethe's connection to Redis, shared by rate limits and the auth throttle (change
 * notices between replicas travel by PostgreSQL's NOTIFY). Every key Lethe writes starts
 * with `prefix`. Redis holds counters and hashes only, never content.
 */
export class RedisLink {
  readonly client: Redis;
  private readonly watchdog: NodeJS.Timeout;

  constructor(
    url: string,
    readonly prefix: string,
  ) {
    const options = { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false, connectTimeout: 2_000 };
    // a Redis that stops answering without closing the connection (a frozen host, a partition
    // that drops packets) would otherwise hold every command, and every request, for hours
    this.client = new Redis(url, { ...options, commandTimeout: COMMAND_TIMEOUT_MS });
    // ioredis reconnects by itself; without a listener an outage would crash the process
    this.client.on("error", () => {});
    this.watchdog = setInterval(() => this.checkAnswers(), WATCHDOG_INTERVAL_MS);
    this.watchdog.unref();
  }

  /**
   * A connection that is up but unanswered still reads as ready, and rate-limiter-flexible
   * would wait for each command's timeout: a ping that times out drops the connection, so
   * callers see Redis as away (and use their per-replica fallbacks at once) until it
   * answers again, and /readyz says so.
   */
  private checkAnswers(): void {
    if (this.client.status !== "ready") return;
    this.client.ping().catch(() => {
      if (this.client.status === "ready") this.client.disconnect(true);
    });
  }

  /** Whether commands can be sent now. */
  get ready(): boolean {
    return this.client.status === "ready";
  }

  async close(): Promise<void> {
    clearInterval(this.watchdog);
    this.client.disconnect();
  }
}
