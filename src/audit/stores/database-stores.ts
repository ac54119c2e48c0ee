import { redisStore } from "./redis-store.js";
import { type StoreScanner, unscannable } from "./store-scanner.js";

/** Where the audit looks for Lethe's shared stores: PostgreSQL and Redis, when named. */
export interface DatabaseLocations {
  databaseUrl: string | null;
  redisUrl: string | null;
  redisPrefix: string;
}

/** Reads the PostgreSQL and Redis locations from the environment, as `lethe serve` does. */
export function databaseLocations(env: Record<string, string | undefined>): DatabaseLocations {
  return {
    databaseUrl: env.LETHE_DATABASE_URL || null,
    redisUrl: env.LETHE_REDIS_URL || null,
    redisPrefix: env.LETHE_REDIS_PREFIX || "lethe:",
  };
}

/**
 * PostgreSQL and Redis, when configured. This build keeps metadata in SQLite only
 * (it refuses LETHE_DATABASE_URL), so there is no PostgreSQL table of Lethe's to
 * read yet; the scanner that reads every table Lethe owns belongs here once that
 * store exists. Redis is scanned key by key under Lethe's prefix.
 */
export function databaseStores(locations: DatabaseLocations): StoreScanner[] {
  const postgres = locations.databaseUrl
    ? unscannable(
        "postgres",
        "every PostgreSQL table Lethe owns",
        "LETHE_DATABASE_URL is set, but this build has no PostgreSQL store (it refuses to start with one)",
      )
    : unscannable("postgres", "every PostgreSQL table Lethe owns", "not configured (LETHE_DATABASE_URL is not set)");
  const redis = locations.redisUrl
    ? redisStore(locations.redisUrl, locations.redisPrefix)
    : unscannable(
        "redis",
        "every Redis key and value under Lethe's prefix",
        "not configured (LETHE_REDIS_URL is not set)",
      );
  return [postgres, redis];
}
