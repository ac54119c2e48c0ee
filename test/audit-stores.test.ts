import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { Canary } from "../src/audit/canaries.js";
import { CanaryRegistry } from "../src/audit/canary-registry.js";
import { dataDirStore, logFileStore, tempDirStore } from "../src/audit/stores/file-stores.js";
import { postgresStore } from "../src/audit/stores/postgres-store.js";
import { redisStore } from "../src/audit/stores/redis-store.js";
import type { SourceCount, StoreScanner } from "../src/audit/stores/store-scanner.js";

// the shared services of the test machine: only schemas named audfix_* and keys under audfix:
const DATABASE = "postgres://postgres@127.0.0.1:5432/test";
const REDIS = "redis://127.0.0.1:6379";

/** Scans one store for the given canaries: which were found, and what the scanner said. */
async function scanFor(scanner: StoreScanner, canaries: CanaryRegistry): Promise<{ found: number[] } & SourceCount> {
  expect(await scanner.unavailable()).toBeNull();
  const patterns = new Set<number>();
  const matcher = canaries.matcher();
  const count = await scanner.scan(() => matcher.session(patterns));
  return { ...count, found: [...canaries.canariesOf(patterns)].sort((a, b) => a - b) };
}

function minted(count: number): { registry: CanaryRegistry; canaries: Canary[] } {
  const registry = new CanaryRegistry();
  return { registry, canaries: Array.from({ length: count }, (_, index) => registry.mint(index)) };
}

describe("data dir scan", () => {
  it("inflates a gzip-compressed file and finds a canary inside", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "audfix-gzip-"));
    try {
      const { registry, canaries } = minted(2);
      await writeFile(path.join(dir, "rotated.log.1.gz"), gzipSync(Buffer.from(`{"body":"${canaries[1]?.text}"}`)));
      await writeFile(path.join(dir, "plain.txt"), "nothing here");
      const result = await scanFor(dataDirStore(dir), registry);
      expect(result.found).toEqual([1]);
      expect(result.incomplete).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("temp dir and log scans", () => {
  it("reads the audit user's own large temp file in full: another process's big file is no gap", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "audfix-temp-"));
    try {
      const since = Date.now();
      const { registry, canaries } = minted(1);
      // 70 MB (past the cap other users' files are read to), the canary at its end
      const big = Buffer.alloc(70 * 1024 * 1024, 0x20);
      const tail = Buffer.from((canaries[0] as Canary).text);
      await writeFile(path.join(dir, "big.bin"), Buffer.concat([big, tail]));
      const result = await scanFor(tempDirStore(dir, since, []), registry);
      expect(result.incomplete).toBeUndefined();
      expect(result.found).toEqual([0]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("does not take an empty file for the gateway's log", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "audfix-log-"));
    try {
      await writeFile(path.join(dir, "gateway.log"), "");
      const { registry } = minted(1);
      const result = await scanFor(logFileStore(path.join(dir, "gateway.log")), registry);
      expect(result.incomplete).toMatch(/empty/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Redis scan", () => {
  const prefix = `audfix:${randomBytes(4).toString("hex")}:`;
  let client: Redis;

  beforeAll(async () => {
    client = new Redis(REDIS);
  });

  afterAll(async () => {
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 10_000);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== "0");
    client.disconnect();
  });

  it("reads every key past the old 200,000-key stop, and large collections in batches", async () => {
    const { registry, canaries } = minted(6);
    const text = (index: number) => (canaries[index] as Canary).text;
    // well past where the old scan stopped (200,000 keys, give or take a SCAN batch)
    const keys = 205_000;
    for (let start = 0; start < keys; start += 10_000) {
      const length = Math.min(10_000, keys - start);
      const pairs = Array.from({ length }, (_, offset) => [`${prefix}k${start + offset}`, "v"]).flat();
      await client.mset(...pairs);
    }
    await client.mset(`${prefix}k${keys - 1}`, text(0), `${prefix}k${keys - 2}`, `x${text(1)}`);
    const many = Array.from({ length: 2_500 }, (_, index) => `m${index}`);
    await client.rpush(`${prefix}list`, ...many, text(2));
    await client.hset(`${prefix}hash`, Object.fromEntries([...many.map((m) => [m, m]), ["f", text(3)]]));
    await client.zadd(`${prefix}zset`, ...many.flatMap((m, index) => [index, m]), 9_999, text(4));
    await client.xadd(`${prefix}stream`, "*", "body", text(5));
    const result = await scanFor(redisStore(REDIS, prefix), registry);
    expect(result.sources).toBe(keys + 4);
    expect(result.incomplete).toBeUndefined();
    expect(result.found).toEqual([0, 1, 2, 3, 4, 5]);
  }, 30_000);

  it("says it is incomplete when it stops before the last key", async () => {
    await client.mset(`${prefix}a`, "1", `${prefix}b`, "2");
    const result = await scanFor(redisStore(REDIS, prefix, { maxKeys: 1 }), new CanaryRegistry());
    expect(result.incomplete).toMatch(/^stopped after \d+ keys$/);
  });
});

describe("PostgreSQL scan", () => {
  const schema = `audfix_${randomBytes(4).toString("hex")}`;
  let admin: pg.Client;

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: DATABASE });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    // what makes a schema a Lethe deployment's to the audit
    await admin.query(`CREATE TABLE ${schema}.lethe_migrations (name text)`);
  });

  afterAll(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
    vi.restoreAllMocks();
  });

  it("reads a table in bounded batches of rows, never the whole table at once", async () => {
    const { registry, canaries } = minted(1);
    await admin.query(`CREATE TABLE ${schema}.big (id int PRIMARY KEY, body text)`);
    await admin.query(`INSERT INTO ${schema}.big SELECT n, 'row ' || n FROM generate_series(1, 5000) n`);
    await admin.query(`UPDATE ${schema}.big SET body = $1 WHERE id = 4999`, [canaries[0]?.text]);
    // every answer the scanner's connection receives, counted in rows
    const answered: number[] = [];
    const query = pg.Client.prototype.query as (...args: unknown[]) => Promise<unknown>;
    const spy = vi.spyOn(pg.Client.prototype, "query").mockImplementation(async function (this: pg.Client, ...args) {
      const result = (await query.apply(this, args)) as { rows?: unknown[] } | undefined;
      if (this !== admin) answered.push(result?.rows?.length ?? 0);
      return result as never;
    });
    try {
      const result = await scanFor(postgresStore(`${DATABASE}?schema=${schema}`, { batchRows: 1_000 }), registry);
      expect(result.found).toEqual([0]);
      expect(result.bytes).toBeGreaterThan(5_000 * 10);
    } finally {
      spy.mockRestore();
    }
    expect(Math.max(...answered)).toBeLessThanOrEqual(1_000);
  });

  it("reads materialized views and the comments on the schema's objects", async () => {
    const { registry, canaries } = minted(3);
    const literal = (index: number) => admin.escapeLiteral((canaries[index] as Canary).text);
    await admin.query(`CREATE MATERIALIZED VIEW ${schema}.kept AS SELECT ${literal(0)}::text AS body`);
    await admin.query(`CREATE TABLE ${schema}.annotated (note text)`);
    await admin.query(`COMMENT ON TABLE ${schema}.annotated IS ${literal(1)}`);
    await admin.query(`COMMENT ON COLUMN ${schema}.annotated.note IS ${literal(2)}`);
    const result = await scanFor(postgresStore(`${DATABASE}?schema=${schema}`), registry);
    expect(result.found).toEqual([0, 1, 2]);
  });

  it("finds a canary stored as UTF-16 or base64 bytes in a bytea column, and reads rows whatever a column is called", async () => {
    const { registry, canaries } = minted(3);
    const text = (index: number) => (canaries[index] as Canary).text;
    await admin.query(`CREATE TABLE ${schema}.blobs (data bytea)`);
    await admin.query(`INSERT INTO ${schema}.blobs VALUES ($1), ($2)`, [
      Buffer.from(text(0), "utf16le"),
      Buffer.from(Buffer.from(text(1)).toString("base64")),
    ]);
    // a column named like the scan's own alias once stood for the whole row
    await admin.query(`CREATE TABLE ${schema}.aliased (lethe_audit_row text, body text)`);
    await admin.query(`INSERT INTO ${schema}.aliased VALUES ('x', $1)`, [text(2)]);
    const result = await scanFor(postgresStore(`${DATABASE}?schema=${schema}`), registry);
    expect(result.found).toEqual([0, 1, 2]);
  });

  it("does not vouch for a schema that holds no Lethe tables (a typo in ?schema=)", async () => {
    const scanner = postgresStore(`${DATABASE}?schema=${schema}_typo`);
    expect(await scanner.unavailable()).toMatch(/holds no Lethe tables/);
  });

  it("scans the role's current schema, where Lethe's tables land, when the URL names none", async () => {
    const { registry, canaries } = minted(1);
    await admin.query(`CREATE TABLE ${schema}.elsewhere (body text)`);
    await admin.query(`INSERT INTO ${schema}.elsewhere VALUES ($1)`, [canaries[0]?.text]);
    // a search_path that starts with another schema than public, as a role's or database's default may
    const url = `${DATABASE}?options=${encodeURIComponent(`-c search_path=${schema},public`)}`;
    const scanner = postgresStore(url);
    const result = await scanFor(scanner, registry);
    expect(result.found).toEqual([0]);
    expect(scanner.description).toContain(`schema ${schema} (the role's current_schema()`);
  });
});
