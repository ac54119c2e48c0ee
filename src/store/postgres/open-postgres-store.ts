import type { Socket } from "node:net";
import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import { ConfigError } from "../../config/load-config.js";
import type { ChangeFeed, ChangeKind } from "../change-feed.js";
import { DatabaseSilence } from "../database-silence.js";
import { KyselyStore } from "../kysely-store.js";
import { LedgerStore } from "../ledger-store.js";
import { migrateToLatest } from "../migrations.js";
import type { Database } from "../schema.js";
import type { Store } from "../store.js";
import { postgresRollUpDay, UsageStore } from "../usage-store.js";
import { installHoldFunction, PostgresCreditHoldStore } from "./postgres-credit-holds.js";

const CHANNEL = "lethe_changes";

/**
 * The NOTIFY channel of a deployment: PostgreSQL's channels belong to the database, not to a
 * schema, so deployments in other schemas of the same database (tenants, tests) would
 * otherwise hear each other's changes and drop their caches for them. The default schema
 * keeps the plain name (a replica of an older version listens there). PostgreSQL cuts a
 * channel name at 63 characters, LISTEN and NOTIFY alike.
 */
function channelOf(schema: string | null): string {
  return schema === null || schema === "public" ? CHANNEL : `${CHANNEL}_${schema}`;
}
/**
 * How long a batch of ledger debits waits for an account row's lock: longer than any
 * credit hold keeps one (microseconds), shorter than the holds' own wait (3 s), so a row
 * locked by something else fails the batch before it stalls other accounts' holds.
 */
const LEDGER_LOCK_TIMEOUT_MS = 2_000;

// bigint and numeric come back as strings by default; every such column Lethe has fits a double
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (value) => Number(value));

/** Splits Lethe's `?schema=NAME` off a PostgreSQL URL (each test, or each tenant, gets its own schema). */
export function parseDatabaseUrl(url: string): { connectionString: string; schema: string | null } {
  const parsed = new URL(url);
  const schema = parsed.searchParams.get("schema");
  parsed.searchParams.delete("schema");
  if (schema !== null && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new Error("the schema in LETHE_DATABASE_URL must be a lowercase identifier");
  }
  return { connectionString: parsed.toString(), schema };
}

/**
 * Listens on a PostgreSQL channel so every replica learns of revocations, limit
 * changes and balance moves at once. While the listening connection is down, the
 * counter moves on every read, so callers fall back to checking the database.
 */
class PostgresChangeFeed implements ChangeFeed {
  private value = 0;
  private keysValue = 0;
  private listening = false;
  private client: pg.Client | null = null;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly pool: pg.Pool,
    private readonly channel: string,
  ) {}

  async start(): Promise<void> {
    const client = new pg.Client(this.config);
    client.on("notification", (message) => {
      this.value++;
      // a notice without a kind (an older replica's) may be about keys
      if (message.payload !== "balances") this.keysValue++;
    });
    client.on("error", () => this.lost());
    client.on("end", () => this.lost());
    try {
      await client.connect();
      await client.query(`LISTEN ${this.channel}`);
      this.client = client;
      this.listening = true;
      this.value++;
      this.keysValue++;
    } catch {
      this.lost();
    }
  }

  private lost(): void {
    this.listening = false;
    this.client?.removeAllListeners();
    this.client?.end().catch(() => {});
    this.client = null;
    if (this.closed || this.retry !== null) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.start();
    }, 1_000);
    this.retry.unref();
  }

  counter(): number {
    // not listening: every read is a new value, so caches are bypassed
    if (!this.listening) this.value++;
    return this.value;
  }

  keysCounter(): number {
    if (!this.listening) this.keysValue++;
    return this.keysValue;
  }

  /** The key change counter while the feed listens, else null (it moves on every read then). */
  heardKeys(): number | null {
    return this.listening ? this.keysValue : null;
  }

  async announce(kind: ChangeKind): Promise<void> {
    await this.pool.query(`NOTIFY ${this.channel}, '${kind}'`).catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry !== null) clearTimeout(this.retry);
    this.listening = false;
    const client = this.client;
    this.client = null;
    client?.removeAllListeners();
    await client?.end().catch(() => {});
  }
}

/** The socket under a pg client (pg keeps it as `connection.stream`). */
function socketOf(client: pg.PoolClient): Socket | undefined {
  return (client as unknown as { connection?: { stream?: Socket } }).connection?.stream;
}

/**
 * Bounds how long a checked-out connection may stay silent: past `timeoutMs` with nothing
 * received or sent, it is closed, the query on it fails, and the pool drops it. A peer
 * that vanished without a reset (a dropped firewall or load-balancer entry) otherwise
 * holds the query until the kernel gives up retransmitting, a quarter of an hour, and
 * with it the meter's and the ledger's only flush. Idle connections are not bounded: the
 * pool closes those itself.
 */
function boundSilence(pool: pg.Pool, timeoutMs: number): void {
  const watched = new WeakSet<Socket>();
  pool.on("acquire", (client) => {
    const socket = socketOf(client);
    if (socket === undefined) return;
    // one listener per connection: setTimeout with a callback would add one per query
    if (!watched.has(socket)) {
      watched.add(socket);
      socket.on("timeout", () => socket.destroy(new Error("the database connection stayed silent")));
    }
    socket.setTimeout(timeoutMs);
  });
  pool.on("release", (_error: Error | undefined, client: pg.PoolClient) => socketOf(client)?.setTimeout(0));
}

/** Opens the PostgreSQL store, creating its schema and running migrations (safe when replicas start together). */
export async function openPostgresStore(url: string, queryTimeoutMs = 60_000): Promise<Store> {
  try {
    return await connectPostgresStore(url, queryTimeoutMs);
  } catch (error) {
    // node-postgres's timeouts carry no code, and its message may name the host: the CLI
    // would print only "failed (Error)"
    const code = (error as { code?: unknown } | null)?.code;
    if (code === undefined && error instanceof Error && /timeout|terminated/i.test(error.message)) {
      throw new ConfigError(
        "PostgreSQL did not answer at LETHE_DATABASE_URL within 5 s: the server is unreachable, or accepts connections and stays silent",
      );
    }
    throw error;
  }
}

/** A pool of `max` connections whose failures reach the queries using them, never the process. */
function quietPool(clientConfig: pg.ClientConfig, max: number): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig, max, idleTimeoutMillis: 30_000 });
  // a pooled client failing while idle must not crash the process
  pool.on("error", () => {});
  // nor while checked out (pg-pool removes its idle listener then): the query in flight rejects anyway
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

async function connectPostgresStore(url: string, queryTimeoutMs: number): Promise<Store> {
  const { connectionString, schema } = parseDatabaseUrl(url);
  const clientConfig: pg.ClientConfig = {
    connectionString,
    connectionTimeoutMillis: 5_000,
    // keep-alive probes find a peer gone while a connection idles (the change feed's, mostly),
    // from 10 s of quiet on (the operating system's default is two hours)
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    ...(schema !== null && { options: `-c search_path=${schema}` }),
  };
  if (schema !== null) {
    const setup = new pg.Client({ connectionString, connectionTimeoutMillis: 5_000 });
    await setup.connect();
    try {
      await setup.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } catch {
      // another replica created it at the same moment
    } finally {
      await setup.end();
    }
  }
  const pool = quietPool(clientConfig, 10);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  await migrateToLatest(db as Kysely<unknown>, schema ?? "public");
  await installHoldFunction(pool);
  // after the migrations, which may rewrite a large table in one silent statement
  boundSilence(pool, queryTimeoutMs);
  const feed = new PostgresChangeFeed(clientConfig, pool, channelOf(schema));
  await feed.start();
  // retention's roll-up sorts a whole day in one statement, and waits on another replica's
  // roll-up under an advisory lock: silent for minutes on a large deployment, and not
  // dead. It gets a connection of its own, outside the silence bound
  const retentionDb = new Kysely<Database>({ dialect: new PostgresDialect({ pool: quietPool(clientConfig, 1) }) });
  const silence = new DatabaseSilence(() => feed.heardKeys());
  return new KyselyStore(
    "postgres",
    db,
    feed,
    async () => {
      await feed.close();
      await retentionDb.destroy();
    },
    new LedgerStore(db, feed, LEDGER_LOCK_TIMEOUT_MS),
    new PostgresCreditHoldStore(db, pool, silence),
    new UsageStore(db, postgresRollUpDay(retentionDb)),
    silence,
  );
}
