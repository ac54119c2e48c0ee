import { mkdir, open } from "node:fs/promises";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { Kysely, SqliteDialect } from "kysely";
import type { AccountId } from "../../config/ids.js";
import { METADATA_COLUMNS, type MetadataRecord } from "../../metering/metadata-record.js";
import { type ChangeFeed, quietFeed } from "../change-feed.js";
import { KyselyStore } from "../kysely-store.js";
import { type Debit, LedgerStore } from "../ledger-store.js";
import { migrateToLatest } from "../migrations.js";
import type { Database } from "../schema.js";
import type { Store } from "../store.js";
import { UsageStore } from "../usage-store.js";
import { installRevision, OWN_MOVES, READ_REVISION_SQL, revisionCounter, WRITER_SEQUENCE } from "./revision.js";
import { SqliteWriter } from "./sqlite-writer.js";
import type { DebitRow, MetadataRow } from "./writer-protocol.js";

/** The SQLite database file inside the data dir. */
export const SQLITE_FILE = "lethe.db";

/** Every connection to the file (the main one and the writer thread's) runs with these. */
const CONNECTION_PRAGMAS = [
  "journal_mode = WAL",
  "synchronous = NORMAL",
  "busy_timeout = 5000",
  // overwrite freed pages so deleted rows leave nothing behind in the file
  "secure_delete = ON",
  "foreign_keys = ON",
  // 2 MiB of page cache per connection, SQLite's own default: better-sqlite3 builds with
  // 16 MB, which the writer thread fills with the pages of an append-only table it never
  // reads back (about 18 MB of the gateway's RSS under load); the OS caches the file anyway
  "cache_size = -2048",
];

/**
 * A record as one row of positional parameters in METADATA_COLUMNS order, booleans
 * stored as 0/1. An array literal: it is packed (once optimised, `map` preallocates a
 * holey array, which structured clone sends as a sparse array that the writer thread
 * rebuilds one property at a time), and its named loads stay monomorphic where a loop
 * over the column names made 22 megamorphic keyed loads per record. The order is
 * checked against METADATA_COLUMNS in test/sqlite-writer.test.ts.
 */
export function toParameters(r: MetadataRecord): MetadataRow {
  return [
    r.request_id,
    r.ts,
    r.account,
    r.key_id,
    r.endpoint,
    r.client_format,
    r.model,
    r.supplier,
    r.status,
    r.error_code,
    r.input_tokens,
    r.output_tokens,
    r.cached_input_tokens,
    r.reasoning_tokens,
    r.latency_ms,
    r.ttft_ms,
    r.output_tokens_per_s,
    r.streamed ? 1 : 0,
    r.cache_hit ? 1 : 0,
    r.cost_micros,
    r.tokens_estimated ? 1 : 0,
    r.attempts,
  ];
}

/** The ledger on SQLite: debits go to the writer thread (SQLite mode takes no database holds, so none to delete). */
class SqliteLedgerStore extends LedgerStore {
  private readonly readBalance: BetterSqlite3.Statement;

  constructor(
    database: BetterSqlite3.Database,
    db: Kysely<Database>,
    feed: ChangeFeed,
    private readonly writer: SqliteWriter,
  ) {
    super(db, feed);
    this.readBalance = database.prepare("SELECT balance_micros FROM accounts WHERE id = ?").pluck();
  }

  /** Read after every write of the account's charges (credit-guard.ts): a statement prepared once, not Kysely. */
  override async balance(accountId: AccountId): Promise<number> {
    const value = this.readBalance.get(accountId);
    return value === undefined ? 0 : Number(value);
  }

  override async debit(debits: readonly Debit[]): Promise<void> {
    if (debits.length === 0) return;
    // packed rows in a packed array: see toParameters
    const rows: DebitRow[] = [];
    for (const debit of debits) rows.push([debit.accountId, debit.ts, debit.amountMicros, debit.requestId]);
    await this.writer.writeDebits(rows);
  }
}

/**
 * The embedded store. Its hot writes (the meter's records, the credit guard's debits)
 * run on a writer thread with its own connection, one transaction per batch: written
 * on the event loop they cost every request in flight about a millisecond per 64
 * records (it showed as Lethe's p99 latency in the bench). Everything else, reads
 * and the rare admin writes, stays on the main connection through Kysely.
 */
class SqliteStore extends KyselyStore {
  constructor(
    database: BetterSqlite3.Database,
    db: Kysely<Database>,
    feed: ChangeFeed,
    private readonly writer: SqliteWriter,
  ) {
    // closing waits for every write sent to the writer thread, then stops it
    super(
      "sqlite",
      db,
      feed,
      () => writer.close(),
      new SqliteLedgerStore(database, db, feed, writer),
      undefined,
      // retention's roll-up is a write: on the writer thread, in turn with the metadata batches
      new UsageStore(db, (cutoffMs) => writer.rollUpDay(cutoffMs)),
    );
  }

  override async insertMetadata(records: readonly MetadataRecord[]): Promise<void> {
    if (records.length === 0) return;
    // packed, like each row (toParameters)
    const rows: MetadataRow[] = [];
    for (const record of records) rows.push(toParameters(record));
    await this.writer.writeMetadata(rows);
  }
}

/**
 * Reads `read` at most once per turn of the event loop. Every request checks the
 * counter (for revocations by another process); requests handled in the same turn
 * arrived together, so one read serves them all and saves its two fcntl calls each.
 */
function turnCachedCounter(read: () => number): () => number {
  let value = 0;
  let fresh = false;
  const expire = () => {
    fresh = false;
  };
  return () => {
    if (!fresh) {
      value = read();
      fresh = true;
      setImmediate(expire);
    }
    return value;
  };
}

/**
 * Brings a data dir's schema up to date, one process at a time. Kysely takes no migration
 * lock on SQLite and runs its DDL outside any transaction: two processes opening a new data
 * dir at once (two `lethe serve`, a CLI command beside a starting gateway) both found no
 * schema, and the second failed on the first's tables ("table accounts already exists"),
 * or worse, each made some of them. Here the whole migration runs in one EXCLUSIVE
 * transaction on the connection Kysely uses: the other process waits for it (busy_timeout),
 * then finds the schema made; a migration that fails leaves nothing behind.
 */
async function migrateExclusively(database: BetterSqlite3.Database, db: Kysely<unknown>): Promise<void> {
  database.exec("BEGIN EXCLUSIVE");
  try {
    await migrateToLatest(db);
  } catch (error) {
    // SQLite may have rolled back already (a full disk): the migration's own error is the one to tell
    if (database.inTransaction) database.exec("ROLLBACK");
    throw error;
  }
  database.exec("COMMIT");
}

/** Opens (creating and migrating when needed) the embedded SQLite store in `dataDir`. */
export async function openSqliteStore(dataDir: string): Promise<Store> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, SQLITE_FILE);
  // create the file owner-only before SQLite opens it; its -wal and -shm files copy the mode
  await (await open(file, "a", 0o600)).close();
  const database = new BetterSqlite3(file);
  for (const pragma of CONNECTION_PRAGMAS) database.pragma(pragma);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database }) });
  await migrateExclusively(database, db as Kysely<unknown>);
  // the auth cache and the credit guard must see changes by other processes (the CLI revoking
  // a key, a top-up, another replica's debits) but not this process's own writer thread's
  // debits, which would otherwise send every cached key and balance back to the database
  // after each flush: the revision tells them apart (revision.ts)
  installRevision(database);
  const shared = new BigInt64Array(new SharedArrayBuffer(2 * BigInt64Array.BYTES_PER_ELEMENT));
  const writer = new SqliteWriter({
    file,
    pragmas: CONNECTION_PRAGMAS,
    metadataColumns: METADATA_COLUMNS,
    shared: shared.buffer as SharedArrayBuffer,
    ownMovesSlot: OWN_MOVES,
    sequenceSlot: WRITER_SEQUENCE,
    readRevisionSql: READ_REVISION_SQL,
  });
  return new SqliteStore(database, db, quietFeed(turnCachedCounter(revisionCounter(database, shared))), writer);
}
