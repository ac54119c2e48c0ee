import { Redis } from "ioredis";
import type { MatchSession } from "../pattern-matcher.js";
import type { StoreScanner } from "./store-scanner.js";

const MAX_KEYS = 200_000;

/** Where a Redis URL points, without its password. */
function shown(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || "6379"}`;
  } catch {
    return "the configured Redis";
  }
}

/** A short-lived client that fails fast instead of retrying: the audit reports, it does not wait. */
async function connect(url: string): Promise<Redis> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2_000,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  // connection errors surface through connect(); without a listener ioredis would print them
  client.on("error", () => {});
  try {
    await client.connect();
    return client;
  } catch (thrown) {
    client.disconnect();
    throw thrown;
  }
}

/** A SCAN pattern matching every key that starts with `prefix` (glob characters escaped). */
function prefixPattern(prefix: string): string {
  return `${prefix.replace(/[*?[\]\\]/g, (character) => `\\${character}`)}*`;
}

/** Feeds one key's value, whatever its type, to a session; returns the bytes fed. */
async function feedValue(client: Redis, key: string, session: MatchSession): Promise<number> {
  let parts: Buffer[] = [];
  switch (await client.type(key)) {
    case "string":
      parts = [(await client.getBuffer(key)) ?? Buffer.alloc(0)];
      break;
    case "hash":
      parts = Object.entries(await client.hgetallBuffer(key)).flatMap(([field, value]) => [Buffer.from(field), value]);
      break;
    case "list":
      parts = await client.lrangeBuffer(key, 0, -1);
      break;
    case "set":
      parts = await client.smembersBuffer(key);
      break;
    case "zset":
      parts = await client.zrangeBuffer(key, 0, -1, "WITHSCORES");
      break;
    case "stream":
      parts = [Buffer.from(JSON.stringify(await client.xrange(key, "-", "+")))];
      break;
  }
  let bytes = 0;
  for (const part of parts) {
    bytes += part.length;
    session.feed(part);
  }
  return bytes;
}

/** Every Redis key under Lethe's prefix, and every value they hold. */
export function redisStore(url: string, prefix: string): StoreScanner {
  return {
    store: "redis",
    description: `every Redis key and value under ${prefix} at ${shown(url)}`,
    async unavailable() {
      try {
        (await connect(url)).disconnect();
        return null;
      } catch {
        return `cannot reach Redis at ${shown(url)}`;
      }
    },
    async scan(open) {
      const client = await connect(url);
      let sources = 0;
      let bytes = 0;
      try {
        let cursor = "0";
        do {
          const [next, keys] = await client.scan(cursor, "MATCH", prefixPattern(prefix), "COUNT", 1_000);
          cursor = next;
          for (const key of keys) {
            sources++;
            open().feed(Buffer.from(key));
            bytes += await feedValue(client, key, open());
          }
        } while (cursor !== "0" && sources < MAX_KEYS);
      } finally {
        client.disconnect();
      }
      return { sources, bytes };
    },
  };
}

/** Deletes every key under `prefix`: the embedded audit's own keys, once scanned. */
export async function deleteRedisKeys(url: string, prefix: string): Promise<void> {
  const client = await connect(url);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", prefixPattern(prefix), "COUNT", 1_000);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}
