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

/**
 * What a running deployment says it uses (its `/readyz`), each null when it does not say:
 * the audit's own environment may name less than the target uses, and a store left
 * unsearched for that must not read as one the deployment does without.
 */
export interface TargetStores {
  postgres: boolean | null;
  redis: boolean | null;
}

const UNKNOWN_TARGET: TargetStores = { postgres: null, redis: null };

/**
 * PostgreSQL (every table in Lethe's schema) and Redis (every key under its prefix), when
 * configured. `target` is what a running deployment said it uses: a store it uses that the
 * environment does not name cannot be searched, and leaves the audit inconclusive. Against a
 * target, a Redis prefix holding no key after the audit's own requests (which write rate-limit
 * and auth counters there) is not the target's.
 */
export function databaseStores(locations: DatabaseLocations, target: TargetStores = UNKNOWN_TARGET): StoreScanner[] {
  const postgres = locations.databaseUrl
    ? postgresStore(locations.databaseUrl)
    : target.postgres === true
      ? unscannable(
          "postgres",
          "every PostgreSQL table Lethe owns",
          "the target stores in PostgreSQL (its /readyz says so), but LETHE_DATABASE_URL is not set here",
        )
      : unscannable(
          "postgres",
          "every PostgreSQL table Lethe owns",
          "not configured (LETHE_DATABASE_URL is not set)",
          "not in use",
        );
  const redis = locations.redisUrl
    ? redisStore(locations.redisUrl, locations.redisPrefix, { expectKeys: target.redis === true })
    : target.redis === true
      ? unscannable(
          "redis",
          "every Redis key and value under Lethe's prefix",
          "the target uses Redis (its /readyz says so), but LETHE_REDIS_URL is not set here",
        )
      : unscannable(
          "redis",
          "every Redis key and value under Lethe's prefix",
          "not configured (LETHE_REDIS_URL is not set)",
          "not in use",
        );
  return [postgres, redis];
}
