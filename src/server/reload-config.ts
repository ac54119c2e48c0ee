import type { LetheConfig } from "../config/load-config.js";
import type { Gateway } from "../http/gateway.js";
import { loadSigningKey } from "../store/signing-key.js";
import { SupplierRegistry } from "../suppliers/registry.js";
import { letheVersion } from "../zdr/lethe-version.js";
import { buildStatement, signStatement } from "../zdr/retention-statement.js";

/**
 * The sections a running gateway takes from a reloaded config file: what it routes and
 * where (suppliers, models with their routes and prices, routing settings). Everything
 * else was built into the process at start-up (the listening socket, the store, Redis,
 * limits, metering, retention) and takes a restart.
 */
const RELOADED = new Set<keyof LetheConfig>(["suppliers", "models", "routing"]);

/** What a reload did: the new counts, and the changed sections it left to a restart. */
export interface ReloadOutcome {
  models: number;
  suppliers: number;
  /** Config sections that changed but are not reloaded, in the file's naming (`limits`, `server`...). */
  needRestart: string[];
}

/** Sections outside RELOADED whose values differ between the running config and the file. */
function changedFixedSections(running: LetheConfig, next: LetheConfig): string[] {
  const changed: string[] = [];
  for (const key of Object.keys(running) as (keyof LetheConfig)[]) {
    if (RELOADED.has(key) || key === "configPath") continue;
    if (JSON.stringify(running[key]) !== JSON.stringify(next[key])) changed.push(SECTION_NAMES[key] ?? key);
  }
  return changed;
}

/** Config fields as the operator writes them: the file's section, or the environment variable. */
const SECTION_NAMES: Partial<Record<keyof LetheConfig, string>> = {
  host: "LETHE_HOST",
  port: "LETHE_PORT",
  dataDir: "LETHE_DATA_DIR",
  databaseUrl: "LETHE_DATABASE_URL",
  redisUrl: "LETHE_REDIS_URL",
  redisPrefix: "LETHE_REDIS_PREFIX",
  secret: "LETHE_SECRET",
};

/**
 * Applies a config file read again (SIGHUP) to a running gateway, without a request lost
 * or a connection dropped: new suppliers, models, routes, prices and routing settings
 * serve from the next request on. Unchanged suppliers keep their connection pools;
 * replaced or removed ones finish the requests they carry, then close. Routes still
 * configured keep their health (breakers, latency). The signed retention statement is
 * signed again, since it lists the suppliers. The swap is synchronous. A request routed
 * before it keeps its plan (routes, upstream model names, prices); an attempt it makes
 * after it uses the supplier then configured under the route's supplier id (a removed one
 * is still found, its pool closing, and fails over like any unreachable route), and is
 * passed over when the request requires ZDR and that supplier is no longer qualified
 * (removed, or now `zdr: false`).
 */
export async function reloadGateway(gateway: Gateway, next: LetheConfig): Promise<ReloadOutcome> {
  const running = gateway.config;
  const needRestart = changedFixedSections(running, next);
  // the sections that need a restart stay as the process runs them, so the config it reports is the one in effect
  const merged: LetheConfig = { ...running, suppliers: next.suppliers, models: next.models, routing: next.routing };
  // a --dev process stays one: the flag was given at start, not by the file
  const developmentRun = gateway.statement.statement.development_run;
  const statement = signStatement(
    buildStatement(merged, await letheVersion(), { developmentRun }),
    await loadSigningKey(merged.dataDir),
  );
  const routeKeys = new Set<string>();
  for (const model of merged.models.values()) for (const route of model.routes) routeKeys.add(route.key);
  const suppliers = new SupplierRegistry(merged, gateway.suppliers);
  // a new router even when the settings are the same: removed routes leave /metrics
  const router = gateway.router.successor(merged.routing, routeKeys);
  gateway.config = merged;
  gateway.suppliers = suppliers;
  gateway.router = router;
  gateway.statement = statement;
  // in the background: a stream on a retired supplier may run for minutes
  suppliers.closeRetired().catch(() => {});
  return { models: merged.models.size, suppliers: merged.suppliers.size, needRestart };
}
