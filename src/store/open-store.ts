import type { LetheConfig } from "../config/load-config.js";
import { openSqliteStore } from "./sqlite/open-sqlite-store.js";
import type { Store } from "./store.js";

/**
 * Opens the store the configuration names: PostgreSQL when LETHE_DATABASE_URL is set, else
 * SQLite in the data dir. The PostgreSQL driver is loaded only then (it costs memory).
 */
export async function openStore(config: LetheConfig): Promise<Store> {
  if (config.databaseUrl !== null) {
    const { openPostgresStore } = await import("./postgres/open-postgres-store.js");
    return openPostgresStore(config.databaseUrl, config.database.queryTimeoutMs);
  }
  return openSqliteStore(config.dataDir);
}
