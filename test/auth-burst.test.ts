import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_CONFIG_FILE } from "../src/config/load-config.js";
import { mintApiKey, OPERATOR_TOKEN_PREFIX } from "../src/keys/api-key.js";
import { startTestGateway } from "./support/gateway-harness.js";
import { runCli } from "./support/run-cli.js";
import {
  deleteRedisKeys,
  dropSchema,
  REDIS_URL,
  SHARED_SECRET,
  schemaUrl,
  startReplica,
  uniqueName,
} from "./support/scale-rig.js";

/**
 * A burst of guesses from one address, all sent at once: each passed the throttle's check
 * before any had failed, so with the store's look-ups asynchronous (PostgreSQL) a thousand
 * guesses got a thousand answers where the throttle allows 20. Every look-up of a key the
 * cache does not know is now counted as a failure before it starts.
 */

const LIMIT = 5;
const CONFIG = { ...(DEFAULT_CONFIG_FILE as object), limits: { auth_failures_per_minute: LIMIT } };

/** Sends `count` guesses at once; returns how many were answered 401 (looked up) and 429 (throttled). */
async function burst(url: string, count: number, guess: () => string, path: string) {
  const statuses = await Promise.all(
    Array.from({ length: count }, async () => {
      const response = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${guess()}` } });
      await response.arrayBuffer();
      return response.status;
    }),
  );
  return {
    refused: statuses.filter((status) => status === 401).length,
    throttled: statuses.filter((status) => status === 429).length,
    other: statuses.filter((status) => status !== 401 && status !== 429),
  };
}

describe("a burst of guessed keys and operator tokens", () => {
  const schemas: string[] = [];
  const prefixes: string[] = [];
  afterAll(async () => {
    for (const schema of schemas) await dropSchema(schema);
    for (const prefix of prefixes) await deleteRedisKeys(prefix);
  });

  /** A gateway on SQLite, on its own PostgreSQL schema, or on one with its own Redis prefix too; and its environment. */
  async function startIn(mode: string) {
    const schema = uniqueName("burst");
    const prefix = `${uniqueName("burst")}:`;
    const env: Record<string, string> =
      mode === "sqlite"
        ? {}
        : {
            LETHE_DATABASE_URL: schemaUrl(schema),
            ...(mode === "redis" && { LETHE_REDIS_URL: REDIS_URL, LETHE_REDIS_PREFIX: prefix }),
          };
    if (mode !== "sqlite") schemas.push(schema);
    if (mode === "redis") prefixes.push(prefix);
    const gateway = mode === "sqlite" ? await startTestGateway({ config: CONFIG }) : await startReplica(CONFIG, env);
    // until its connection is up, a replica counts in its own memory (documented), which is not what these measure
    const redis = gateway.running.gateway.redis;
    for (let turn = 0; turn < 200 && redis !== null && !redis.ready; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return { gateway, env };
  }

  it.each([
    ["SQLite", "sqlite"],
    ["PostgreSQL", "postgres"],
    ["PostgreSQL and Redis", "redis"],
  ])("gets no more answers than the throttle allows, on %s", async (_name, mode) => {
    const { gateway } = await startIn(mode);
    try {
      // well-formed guesses (their checksums hold): each one is looked up in the store
      const keys = await burst(gateway.url, 200, () => mintApiKey(), "/v1/models");
      expect(keys.other).toEqual([]);
      expect(keys.refused).toBeLessThanOrEqual(LIMIT);
      expect(keys.refused + keys.throttled).toBe(200);
      const tokens = await burst(gateway.url, 50, () => mintApiKey(OPERATOR_TOKEN_PREFIX), "/admin/v1/accounts");
      expect(tokens.other).toEqual([]);
      expect(tokens.refused).toBe(0);
      expect(tokens.throttled).toBe(50);
    } finally {
      await gateway.close();
    }
  });

  it.each([
    ["SQLite", "sqlite"],
    ["PostgreSQL", "postgres"],
    ["PostgreSQL and Redis", "redis"],
  ])(
    "serves a burst of one good key the cache lost, and of one operator token, without refusing any, on %s",
    async (_name, mode) => {
      const { gateway, env } = await startIn(mode);
      try {
        const { key } =
          "createKey" in gateway ? await gateway.createKey("bursty") : await gateway.key("bursty", { credits: 0 });
        const created = await runCli(["operators", "create", "ops-bursty"], {
          LETHE_DATA_DIR: gateway.dataDir,
          ...env,
          ...(mode !== "sqlite" && { LETHE_SECRET: SHARED_SECRET }),
        });
        const token = /token:\s+(\S+)/.exec(created.out)?.[1] ?? "";
        // ten times the allowance at once, twice: the second after an admin change emptied the key cache
        for (let round = 0; round < 2; round++) {
          gateway.running.gateway.authenticator.invalidate();
          const keys = await burst(gateway.url, 10 * LIMIT, () => key, "/v1/models");
          const tokens = await burst(gateway.url, 10 * LIMIT, () => token, "/admin/v1/accounts");
          expect({ keys, tokens }).toEqual({
            keys: { refused: 0, throttled: 0, other: Array(10 * LIMIT).fill(200) },
            tokens: { refused: 0, throttled: 0, other: Array(10 * LIMIT).fill(200) },
          });
        }
        // and the address's allowance is whole afterwards
        const guesses = await burst(gateway.url, LIMIT + 2, () => mintApiKey(), "/v1/models");
        expect(guesses).toEqual({ refused: LIMIT, throttled: 2, other: [] });
      } finally {
        await gateway.close();
      }
    },
  );

  it("gives the counted failure back when the key was good: good keys never use up an address's allowance", async () => {
    const gateway = await startTestGateway({ config: CONFIG });
    try {
      const keys = [];
      for (let index = 0; index < 3 * LIMIT; index++) keys.push(await gateway.createKey("many-keys"));
      // each key's first request is a look-up (counted in advance, then given back)
      for (const { key } of keys) {
        const response = await fetch(`${gateway.baseURL}/models`, { headers: { authorization: `Bearer ${key}` } });
        expect(response.status).toBe(200);
      }
      // the allowance is whole: LIMIT failures, then the throttle
      const guesses = await burst(gateway.url, LIMIT + 3, () => mintApiKey(), "/v1/models");
      expect(guesses).toEqual({ refused: LIMIT, throttled: 3, other: [] });
      // and an idle throttle again costs good keys nothing: the windows the look-ups opened were closed
    } finally {
      await gateway.close();
    }
  });
});
