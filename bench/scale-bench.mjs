// The scale-out figures of issue 6, against the machine's PostgreSQL and Redis:
//
//   - throughput (requests/s at 50 connections, non-streaming, priced so billing is
//     on) of `lethe serve --workers 2` on PostgreSQL + Redis, as a ratio to
//     `lethe serve --workers 1` on the embedded SQLite store;
//   - metadata rows written per second on PostgreSQL during that run;
//   - records lost when the primary gets SIGTERM under load (target 0), and when a
//     worker is killed with SIGKILL under load (reported; target: at most one flush
//     interval's worth).
//
// Each PostgreSQL run gets a fresh schema and a fresh Redis prefix, dropped at the end.
// The load generator runs in this process, on the same machine: on a 2-core machine
// it takes CPU from the workers, so the ratio is a floor.
//
// Usage: node bench/scale-bench.mjs [--strict]   (bench/run.mjs calls runScaleBench at its end)
// LETHE_BENCH_POSTGRES_URL and LETHE_BENCH_REDIS_URL override the local servers.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { Redis } from "ioredis";
import pg from "pg";
import { Pool } from "undici";
import {
  findApiKey,
  findFreePort,
  letheServeArgs,
  spawnNode,
  stopAllChildren,
  stopChild as stopProcess,
  waitForLine,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const HOST = "127.0.0.1";
const ENDPOINT = "/v1/chat/completions";
const POSTGRES_URL = process.env.LETHE_BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL = process.env.LETHE_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const SECRET = "scale-bench-secret-0123456789abcdef";
const FLUSH_INTERVAL_MS = 250;
const SETTINGS = { connections: 50, warmupSeconds: 1, throughputSeconds: 5, lossConnections: 16, lossLoadMs: 1500 };
const BODY = JSON.stringify({
  model: "bench-model",
  messages: [{ role: "user", content: "Say hello." }],
  max_tokens: 16,
});

// ---------------------------------------------------------------------------
// Child processes.

// a cluster of workers takes longer to start, and up to its 10 s shutdown deadline to stop
const READY_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 20_000;

/** Spawns a child whose failure report holds its stdout too, so a cluster that never gets ready shows how far it got. */
function spawnChild(args, environment) {
  return spawnNode(args, { environment, stdoutInTail: true });
}

/** Sends `signal` and resolves with the exit code (SIGKILL after 20 s). */
function stopChild(child, signal = "SIGTERM") {
  return stopProcess(child, { signal, graceMs: STOP_GRACE_MS });
}

/** The children (cluster workers) of `pid`. */
async function workerPids(pid) {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

// ---------------------------------------------------------------------------
// Lethe.

function configYaml(supplierPort) {
  return `suppliers:
  - id: bench-supplier
    type: openai
    base_url: http://${HOST}:${supplierPort}/v1
    api_key_env: BENCH_SUPPLIER_KEY
    zdr: true
models:
  - id: bench-model
    routes:
      - supplier: bench-supplier
        model: fake-model
        price: { input_per_mtok: 0.10, output_per_mtok: 0.20 }
limits:
  rpm: 1000000000
  tpm: 1000000000000
metering:
  flush_interval_ms: ${FLUSH_INTERVAL_MS}
shutdown:
  deadline_ms: 10000
`;
}

/** Runs a `lethe` CLI command and returns what it printed; throws on a non-zero exit. */
function cli(args, environment) {
  const result = spawnSync(process.execPath, ["bin/lethe.js", ...args], {
    cwd: REPO_ROOT,
    env: environment,
    encoding: "utf8",
  });
  if (result.status !== 0) throw new Error(`lethe ${args[0]} failed: ${result.stderr.trim()}`);
  return result.stdout;
}

/** Prepares a deployment: its environment, and an account with credit and a key made through the CLI. */
async function prepare(workDir, name, supplierPort, shared) {
  const dir = path.join(workDir, name);
  await mkdir(dir, { recursive: true });
  const port = await findFreePort();
  const environment = await writeLetheSetup(dir, configYaml(supplierPort), port, { LETHE_SECRET: SECRET, ...shared });
  cli(["accounts", "create", "bench", "--credits", "1000000"], environment);
  const key = findApiKey(cli(["keys", "create", "--account", "bench"], environment));
  if (key === undefined) throw new Error("lethe keys create printed no key");
  return { environment, key, origin: `http://${HOST}:${environment.LETHE_PORT}` };
}

async function startServe(deployment, workers) {
  const child = spawnChild(letheServeArgs(["--workers", String(workers)]), deployment.environment);
  await waitForLine(child, (line) => line.includes("Lethe is listening on"), READY_TIMEOUT_MS);
  return child;
}

// ---------------------------------------------------------------------------
// Measuring.

function headersFor(key) {
  return { "content-type": "application/json", authorization: `Bearer ${key}` };
}

async function throughput(deployment, seconds) {
  const result = await autocannon({
    url: `${deployment.origin}${ENDPOINT}`,
    method: "POST",
    headers: headersFor(deployment.key),
    body: BODY,
    connections: SETTINGS.connections,
    duration: seconds,
  });
  return { requestsPerSecond: result.requests.average, ok: result["2xx"], failed: result.non2xx + result.errors };
}

/**
 * Keeps `connections` clients sending until `stop()`; returns the request ids of every
 * answer the clients saw (200), with the time each arrived.
 */
function trackedLoad(deployment, connections) {
  const answered = [];
  let running = true;
  let broken = 0;
  const headers = headersFor(deployment.key);
  const client = async () => {
    while (running) {
      // a fresh pool per connection, so a broken one (a killed worker) does not stop the others
      const pool = new Pool(deployment.origin, { connections: 1, pipelining: 1 });
      try {
        while (running) {
          const response = await pool.request({ method: "POST", path: ENDPOINT, headers, body: BODY });
          await response.body.text();
          if (response.statusCode === 200) answered.push({ id: response.headers["x-request-id"], at: Date.now() });
        }
      } catch {
        broken++;
        // refused while the port closes: a short pause, or the retries would take the CPU the shutdown needs
        await new Promise((resolve) => setTimeout(resolve, 20));
      } finally {
        await pool.destroy();
      }
    }
  };
  const clients = Array.from({ length: connections }, client);
  return {
    answered,
    get broken() {
      return broken;
    },
    async stop() {
      running = false;
      await Promise.all(clients);
    },
  };
}

async function withPostgres(work) {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function countRows(schema, ids = null) {
  return withPostgres(async (client) => {
    const result =
      ids === null
        ? await client.query(`SELECT count(*)::int AS count FROM ${schema}.request_metadata`)
        : await client.query(
            `SELECT count(*)::int AS count FROM ${schema}.request_metadata WHERE request_id = ANY($1)`,
            [ids],
          );
    return result.rows[0].count;
  });
}

async function countDebits(schema, ids) {
  return withPostgres(async (client) => {
    const result = await client.query(
      `SELECT count(*)::int AS count FROM ${schema}.ledger_entries WHERE kind = 'debit' AND request_id = ANY($1)`,
      [ids],
    );
    return result.rows[0].count;
  });
}

async function deleteRedisKeys(prefix) {
  const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}

/** Polls `check` every 50 ms until it holds or `timeoutMs` passes; resolves with whether it held. */
async function eventually(check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

function line(mark, name, value, target = "") {
  return `${mark.padEnd(6)} ${name.padEnd(58)} ${String(value).padStart(14)}  ${target}`;
}

/** Runs the scale-out bench and prints its figures; with `strict`, a missed target sets a failing exit code. */
export async function runScaleBench({ strict = false } = {}) {
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-scale-bench-"));
  const schema = `lethe_bench_${randomBytes(5).toString("hex")}`;
  const prefix = `lethe_bench_${randomBytes(5).toString("hex")}:`;
  try {
    const supplier = spawnChild(["bench/fake-supplier.mjs"], process.env);
    const supplierPort = await waitForPort(supplier, READY_TIMEOUT_MS);
    process.stdout.write(
      `\nScale-out bench (issue 6): ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(2)}; ` +
        `${SETTINGS.throughputSeconds} s at ${SETTINGS.connections} connections per target, load generator on the same machine\n`,
    );

    // 1. one worker on SQLite
    const sqlite = await prepare(workDir, "sqlite", supplierPort, {});
    let serve = await startServe(sqlite, 1);
    await throughput(sqlite, SETTINGS.warmupSeconds);
    const single = await throughput(sqlite, SETTINGS.throughputSeconds);
    await stopChild(serve);

    // 2. two workers on PostgreSQL and Redis, with the metadata rows they wrote
    const postgres = await prepare(workDir, "postgres", supplierPort, {
      LETHE_DATABASE_URL: `${POSTGRES_URL}?schema=${schema}`,
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: prefix,
    });
    // for context: one worker on PostgreSQL separates the store's cost from the cluster's gain
    serve = await startServe(postgres, 1);
    await throughput(postgres, SETTINGS.warmupSeconds);
    const postgresSingle = await throughput(postgres, SETTINGS.throughputSeconds);
    await stopChild(serve);
    serve = await startServe(postgres, 2);
    await throughput(postgres, SETTINGS.warmupSeconds);
    const rowsBefore = await countRows(schema);
    const started = Date.now();
    const clustered = await throughput(postgres, SETTINGS.throughputSeconds);
    // rows land within a flush interval of their answers
    let rowsAfter = rowsBefore;
    await eventually(async () => {
      rowsAfter = await countRows(schema);
      return rowsAfter - rowsBefore >= clustered.ok;
    }, 5_000);
    const rowsPerSecond = (rowsAfter - rowsBefore) / ((Date.now() - started) / 1000);

    // 3. SIGTERM to the primary under load: every answered request must have its row and debit
    const sigtermLoad = trackedLoad(postgres, SETTINGS.lossConnections);
    await eventually(async () => sigtermLoad.answered.length >= 500, SETTINGS.lossLoadMs * 4);
    const sigtermCode = await stopChild(serve, "SIGTERM");
    await sigtermLoad.stop();
    const sigtermIds = sigtermLoad.answered.map((answer) => answer.id);
    const sigtermLost = sigtermIds.length - (await countRows(schema, sigtermIds));
    const sigtermLostDebits = sigtermIds.length - (await countDebits(schema, sigtermIds));

    // 4. SIGKILL of one worker under load: the primary replaces it; what it had buffered is lost
    serve = await startServe(postgres, 2);
    const killLoad = trackedLoad(postgres, SETTINGS.lossConnections);
    await eventually(async () => killLoad.answered.length >= 500, SETTINGS.lossLoadMs * 4);
    const [victim] = await workerPids(serve.pid);
    const killedAt = Date.now();
    process.kill(victim, "SIGKILL");
    const replaced = await eventually(async () => {
      const pids = await workerPids(serve.pid);
      return pids.length === 2 && !pids.includes(victim);
    }, 10_000);
    const atReplacement = killLoad.answered.length;
    await eventually(async () => killLoad.answered.length >= atReplacement + 500, SETTINGS.lossLoadMs * 4);
    await killLoad.stop();
    await stopChild(serve, "SIGTERM");
    const killIds = killLoad.answered.map((answer) => answer.id);
    const killLost = killIds.length - (await countRows(schema, killIds));
    const killLostDebits = killIds.length - (await countDebits(schema, killIds));
    const inLastInterval = killLoad.answered.filter(
      (answer) => answer.at >= killedAt - FLUSH_INTERVAL_MS && answer.at <= killedAt,
    ).length;
    await stopChild(supplier);

    const ratio = clustered.requestsPerSecond / single.requestsPerSecond;
    const checks = [
      { name: "records lost on SIGTERM under load", pass: sigtermLost === 0 && sigtermLostDebits === 0 },
      { name: "SIGTERM exit code", pass: sigtermCode === 0 },
      { name: "killed worker replaced", pass: replaced },
      { name: "kill -9 loss within one flush interval's answers", pass: killLost <= inLastInterval },
    ];
    const mark = (pass) => (pass ? "[PASS]" : "[FAIL]");
    const lines = [
      line(
        "[info]",
        "--workers 1, SQLite: requests/s",
        Math.round(single.requestsPerSecond),
        `(${single.failed} failed)`,
      ),
      line(
        "[info]",
        "--workers 1, PostgreSQL + Redis: requests/s (context)",
        Math.round(postgresSingle.requestsPerSecond),
        `(${postgresSingle.failed} failed)`,
      ),
      line(
        "[info]",
        "--workers 2, PostgreSQL + Redis: requests/s",
        Math.round(clustered.requestsPerSecond),
        `(${clustered.failed} failed)`,
      ),
      line("[info]", "throughput ratio (workers 2 PostgreSQL / workers 1 SQLite)", `${ratio.toFixed(2)}x`),
      line("[info]", "metadata rows written per second (PostgreSQL)", Math.round(rowsPerSecond)),
      line(
        mark(checks[0].pass),
        `SIGTERM under load: records / debits lost of ${sigtermIds.length} answered`,
        `${sigtermLost} / ${sigtermLostDebits}`,
        "(target 0)",
      ),
      line(
        mark(checks[3].pass && checks[2].pass),
        `kill -9 of a worker: records / debits lost of ${killIds.length} answered`,
        `${killLost} / ${killLostDebits}`,
        `(target <= ${inLastInterval}, answered in the last ${FLUSH_INTERVAL_MS} ms)`,
      ),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    const results = {
      generatedAt: new Date().toISOString(),
      cpus: os.cpus().length,
      settings: { ...SETTINGS, flushIntervalMs: FLUSH_INTERVAL_MS },
      sqliteWorkers1: single,
      postgresWorkers1: postgresSingle,
      postgresWorkers2: clustered,
      throughputRatio: ratio,
      metadataRowsPerSecond: rowsPerSecond,
      sigterm: {
        answered: sigtermIds.length,
        recordsLost: sigtermLost,
        debitsLost: sigtermLostDebits,
        exitCode: sigtermCode,
      },
      kill9: {
        answered: killIds.length,
        recordsLost: killLost,
        debitsLost: killLostDebits,
        answeredInLastFlushInterval: inLastInterval,
        replaced,
      },
      checks,
    };
    await mkdir(path.join(REPO_ROOT, "bench", "results"), { recursive: true });
    await writeFile(
      path.join(REPO_ROOT, "bench", "results", "scale-latest.json"),
      `${JSON.stringify(results, null, 2)}\n`,
    );
    if (strict && checks.some((check) => !check.pass)) process.exitCode = 1;
    return results;
  } finally {
    await stopAllChildren(STOP_GRACE_MS);
    await withPostgres((client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)).catch(() => {});
    await deleteRedisKeys(prefix).catch(() => {});
    await rm(workDir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  runScaleBench({ strict: process.argv.includes("--strict") }).catch((error) => {
    process.stderr.write(`scale bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
