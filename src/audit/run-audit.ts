import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { AuditClient } from "./audit-client.js";
import { type AuditReport, buildReport, type ModelCoverage } from "./audit-report.js";
import { CanaryRegistry } from "./canary-registry.js";
import { drivePaths, type PathRun } from "./drive-paths.js";
import { startEmbedded } from "./embedded-deployment.js";
import { auditPaths } from "./paths/all-paths.js";
import type { AuditSetting } from "./paths/audit-path.js";
import type { SeededLeakKind } from "./seeded-leak.js";
import { databaseLocations, databaseStores } from "./stores/database-stores.js";
import { dataDirStore, logFileStore, tempDirStore } from "./stores/file-stores.js";
import { dropSchema } from "./stores/postgres-store.js";
import { deleteRedisKeys } from "./stores/redis-store.js";
import { textStore, unscannable } from "./stores/store-scanner.js";
import { StoreSweep } from "./stores/store-sweep.js";
import { AuditInputError, connectTarget, type TargetDeployment } from "./target-deployment.js";

/** What to audit. Without `target`, Lethe itself, started against the audit's own fake suppliers. */
export interface AuditOptions {
  /** A running deployment; only the paths that need no fault injection are driven. */
  target?: { url: string; key: string };
  /** The deployment's log file, scanned as the log store in target mode. */
  logFile?: string;
  /**
   * Target mode: the operator says the deployment's log cannot be given to the audit
   * (`--no-log`). The log is then excluded, and the best verdict is a qualified PASS that
   * says so; without `logFile` or `noLog`, the unsearched log makes the audit INCONCLUSIVE.
   */
  noLog?: boolean;
  /** Target mode: drive only these of the models the target lists (`--model`); every one by default. */
  models?: string[];
  /** Names the data dir (target mode) and the PostgreSQL and Redis stores; process.env by default. */
  env?: Record<string, string | undefined>;
  /**
   * Test-only: installs a deliberate leak into one store of the embedded gateway, to
   * prove the audit fails on it (see seeded-leak.ts). Never set from the CLI.
   */
  seedLeak?: SeededLeakKind;
}

const EMBEDDED_SETTING: AuditSetting = {
  embedded: true,
  routes: [
    { label: "openai supplier", model: "audit-openai", format: "openai" },
    { label: "anthropic supplier", model: "audit-anthropic", format: "anthropic" },
  ],
};

const METRICS_DESCRIPTION = "the GET /metrics page (what a scraper keeps)";

/** A URL naming a fresh schema of the audit's own in the configured database. */
function auditSchemaUrl(databaseUrl: string): { url: string } {
  const url = new URL(databaseUrl);
  url.searchParams.set("schema", `lethe_audit_${randomBytes(4).toString("hex")}`);
  return { url: url.toString() };
}

/** Drives every path against the audit's own gateway, then scans every store it wrote. */
async function auditEmbedded(registry: CanaryRegistry, sweep: StoreSweep, options: AuditOptions, since: number) {
  const locations = databaseLocations(options.env ?? process.env);
  // the audit's gateway writes under a prefix of its own, so only its keys are scanned, then deleted
  const redis =
    locations.redisUrl === null
      ? null
      : { url: locations.redisUrl, prefix: `${locations.redisPrefix}audit-${randomBytes(4).toString("hex")}:` };
  // likewise a PostgreSQL schema of its own, scanned table by table, then dropped
  const database = locations.databaseUrl === null ? null : auditSchemaUrl(locations.databaseUrl);
  const deployment = await startEmbedded(options.seedLeak, redis, database?.url ?? null);
  try {
    const client = new AuditClient(deployment.url);
    let runs: PathRun[];
    let metrics: string;
    try {
      runs = await drivePaths(auditPaths(EMBEDDED_SETTING), {
        setting: EMBEDDED_SETTING,
        client,
        key: deployment.key,
        registry,
        fakes: deployment.fakes,
        keys: deployment.keys,
      });
      metrics = (await client.send({ path: "/metrics" })).text;
    } finally {
      await client.close();
    }
    // while the gateway runs, the WAL holds the latest writes; after shutdown they are checkpointed
    await deployment.gateway.gateway.meter.drain();
    await sweep.scan(dataDirStore(deployment.dataDir));
    await deployment.stop();
    await sweep.scan(dataDirStore(deployment.dataDir));
    await sweep.scan(textStore("log", "every log line and all other output of the process", () => deployment.printed));
    await sweep.scan(tempDirStore(os.tmpdir(), since, [deployment.dataDir]));
    await sweep.scan(textStore("metrics", METRICS_DESCRIPTION, () => metrics));
    const scanned = {
      ...locations,
      databaseUrl: database?.url ?? null,
      redisPrefix: redis?.prefix ?? locations.redisPrefix,
    };
    for (const scanner of databaseStores(scanned)) {
      await sweep.scan(scanner);
    }
    return runs;
  } finally {
    await deployment.stop();
    await deployment.remove();
    if (redis !== null) await deleteRedisKeys(redis.url, redis.prefix).catch(() => undefined);
    if (database !== null) await dropSchema(database.url).catch(() => undefined);
  }
}

/** The models to drive: every one the target lists, or those `--model` chose (each must be listed). */
function chooseModels(target: TargetDeployment, chosen: string[] | undefined): ModelCoverage {
  const listed = target.models;
  if (chosen === undefined || chosen.length === 0) return { listed, driven: listed, notDriven: [] };
  const unknown = chosen.filter((model) => !listed.includes(model));
  if (unknown.length > 0) {
    throw new AuditInputError(
      `--model ${unknown[0]} is not one of the ${listed.length} model(s) ${target.shown} lists`,
    );
  }
  const driven = listed.filter((model) => chosen.includes(model));
  return { listed, driven, notDriven: listed.filter((model) => !driven.includes(model)) };
}

/** The deployment's log: the file given, excluded by `--no-log`, or a gap that leaves the audit INCONCLUSIVE. */
function logStore(options: AuditOptions) {
  if (options.logFile !== undefined) return logFileStore(options.logFile);
  const description = "the deployment's log";
  if (options.noLog)
    return unscannable("log", description, "--no-log: the operator said it cannot be read", "excluded");
  return unscannable("log", description, "no log file given: pass --log FILE, or --no-log if it cannot be had");
}

/** The store URLs the environment names, checked before any path is driven (a bad one failed only after). */
function checkStoreUrls(env: NodeJS.ProcessEnv): void {
  const expected = [
    ["LETHE_DATABASE_URL", /^postgres(ql)?:$/, "postgres://"],
    ["LETHE_REDIS_URL", /^rediss?:$/, "redis://"],
  ] as const;
  for (const [name, scheme, example] of expected) {
    const value = env[name];
    if (value === undefined || value === "") continue;
    let protocol = "";
    try {
      protocol = new URL(value).protocol;
    } catch {
      // the value is not repeated: it may hold a password
    }
    if (!scheme.test(protocol)) throw new AuditInputError(`${name} is not a ${example} URL`);
  }
}

/** Drives the paths a running deployment allows, then scans the local stores the environment names. */
async function auditTarget(
  registry: CanaryRegistry,
  sweep: StoreSweep,
  options: AuditOptions & { target: { url: string; key: string } },
  since: number,
) {
  const env = options.env ?? process.env;
  checkStoreUrls(env);
  const target = await connectTarget(options.target.url, options.target.key);
  try {
    const models = chooseModels(target, options.models);
    const setting: AuditSetting = {
      embedded: false,
      routes: models.driven.map((model) => ({ label: `model ${model}`, model, format: null })),
    };
    const runs = await drivePaths(auditPaths(setting), {
      setting,
      client: target.client,
      key: options.target.key,
      registry,
      fakes: null,
      keys: { revoked: null, limited: null },
    });
    // a deployment with server.metrics_auth: operator shows its metrics to an operator token only
    const operatorToken = env.LETHE_OPERATOR_TOKEN;
    const metrics = await target.client.send({
      path: "/metrics",
      ...(operatorToken && { headers: { authorization: `Bearer ${operatorToken}` } }),
    });
    // the same default as every other command: a gateway started here without LETHE_DATA_DIR keeps ./.lethe
    const dataDir = path.resolve(env.LETHE_DATA_DIR || ".lethe");
    await sweep.scan(dataDirStore(dataDir));
    await sweep.scan(logStore(options));
    await sweep.scan(tempDirStore(os.tmpdir(), since, [dataDir]));
    await sweep.scan(
      metrics.status === 200
        ? textStore("metrics", METRICS_DESCRIPTION, () => metrics.text)
        : unscannable(
            "metrics",
            METRICS_DESCRIPTION,
            metrics.status === 401
              ? "GET /metrics needs an operator token (set LETHE_OPERATOR_TOKEN)"
              : `GET /metrics answered HTTP ${metrics.status}`,
          ),
    );
    for (const scanner of databaseStores(databaseLocations(env), target.stores)) await sweep.scan(scanner);
    return { runs, shown: target.shown, models };
  } finally {
    await target.client.close();
  }
}

/**
 * `lethe audit`: sends unique canaries through every path Lethe has, scans every
 * store Lethe writes for them in every encoding, and reports. Throws AuditInputError
 * on bad input (unreachable target, refused key, missing log file).
 */
export async function runAudit(options: AuditOptions = {}): Promise<AuditReport> {
  const started = performance.now();
  const since = Date.now();
  if (options.logFile !== undefined && options.noLog) throw new AuditInputError("--log FILE and --no-log contradict");
  if (options.logFile !== undefined && !existsSync(options.logFile)) {
    throw new AuditInputError(`cannot read the log file ${options.logFile}`);
  }
  const registry = new CanaryRegistry();
  const sweep = new StoreSweep(registry);
  let runs: PathRun[];
  let target: string | null = null;
  let models: ModelCoverage | null = null;
  if (options.target === undefined) runs = await auditEmbedded(registry, sweep, options, since);
  else
    ({
      runs,
      shown: target,
      models,
    } = await auditTarget(registry, sweep, { ...options, target: options.target }, since));
  return buildReport({
    mode: target === null ? "embedded" : "target",
    target,
    runs,
    stores: sweep.results(),
    registry,
    models,
    durationMs: performance.now() - started,
  });
}
