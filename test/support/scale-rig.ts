import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { resolveConfig } from "../../src/config/load-config.js";
import { KeyHasher } from "../../src/keys/api-key.js";
import { issueKey } from "../../src/keys/issue-key.js";
import { type RunningGateway, startGateway } from "../../src/server/start-gateway.js";

/**
 * The scale-out tests' toolkit: the machine's real PostgreSQL and Redis (each test in
 * its own schema and key prefix), in-process replicas sharing them, a TCP proxy to cut
 * PostgreSQL without stopping it, a private redis-server to kill, and dumps of
 * everything Lethe wrote for the canary checks.
 */

/** The machine's PostgreSQL (trust auth); LETHE_TEST_POSTGRES_URL overrides it. */
export const POSTGRES_URL = process.env.LETHE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
/** The machine's Redis; LETHE_TEST_REDIS_URL overrides it. */
export const REDIS_URL = process.env.LETHE_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
/** The server secret every replica of a test shares, so a key hashes the same everywhere. */
export const SHARED_SECRET = "scale-test-secret-0123456789abcdef";

/** A fresh lowercase identifier, unique per call: a schema name or a Redis prefix. */
export function uniqueName(label: string): string {
  return `lethe_t_${label}_${randomBytes(5).toString("hex")}`;
}

/** LETHE_DATABASE_URL for `schema` on `base` (another host:port when going through a proxy). */
export function schemaUrl(schema: string, base = POSTGRES_URL): string {
  return `${base}?schema=${schema}`;
}

/** The base URL with its port replaced (to reach PostgreSQL through a proxy). */
export function withPort(base: string, port: number): string {
  const url = new URL(base);
  url.port = String(port);
  return url.toString();
}

/** Runs `work` with a plain pg client on the machine's PostgreSQL. */
export async function withPostgres<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Drops a test's schema and everything in it. */
export async function dropSchema(schema: string): Promise<void> {
  await withPostgres((client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
}

/** Rows of one query on a test's schema. */
export async function querySchema<Row extends Record<string, unknown>>(
  schema: string,
  text: string,
  values: unknown[] = [],
): Promise<Row[]> {
  return withPostgres(async (client) => {
    await client.query(`SET search_path TO ${schema}`);
    return (await client.query<Row>(text, values)).rows;
  });
}

/** Every table of a schema dumped as text (`SELECT *`, each row as JSON): what the canary check reads. */
export async function dumpSchema(schema: string): Promise<Record<string, string>> {
  return withPostgres(async (client) => {
    const tables = await client.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
      [schema],
    );
    const dump: Record<string, string> = {};
    for (const { table_name } of tables.rows) {
      // every column cast to text by PostgreSQL itself, so nothing is reformatted on the way
      const rows = await client.query<{ row: string }>(`SELECT t::text AS row FROM ${schema}.${table_name} t`);
      dump[`postgres:${schema}.${table_name}`] = rows.rows.map((row) => row.row).join("\n");
    }
    return dump;
  });
}

/** The names of a schema's tables. */
export async function schemaTables(schema: string): Promise<string[]> {
  const rows = await withPostgres((client) =>
    client.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
      [schema],
    ),
  );
  return rows.rows.map((row) => row.table_name);
}

/** Every key under `prefix` in a Redis, with its type and value as text: what the canary check reads. */
export async function dumpRedis(prefix: string, url = REDIS_URL): Promise<Record<string, string>> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const dump: Record<string, string> = {};
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
      cursor = next;
      for (const key of keys) {
        const type = await client.type(key);
        let value: unknown;
        if (type === "string") value = await client.get(key);
        else if (type === "hash") value = await client.hgetall(key);
        else if (type === "list") value = await client.lrange(key, 0, -1);
        else if (type === "set") value = await client.smembers(key);
        else if (type === "zset") value = await client.zrange(key, 0, -1, "WITHSCORES");
        else if (type === "stream") value = await client.xrange(key, "-", "+");
        else value = null;
        dump[`redis:${key}`] = `${type} ${JSON.stringify(value)}`;
      }
    } while (cursor !== "0");
    return dump;
  } finally {
    client.disconnect();
  }
}

/** Deletes every key under `prefix`. */
export async function deleteRedisKeys(prefix: string, url = REDIS_URL): Promise<void> {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A gateway replica running in this process, sharing its store and Redis with others. */
export interface Replica {
  url: string;
  running: RunningGateway;
  dataDir: string;
  logText(): string;
  /** Mints a key for an account (creating it with `credits` micro-units when it does not exist). */
  key(accountName: string, options?: { credits?: number; rpm?: number }): Promise<{ key: string; keyId: string }>;
  close(): Promise<void>;
}

/**
 * Starts a replica on its own data dir with `env` (LETHE_DATABASE_URL, LETHE_REDIS_URL…);
 * unlike startTestGateway it does not insist on a first-start key, since only the first
 * replica of a shared database creates one.
 */
export async function startReplica(config: unknown, env: Record<string, string>): Promise<Replica> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-scale-"));
  const resolved = resolveConfig(
    config,
    { LETHE_DATA_DIR: dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1", LETHE_SECRET: SHARED_SECRET, ...env },
    null,
  );
  const lines: string[] = [];
  const running = await startGateway(resolved, {
    logDestination: { write: (line: string) => void lines.push(line) },
    retention: false,
  }).catch(async (error: unknown) => {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  });
  const store = running.gateway.store;
  let closed = false;
  return {
    url: running.url,
    running,
    dataDir,
    logText: () => lines.join(""),
    async key(accountName, options = {}) {
      let account = await store.findAccountByName(accountName);
      if (account === undefined) {
        account = await store.createAccount({ name: accountName, rpm: options.rpm ?? null });
        if ((options.credits ?? 0) > 0) await store.ledger.credit(account.id, options.credits ?? 0, "top_up");
      }
      const { key, record } = await issueKey(store, new KeyHasher(SHARED_SECRET), account.id, null);
      return { key, keyId: record.id };
    },
    async close() {
      if (closed) return;
      closed = true;
      await running.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** POSTs a chat completion to a gateway; resolves with the status, the request id and the body text. */
export async function chat(
  url: string,
  key: string,
  body: Record<string, unknown>,
): Promise<{ status: number; requestId: string | null; text: string }> {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, requestId: response.headers.get("x-request-id"), text: await response.text() };
}

/** A TCP proxy in front of a server, which a test can cut (every connection dropped, new ones refused) and restore. */
export interface TcpProxy {
  port: number;
  cut(): Promise<void>;
  restore(): Promise<void>;
  /**
   * Stops forwarding with every connection left open: the server seems to stop answering.
   * With `existingOnly`, connections made afterwards still pass: a peer that vanished from
   * under the connections open at the time (a dropped firewall entry), not a dead server.
   */
  freeze(options?: { existingOnly?: boolean }): void;
  thaw(): void;
  close(): Promise<void>;
}

/** Starts a TCP proxy on a free loopback port forwarding to `targetHost:targetPort`. */
export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  const frozenPairs = new Set<[Socket, Socket]>();
  let frozen = false;
  const joined = new WeakSet<[Socket, Socket]>();
  const isJoined = (pair: [Socket, Socket]) => joined.has(pair) && !frozenPairs.has(pair);
  const join = (pair: [Socket, Socket]) => {
    const [client, upstream] = pair;
    client.pipe(upstream);
    upstream.pipe(client);
    joined.add(pair);
  };
  const listen = async (port: number): Promise<Server> => {
    const server = createServer((client) => {
      const upstream = createConnection(targetPort, targetHost);
      const pair: [Socket, Socket] = [client, upstream];
      pairs.add(pair);
      for (const socket of pair) socket.once("close", () => pairs.delete(pair));
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
      client.once("close", () => upstream.destroy());
      upstream.once("close", () => client.destroy());
      if (!frozen) join(pair);
    });
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    return server;
  };
  let server: Server | null = await listen(0);
  const port = (server.address() as { port: number }).port;
  const stop = async () => {
    const closing = server;
    server = null;
    for (const [client, upstream] of pairs) {
      client.destroy();
      upstream.destroy();
    }
    if (closing !== null) await new Promise<void>((resolve) => closing.close(() => resolve()));
  };
  return {
    port,
    cut: stop,
    async restore() {
      server ??= await listen(port);
    },
    freeze(options = {}) {
      if (options.existingOnly !== true) frozen = true;
      for (const pair of pairs) {
        const [client, upstream] = pair;
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        frozenPairs.add(pair);
      }
    },
    thaw() {
      frozen = false;
      for (const pair of pairs) if (frozenPairs.has(pair) || !isJoined(pair)) join(pair);
      frozenPairs.clear();
    },
    close: stop,
  };
}

/** A redis-server of the test's own, on a fixed free port, that it can kill and start again. */
export interface PrivateRedis {
  url: string;
  start(): Promise<void>;
  /** SIGKILLs the server (an outage, not a shutdown). */
  kill(): Promise<void>;
  /** SIGSTOPs the server: connections stay open, nothing answers (a frozen host, a partition dropping packets). */
  pause(): void;
  /** SIGCONTs a paused server. */
  resume(): void;
  /** Kills the server for good and removes its directory. */
  stop(): Promise<void>;
}

/** Finds a free loopback port (closed again at once, so the caller can bind it). */
export async function freePort(): Promise<number> {
  const probe = createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Starts a private redis-server keeping nothing on disk. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), "lethe-scale-redis-"));
  let child: ChildProcess | null = null;
  const start = async () => {
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
    const started = spawn("redis-server", args, { stdio: ["ignore", "pipe", "ignore"] });
    child = started;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      started.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("Ready to accept connections")) resolve();
      });
      started.once("error", reject);
      started.once("exit", () => reject(new Error("redis-server exited before it was ready")));
    });
  };
  const kill = async () => {
    const running = child;
    child = null;
    if (running === null || running.exitCode !== null) return;
    const exited = once(running, "exit");
    running.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    start,
    kill,
    pause: () => void (child as ChildProcess | null)?.kill("SIGSTOP"),
    resume: () => void (child as ChildProcess | null)?.kill("SIGCONT"),
    async stop() {
      (child as ChildProcess | null)?.kill("SIGCONT");
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Reads the samples of a Prometheus text exposition: name, labels and value of every line. */
export function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (match === null) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] as string] = pair[2] as string;
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}
