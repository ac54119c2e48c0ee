import { Redis } from "ioredis";
import type { MatchSession } from "../pattern-matcher.js";
import type { SourceCount, StoreScanner } from "./store-scanner.js";

/** Keys asked for per SCAN, and members read per HSCAN/SSCAN/ZSCAN/LRANGE/XRANGE: memory stays bounded. */
const BATCH = 1_000;

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

/** The results of a pipeline, failing on the first command that failed. */
async function results<T>(pipeline: ReturnType<Redis["pipeline"]>): Promise<T[]> {
  const answers = (await pipeline.exec()) ?? [];
  return answers.map(([error, value]) => {
    if (error) throw error;
    return value as T;
  });
}

/** Feeds parts of a value to a session; returns their bytes. */
function feedParts(parts: readonly Buffer[], session: MatchSession): number {
  let bytes = 0;
  for (const part of parts) {
    bytes += part.length;
    session.feed(part);
  }
  return bytes;
}

/** Feeds the parts of a collection, read a batch at a time through a *SCAN-style cursor. */
async function feedCursor(
  read: (cursor: string) => Promise<[Buffer | string, Buffer[]]>,
  session: MatchSession,
): Promise<number> {
  let bytes = 0;
  let cursor = "0";
  do {
    const [next, parts] = await read(cursor);
    cursor = next.toString();
    bytes += feedParts(parts, session);
  } while (cursor !== "0");
  return bytes;
}

/** Feeds one collection key's value, whatever its type, in batches; returns the bytes fed. */
async function feedCollection(client: Redis, key: Buffer, type: string, session: MatchSession): Promise<number> {
  switch (type) {
    case "hash":
      return feedCursor((cursor) => client.hscanBuffer(key, cursor, "COUNT", BATCH), session);
    case "set":
      return feedCursor((cursor) => client.sscanBuffer(key, cursor, "COUNT", BATCH), session);
    case "zset":
      // ZSCAN answers members and their scores
      return feedCursor((cursor) => client.zscanBuffer(key, cursor, "COUNT", BATCH), session);
    case "list": {
      let bytes = 0;
      for (let start = 0; ; start += BATCH) {
        const parts = await client.lrangeBuffer(key, start, start + BATCH - 1);
        bytes += feedParts(parts, session);
        if (parts.length < BATCH) return bytes;
      }
    }
    case "stream": {
      let bytes = 0;
      let from = "-";
      for (;;) {
        const entries = await client.xrangeBuffer(key, from, "+", "COUNT", BATCH);
        for (const [id, fields] of entries) bytes += feedParts([id, ...fields], session);
        const last = entries.at(-1);
        if (entries.length < BATCH || last === undefined) return bytes;
        // exclusive range start: the next batch begins after the last id read
        from = `(${last[0].toString()}`;
      }
    }
    default:
      // "none": expired since the SCAN
      return 0;
  }
}

/**
 * Every Redis key under Lethe's prefix, and every value they hold, read a batch of keys
 * at a time (SCAN, then one MGET per batch, and TYPE for the keys that hold no string), so neither the key list
 * nor a large collection is ever held whole. `maxKeys` bounds the scan for tests: when
 * it stops there, it reports itself incomplete.
 */
export function redisStore(
  url: string,
  prefix: string,
  options: { maxKeys?: number; expectKeys?: boolean } = {},
): StoreScanner {
  const maxKeys = options.maxKeys ?? Number.POSITIVE_INFINITY;
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
    async scan(open): Promise<SourceCount> {
      const client = await connect(url);
      let sources = 0;
      let bytes = 0;
      try {
        let cursor = "0";
        do {
          if (sources >= maxKeys) return { sources, bytes, incomplete: `stopped after ${sources} keys` };
          const [next, keys] = await client.scanBuffer(cursor, "MATCH", prefixPattern(prefix), "COUNT", BATCH);
          cursor = next.toString();
          if (keys.length === 0) continue;
          // MGET answers nil for a key that holds no string: only those need their type asked
          const values = await client.mgetBuffer(...keys);
          const others = keys.filter((_, index) => values[index] === null);
          const typing = client.pipeline();
          for (const key of others) typing.type(key);
          const types = await results<string>(typing);
          for (const [index, key] of keys.entries()) {
            sources++;
            open().feed(key);
            const value = values[index];
            if (value !== null && value !== undefined) {
              bytes += value.length;
              open().feed(value);
            }
          }
          for (const [index, key] of others.entries()) {
            bytes += await feedCollection(client, key, types[index] as string, open());
          }
        } while (cursor !== "0");
      } finally {
        client.disconnect();
      }
      // a mistyped LETHE_REDIS_PREFIX searches nothing, and would read as a clean store
      if (sources === 0 && options.expectKeys === true) {
        return {
          sources,
          bytes,
          incomplete: `no key under ${prefix}, where the audit's own requests leave counters: is LETHE_REDIS_PREFIX the target's?`,
        };
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
      const [next, keys] = await client.scanBuffer(cursor, "MATCH", prefixPattern(prefix), "COUNT", BATCH);
      cursor = next.toString();
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}
