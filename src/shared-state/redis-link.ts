import { Redis } from "ioredis";

/**
 * Lethe's connection to Redis, shared by rate limits, the auth throttle and the change
 * channel. Every key Lethe writes starts with `prefix`. Redis holds counters and
 * hashes only, never content.
 */
export class RedisLink {
  readonly client: Redis;
  private readonly subscriber: Redis;
  private changes = 0;
  private readonly channel: string;

  constructor(
    url: string,
    readonly prefix: string,
  ) {
    const options = { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false, connectTimeout: 2_000 };
    this.client = new Redis(url, options);
    this.subscriber = new Redis(url, { ...options, enableOfflineQueue: true, maxRetriesPerRequest: null });
    // ioredis reconnects by itself; without a listener an outage would crash the process
    this.client.on("error", () => {});
    this.subscriber.on("error", () => {});
    this.channel = `${prefix}changes`;
    this.subscriber.on("message", () => {
      this.changes++;
    });
    this.subscriber.on("ready", () => {
      this.changes++;
      void this.subscriber.subscribe(this.channel).catch(() => {});
    });
  }

  /** Whether commands can be sent now. */
  get ready(): boolean {
    return this.client.status === "ready";
  }

  /** Moves whenever another replica announced a change, and on every read while Redis is away. */
  counter(): number {
    if (this.subscriber.status !== "ready") this.changes++;
    return this.changes;
  }

  /** Tells every replica that keys, limits or balances changed. */
  async announce(): Promise<void> {
    if (!this.ready) return;
    await this.client.publish(this.channel, "1").catch(() => {});
  }

  async close(): Promise<void> {
    this.client.disconnect();
    this.subscriber.disconnect();
  }
}
