import type { LetheConfig } from "../config/load-config.js";
import { openSqliteStore } from "./sqlite/open-sqlite-store.js";
import type { Store } from "./store.js";

/** Opens the store the configuration names: SQLite in the data dir unless a PostgreSQL URL is set. */
export async function openStore(config: LetheConfig): Promise<Store> {
  if (config.databaseUrl !== null) {
    throw new Error("LETHE_DATABASE_URL (PostgreSQL) is not supported by this build yet; unset it to use SQLite");
  }
  return openSqliteStore(config.dataDir);
}
