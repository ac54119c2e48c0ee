import cluster from "node:cluster";
import os from "node:os";
import { ConfigError, type LetheConfig, loadConfig } from "../../config/load-config.js";
import { createEventLog, type EventLog } from "../../logging/event-log.js";
import { HardeningError, hardenProcess } from "../../process/harden-process.js";
import { bootstrapDemoAccount, prepareStore } from "../../server/bootstrap.js";
import { announceListening, runPrimary } from "../../server/cluster-primary.js";
import { reloadGateway } from "../../server/reload-config.js";
import { type RunningGateway, startGateway } from "../../server/start-gateway.js";
import { privateFilesReadableByOthers, writableByOthers } from "../../store/private-dir.js";
import { secretDiffersFromGenerated } from "../../store/server-secret.js";
import { CliError, type CliIo, parseCommand, positiveInt } from "../cli-io.js";

const USAGE = "usage: lethe serve [--config FILE] [--workers N] [--dev]";

const MAX_WORKERS = 256;

async function harden(io: CliIo, log: EventLog, development: boolean): Promise<void> {
  try {
    const report = await hardenProcess({ allowInspector: development, log });
    log.event("process_hardened", {
      core_dumps_disabled: report.coreDumpsDisabled,
      diagnostic_reports_disabled: report.diagnosticReportsDisabled,
      development_run: development,
    });
    if (!report.coreDumpsDisabled && !cluster.isWorker) {
      io.err("lethe: warning: could not set the core-file limit to 0; run under `ulimit -c 0` (see docs/zdr.md)");
    }
  } catch (error) {
    if (error instanceof HardeningError) throw new CliError(error.message);
    throw error;
  }
}

function printWelcome(
  io: CliIo,
  config: LetheConfig,
  url: string,
  workers: number,
  firstStartKey: string | null,
): void {
  const shape = workers > 1 ? `, ${workers} workers` : "";
  io.out(`Lethe is listening on ${url} (${config.models.size} model(s)${shape}, data in ${config.dataDir})`);
  if (firstStartKey === null) return;
  const firstModel = [...config.models.keys()][0] as string;
  io.out("");
  io.out("First start: created account 'demo' with this API key. It is shown once and never again:");
  io.out("");
  io.out(`  ${firstStartKey}`);
  io.out("");
  // a priced model answers 402 to an account without credit: say so before the curl line fails
  const priced = config.models
    .get(firstModel)
    ?.routes.some((route) => route.price.inputPerMtok > 0 || route.price.outputPerMtok > 0);
  if (priced) {
    io.out("Its models are priced and 'demo' starts with no credit: add some first, e.g.");
    io.out("  npx lethe credits add --account demo 10");
    io.out("");
  }
  // 'demo' requires ZDR, as every account does by default: a model without a ZDR supplier answers 403
  const zdr = config.models.get(firstModel)?.routes.some((route) => route.supplier.zdr);
  if (zdr === false) {
    io.out(`'${firstModel}' has no ZDR supplier and 'demo' requires ZDR: the curl below is refused (403) until`);
    io.out("a supplier of it is marked `zdr: true`, or the account gets `zdr_required: false` (admin API).");
    io.out("");
  }
  io.out("Try it:");
  io.out(
    `  curl ${url}/v1/chat/completions -H "Authorization: Bearer ${firstStartKey}" -H "Content-Type: application/json" -d '{"model":"${firstModel}","messages":[{"role":"user","content":"Hello"}]}'`,
  );
  io.out("");
}

/**
 * Reads the config file again on each SIGHUP and applies its routing to the running
 * gateway (reload-config.ts); one reload at a time, and a signal during one runs another
 * after it. A file that does not load leaves the running config in place, and says why.
 */
function reloadOnHangup(
  io: CliIo,
  configFlag: string | undefined,
  running: RunningGateway,
  log: EventLog,
  hangups: { stop(): boolean },
): () => void {
  let reloading: Promise<void> | null = null;
  let again = false;
  const reload = async () => {
    try {
      const next = await loadConfig(io.env, configFlag);
      if (next.models.size === 0) {
        log.event("config_reload_failed", { reason: "no_models" });
        io.err("lethe: config not reloaded: the config file defines no models");
        return;
      }
      const warnedBefore = new Set(zdrWarnings(running.gateway.config));
      const outcome = await reloadGateway(running.gateway, next);
      // as at start: a model the reload left with no ZDR supplier is refused to most accounts
      for (const warning of zdrWarnings(next)) if (!warnedBefore.has(warning)) io.err(`lethe: warning: ${warning}`);
      log.event("config_reloaded", {
        models: outcome.models,
        suppliers: outcome.suppliers,
        restart_needed: outcome.needRestart.length > 0,
      });
      if (outcome.needRestart.length > 0) {
        io.err(`lethe: config reloaded; these changes take a restart: ${outcome.needRestart.join(", ")}`);
      }
    } catch (error) {
      const invalid = error instanceof ConfigError;
      log.event("config_reload_failed", { reason: invalid ? "invalid_config" : "failed" });
      io.err(`lethe: config not reloaded: ${invalid ? error.message : "the reload failed"}`);
    }
  };
  const onHangup = () => {
    if (reloading !== null) {
      again = true;
      return;
    }
    reloading = (async () => {
      do {
        again = false;
        await reload();
      } while (again);
      reloading = null;
    })();
  };
  process.on("SIGHUP", onHangup);
  // only now that this listener is in place: a moment with none would let the signal end the process
  if (hangups.stop()) onHangup();
  return () => process.off("SIGHUP", onHangup);
}

/**
 * Notes a SIGHUP that comes while the gateway starts, which would otherwise end the process
 * (Node's default): the reload then runs once the gateway serves.
 */
function holdHangups(): { stop(): boolean } {
  let hungUp = false;
  const note = () => {
    hungUp = true;
  };
  process.on("SIGHUP", note);
  return {
    stop() {
      process.off("SIGHUP", note);
      return hungUp;
    },
  };
}

function ignoreHangup(): void {}

/**
 * `stopped` resolves on the first SIGTERM or SIGINT. Later ones, until `dispose`, are taken
 * and let be: the shutdown is already under way and bounded by `shutdown.deadline_ms`, and
 * Node's default for them would end the process at once, its streams cut and their records
 * and charges lost (a double Ctrl-C; with --workers, the terminal's SIGINT and the primary's
 * SIGTERM reach every worker). SIGKILL still ends it.
 */
function watchStopSignals(io: CliIo): { stopped: Promise<"SIGTERM" | "SIGINT">; dispose(): void } {
  let signalled = false;
  let resolveStopped: (signal: "SIGTERM" | "SIGINT") => void = () => {};
  const stopped = new Promise<"SIGTERM" | "SIGINT">((resolve) => {
    resolveStopped = resolve;
  });
  const onSignal = (signal: "SIGTERM" | "SIGINT") => {
    if (!signalled) {
      signalled = true;
      resolveStopped(signal);
      return;
    }
    // a worker gets a terminal's SIGINT and its primary's SIGTERM for one Ctrl-C: no news there
    if (!cluster.isWorker)
      io.err("lethe: already shutting down (within shutdown.deadline_ms); SIGKILL ends it at once");
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  return {
    stopped,
    dispose() {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    },
  };
}

/**
 * `lethe serve`: runs the gateway until SIGTERM or SIGINT, then shuts down gracefully.
 * With `--workers N` (default: every CPU with PostgreSQL and Redis, one otherwise) a
 * primary forks N workers that share the port.
 */
export async function serveCommand(args: string[], io: CliIo): Promise<number> {
  const hangups = holdHangups();
  try {
    return await serve(args, io, hangups);
  } catch (error) {
    // a worker that cannot start (a config file gone bad since, the port, the database) would
    // be kept alive by its IPC channel, and its primary would wait on it for ever
    cluster.worker?.disconnect();
    throw error;
  } finally {
    hangups.stop();
  }
}

async function serve(args: string[], io: CliIo, hangups: { stop(): boolean }): Promise<number> {
  const { values, positionals } = parseCommand(args, { dev: { type: "boolean" }, workers: { type: "string" } });
  if (positionals.length > 0) throw new CliError(USAGE);
  // a process per core is the point; thousands of forks would take the machine down instead
  const asked = positiveInt(values.workers, "workers", MAX_WORKERS);
  const config = await loadConfig(io.env, typeof values.config === "string" ? values.config : undefined);
  if (!cluster.isWorker && (await secretDiffersFromGenerated(config.dataDir, config.secret))) {
    io.err(
      "lethe: warning: LETHE_SECRET differs from the secret generated in the data dir earlier: keys and operator tokens issued under that one will be refused",
    );
  }
  // a config file replaces the demo: one that names no model would serve nothing but 404s
  if (config.models.size === 0) {
    throw new CliError("the config file defines no models: add at least one under `models:` (see the README)");
  }
  if (!cluster.isWorker) {
    for (const warning of zdrWarnings(config)) io.err(`lethe: warning: ${warning}`);
    const mode = await writableByOthers(config.dataDir);
    if (mode !== null) {
      io.err(
        `lethe: warning: the data dir ${config.dataDir} is writable by other users (mode ${mode.toString(8)}): they could replace the server secret, the signing key or the database; make it owner-only (chmod 700)`,
      );
    }
    for (const { file, mode } of await privateFilesReadableByOthers(config.dataDir)) {
      io.err(
        `lethe: warning: ${file} in the data dir is readable by other users (mode ${mode.toString(8)}); make it owner-only (chmod 600)`,
      );
    }
  }
  // without Redis each worker counts rate limits in its own memory: N workers would admit
  // N times every account's limits, so more than one is only the default when they share them
  const shared = config.databaseUrl !== null && config.redisUrl !== null;
  const workers = asked ?? (shared ? os.availableParallelism() : 1);
  const log = createEventLog();
  await harden(io, log, values.dev === true);
  if (workers > 1 && config.redisUrl === null && cluster.isPrimary) {
    log.event("limits_per_worker", { workers });
  }

  if (workers > 1 && cluster.isPrimary) {
    await prepareStore(config);
    // the demo account, and its key shown once, only once a worker serves
    const primary = runPrimary(workers, log, config.shutdown.deadlineMs, (url) => {
      bootstrapDemoAccount(config).then(
        (firstStartKey) => printWelcome(io, config, url, workers, firstStartKey),
        () => printWelcome(io, config, url, workers, null),
      );
    });
    // the primary's own handler is in place (no moment without one, when the signal would end
    // the process); the workers read the config file as they start, so a hang-up before then
    // asks for nothing more
    hangups.stop();
    return primary;
  }
  const running = await startGateway(config, {
    log,
    bootstrapDemoAccount: !cluster.isWorker,
    developmentRun: values.dev === true,
  });
  const configFlag = typeof values.config === "string" ? values.config : undefined;
  const stopReloading = reloadOnHangup(io, configFlag, running, log, hangups);
  if (cluster.isWorker) announceListening(running.url);
  else printWelcome(io, config, running.url, 1, running.firstStartKey);
  const signals = watchStopSignals(io);
  log.event("server_stopping", { signal: await signals.stopped });
  // no reload while shutting down, and a hang-up then must not end the process before its flush
  process.on("SIGHUP", ignoreHangup);
  stopReloading();
  try {
    await running.close();
  } catch {
    // the shutdown ran out of time (it logged which step): what is left is lost, as on a crash,
    // and a connection still stuck on a silent database must not hold the exit for its timeout
    process.exit(1);
  } finally {
    signals.dispose();
  }
  // a worker's IPC channel to the primary would keep it alive after a clean shutdown
  cluster.worker?.disconnect();
  return 0;
}

/**
 * Models no ZDR-qualified supplier serves: every account requires ZDR unless told
 * otherwise, so their requests are refused (fail closed), which an operator should hear
 * at start rather than from customers.
 */
function zdrWarnings(config: LetheConfig): string[] {
  const warnings: string[] = [];
  for (const model of config.models.values()) {
    if (model.routes.some((route) => route.supplier.zdr)) continue;
    warnings.push(
      `model "${model.id}" has no ZDR supplier (zdr: true): accounts that require ZDR, the default, are refused it with 403 LETHE_ZDR_UNAVAILABLE`,
    );
  }
  return warnings;
}
