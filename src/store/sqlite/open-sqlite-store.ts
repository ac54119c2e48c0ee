import { mkdir, open } from "node:fs/promises";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { Kysely, SqliteDialect } from "kysely";
import { KyselyStore } from "../kysely-store.js";
import { migrateToLatest } from "../migrations.js";
import type { Database } from "../schema.js";
import type { Store } from "../store.js";

/** The SQLite database file inside the data dir. */
export const SQLITE_FILE = "lethe.db";

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
  return new KyselyStore(
    "sqlite",
    db,
    () => dataVersion.get() as number,
    async () => {},
  );
}
