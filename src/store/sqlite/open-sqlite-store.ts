import { mkdir, open } from "node:fs/promises";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { Kysely, SqliteDialect } from "kysely";
import { METADATA_COLUMNS, type MetadataRecord } from "../../metering/metadata-record.js";
import { type ChangeFeed, quietFeed } from "../change-feed.js";
import { KyselyStore } from "../kysely-store.js";
import { type Debit, LedgerStore } from "../ledger-store.js";
import { migrateToLatest } from "../migrations.js";
import { mintId } from "../mint-id.js";
import type { Database } from "../schema.js";
import type { Store } from "../store.js";

/** The SQLite database file inside the data dir. */
export const SQLITE_FILE = "lethe.db";

/** A record as one row of positional parameters, booleans stored as 0/1. */
function toParameters(record: MetadataRecord): (string | number | null)[] {
  return METADATA_COLUMNS.map((column) => {
    const value = record[column];
    return typeof value === "boolean" ? (value ? 1 : 0) : value;
  });
}

/** The ledger on SQLite: debits are written with statements prepared once, for the same reason as metadata. */
class SqliteLedgerStore extends LedgerStore {
  private readonly writeDebits: (debits: readonly Debit[]) => void;

  constructor(database: BetterSqlite3.Database, db: Kysely<Database>, feed: ChangeFeed) {
    super(db, feed);
    const insert = database.prepare(
      "INSERT INTO ledger_entries (id, account_id, ts, kind, amount_micros, request_id) VALUES (?, ?, ?, 'debit', ?, ?)",
    );
    const lower = database.prepare("UPDATE accounts SET balance_micros = balance_micros - ? WHERE id = ?");
    this.writeDebits = database.transaction((debits: readonly Debit[]) => {
      const perAccount = new Map<string, number>();
      for (const debit of debits) {
        insert.run(mintId("le"), debit.accountId, debit.ts, -debit.amountMicros, debit.requestId);
        perAccount.set(debit.accountId, (perAccount.get(debit.accountId) ?? 0) + debit.amountMicros);
      }
      for (const [accountId, total] of perAccount) lower.run(total, accountId);
    });
  }

  override async debit(debits: readonly Debit[]): Promise<void> {
    if (debits.length > 0) this.writeDebits(debits);
  }
}

/**
 * The embedded store. Metadata inserts bypass Kysely: the meter writes hundreds of
 * records per flush, synchronously on the event loop, and a single-row INSERT
 * prepared once and run in one better-sqlite3 transaction costs about a third of
 * compiling and preparing a fresh multi-row INSERT per flush. Every request in
 * flight waits out that time (it showed as Lethe's p99 latency in the bench).
 */
class SqliteStore extends KyselyStore {
  private readonly insertRows: (records: readonly MetadataRecord[]) => void;

  constructor(database: BetterSqlite3.Database, db: Kysely<Database>, counter: () => number) {
    const feed = quietFeed(counter);
    super("sqlite", db, feed, async () => {}, new SqliteLedgerStore(database, db, feed));
    const insert = database.prepare(
      `INSERT INTO request_metadata (${METADATA_COLUMNS.join(", ")}) VALUES (${METADATA_COLUMNS.map(() => "?").join(", ")})`,
    );
    this.insertRows = database.transaction((records: readonly MetadataRecord[]) => {
      for (const record of records) insert.run(toParameters(record));
    });
  }

  override async insertMetadata(records: readonly MetadataRecord[]): Promise<void> {
    if (records.length > 0) this.insertRows(records);
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

/** Opens (creating and migrating when needed) the embedded SQLite store in `dataDir`. */
export async function openSqliteStore(dataDir: string): Promise<Store> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, SQLITE_FILE);
  // create the file owner-only before SQLite opens it; its -wal and -shm files copy the mode
  await (await open(file, "a", 0o600)).close();
  const database = new BetterSqlite3(file);
  database.pragma("journal_mode = WAL");
  database.pragma("synchronous = NORMAL");
  database.pragma("busy_timeout = 5000");
  // overwrite freed pages so deleted rows leave nothing behind in the file
  database.pragma("secure_delete = ON");
  database.pragma("foreign_keys = ON");
  // data_version moves when another connection (the CLI) commits: the auth cache watches it
  const dataVersion = database.prepare("PRAGMA data_version").pluck();
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database }) });
  await migrateToLatest(db as Kysely<unknown>);
  return new SqliteStore(
    database,
    db,
    turnCachedCounter(() => dataVersion.get() as number),
  );
}
