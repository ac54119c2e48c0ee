import { postgresStore } from "./postgres-store.js";
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

/** PostgreSQL (every table in Lethe's schema) and Redis (every key under its prefix), when configured. */
export function databaseStores(locations: DatabaseLocations): StoreScanner[] {
  const postgres = locations.databaseUrl
    ? postgresStore(locations.databaseUrl)
    : unscannable(
        "postgres",
        "every PostgreSQL table Lethe owns",
        "not configured (LETHE_DATABASE_URL is not set)",
        "not in use",
      );
  const redis = locations.redisUrl
    ? redisStore(locations.redisUrl, locations.redisPrefix)
    : unscannable(
        "redis",
        "every Redis key and value under Lethe's prefix",
        "not configured (LETHE_REDIS_URL is not set)",
        "not in use",
      );
  return [postgres, redis];
}
