// The routing figure of issue 7: one model on two routes (priority), where the first
// route's supplier fails 20% of requests with a 503. Lethe falls over to the second
// route; the client should see every request succeed (target: 100%). Measured against
// the same model on two healthy routes: p50/p99 latency at 1 request in flight, and
// the success rate under load (20 connections).
//
// The breaker is held closed (a huge failure_threshold) so that every 503 costs a real
// fallback; with the default breaker the failing route would be skipped for a while and
// the figure would flatter Lethe.
//
// Usage: node bench/routing-bench.mjs [--strict]   (bench/run.mjs calls runRoutingBench at its end)
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { Pool } from "undici";
import {
  addDemoCredits,
  findFreePort,
  letheServeArgs,
  readFirstStartKey,
  spawnNode,
  stopAllChildren,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const HOST = "127.0.0.1";
const ENDPOINT = "/v1/chat/completions";
const FAILURE_RATE = 0.2;
const SETTINGS = { latencyRequests: 2000, warmupRequests: 300, loadConnections: 20, loadSeconds: 3 };
const ANSWER_TEXT = "Hello from the routing bench.";
// how long this bench's children get to exit after SIGTERM before SIGKILL (5 s here, 10 s in the other benches)
const STOP_GRACE_MS = 5_000;

// ---------------------------------------------------------------------------
// The fake supplier, run as a child process: `node bench/routing-bench.mjs --supplier RATE`.

const COMPLETION = Buffer.from(
  JSON.stringify({
    id: "chatcmpl-routing-bench",
    object: "chat.completion",
    created: 1_700_000_000,
    model: "fake-model",
    choices: [{ index: 0, message: { role: "assistant", content: ANSWER_TEXT }, finish_reason: "stop" }],
    usage: { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 },
  }),
);
const OVERLOADED = Buffer.from(JSON.stringify({ error: { message: "overloaded", type: "server_error" } }));

/** mulberry32: a seeded PRNG, so every run fails the same requests. */
function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/** An OpenAI-compatible supplier that answers at once and fails `failureRate` of requests with a 503. */
async function serveSupplier(failureRate) {
  const random = seededRandom(7);
  const server = createServer({ keepAliveTimeout: 60_000 }, (request, response) => {
    // the body is not needed, but must be read for the connection to be reused
    request.resume();
    request.on("end", () => {
      const failing = random() < failureRate;
      const body = failing ? OVERLOADED : COMPLETION;
      response.writeHead(failing ? 503 : 200, { "content-type": "application/json", "content-length": body.length });
      response.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, HOST, resolve));
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
}

// ---------------------------------------------------------------------------
// Child processes.

async function startSupplier(failureRate) {
  const child = spawnNode([fileURLToPath(import.meta.url), "--supplier", String(failureRate)]);
  return waitForPort(child);
}

/** Two models: `healthy` on two healthy suppliers, `flaky` on the failing one first, then a healthy one. */
function letheConfigYaml(ports) {
  const supplier = (id, port) => `  - id: ${id}
    type: openai
    base_url: http://${HOST}:${port}/v1
    api_key_env: BENCH_SUPPLIER_KEY
    zdr: true
`;
  const route = (id) => `      - supplier: ${id}
        model: fake-model
        price: { input_per_mtok: 0.10, output_per_mtok: 0.20 }
`;
  // rate limits far above what the bench sends, so every request is served (and still counted)
  return `limits:
  rpm: 1000000000
  tpm: 1000000000000
suppliers:
${supplier("healthy-1", ports.healthyOne)}${supplier("healthy-2", ports.healthyTwo)}${supplier("flaky", ports.flaky)}models:
  - id: healthy
    strategy: priority
    routes:
${route("healthy-1")}${route("healthy-2")}  - id: flaky
    strategy: priority
    routes:
${route("flaky")}${route("healthy-2")}routing:
  breaker: { failure_threshold: 1000000 }
`;
}

async function startLethe(workDir, ports) {
  const port = await findFreePort();
  const environment = await writeLetheSetup(workDir, letheConfigYaml(ports), port);
  const child = spawnNode(letheServeArgs(), { environment });
  const apiKey = await readFirstStartKey(child);
  addDemoCredits(environment);
  return { child, port, apiKey };
}

// ---------------------------------------------------------------------------
// Measuring.

function bodyFor(model) {
  return JSON.stringify({ model, messages: [{ role: "user", content: "Say hello." }], max_tokens: 16 });
}

/** One request: its latency in ms, whether the client got the right answer, and Lethe's attempt count. */
async function timeOneRequest(pool, body, headers) {
  const started = process.hrtime.bigint();
  const response = await pool.request({ method: "POST", path: ENDPOINT, headers, body });
  const text = await response.body.text();
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  const ok = response.statusCode === 200 && text.includes(ANSWER_TEXT);
  return { elapsedMs, ok, attempts: Number(response.headers["x-lethe-attempts"] ?? 0) };
}

function percentile(sorted, fraction) {
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * fraction) - 1)];
}

/** Interleaves the models request by request, so drift in the machine weighs on both alike. */
async function measureLatency(pool, headers, models, count) {
  const samples = Object.fromEntries(models.map((model) => [model, []]));
  const bodies = Object.fromEntries(models.map((model) => [model, bodyFor(model)]));
  for (let index = 0; index < count; index++) {
    for (const model of models) samples[model].push(await timeOneRequest(pool, bodies[model], headers));
  }
  return Object.fromEntries(
    models.map((model) => {
      const runs = samples[model];
      const sorted = runs.map((run) => run.elapsedMs).sort((a, b) => a - b);
      return [
        model,
        {
          requests: runs.length,
          successes: runs.filter((run) => run.ok).length,
          fallbacks: runs.filter((run) => run.attempts > 1).length,
          p50Ms: percentile(sorted, 0.5),
          p99Ms: percentile(sorted, 0.99),
        },
      ];
    }),
  );
}

/** The client-visible success rate with `connections` requests in flight. */
async function measureUnderLoad(origin, headers, model) {
  const result = await autocannon({
    url: `${origin}${ENDPOINT}`,
    method: "POST",
    headers,
    body: bodyFor(model),
    connections: SETTINGS.loadConnections,
    duration: SETTINGS.loadSeconds,
  });
  const total = result["2xx"] + result.non2xx + result.errors + result.timeouts;
  return { requests: total, successes: result["2xx"], requestsPerSecond: result.requests.average };
}

function line(mark, name, value, target = "") {
  return `${mark.padEnd(6)} ${name.padEnd(52)} ${value.padStart(12)}  ${target}`;
}

/** Runs the routing bench and prints its figures; with `strict`, a missed target sets a failing exit code. */
export async function runRoutingBench({ strict = false } = {}) {
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-routing-bench-"));
  let pool = null;
  try {
    const [healthyOne, healthyTwo, flaky] = await Promise.all([
      startSupplier(0),
      startSupplier(0),
      startSupplier(FAILURE_RATE),
    ]);
    const lethe = await startLethe(workDir, { healthyOne, healthyTwo, flaky });
    const origin = `http://${HOST}:${lethe.port}`;
    pool = new Pool(origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 });
    const headers = { "content-type": "application/json", authorization: `Bearer ${lethe.apiKey}` };

    process.stdout.write(
      `\nRouting bench (issue 7): model "flaky" = priority [supplier failing ${FAILURE_RATE * 100}% with 503, healthy]` +
        ` vs "healthy" = two healthy routes; ${SETTINGS.latencyRequests} requests each at 1 in flight, then ` +
        `${SETTINGS.loadSeconds} s at ${SETTINGS.loadConnections} connections\n`,
    );
    await measureLatency(pool, headers, ["healthy", "flaky"], SETTINGS.warmupRequests);
    const latency = await measureLatency(pool, headers, ["healthy", "flaky"], SETTINGS.latencyRequests);
    const load = await measureUnderLoad(origin, headers, "flaky");

    const { healthy, flaky: failing } = latency;
    const successRate = (failing.successes + load.successes) / (failing.requests + load.requests);
    const addedP99 = failing.p99Ms - healthy.p99Ms;
    const checks = [
      { name: "client-visible success rate, one route failing 20%", pass: successRate === 1 },
      { name: "healthy model answered every request", pass: healthy.successes === healthy.requests },
    ];
    const lines = [
      line(
        checks[0].pass ? "[PASS]" : "[FAIL]",
        checks[0].name,
        `${(successRate * 100).toFixed(3)} %`,
        "(target 100%)",
      ),
      line(
        checks[1].pass ? "[PASS]" : "[FAIL]",
        checks[1].name,
        `${healthy.successes}/${healthy.requests}`,
        "(sanity)",
      ),
      line(
        "[info]",
        "requests that needed a fallback (flaky)",
        `${((failing.fallbacks / failing.requests) * 100).toFixed(1)} %`,
      ),
      line("[info]", "latency p50 healthy / flaky", `${healthy.p50Ms.toFixed(3)} / ${failing.p50Ms.toFixed(3)} ms`),
      line("[info]", "latency p99 healthy / flaky", `${healthy.p99Ms.toFixed(3)} / ${failing.p99Ms.toFixed(3)} ms`),
      line("[info]", "added p99 latency (flaky - healthy)", `${addedP99.toFixed(3)} ms`),
      line(
        "[info]",
        `under load: ${load.requests} requests at ${SETTINGS.loadConnections} connections`,
        `${load.successes} ok`,
        `(${Math.round(load.requestsPerSecond)} req/s)`,
      ),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    if (strict && checks.some((check) => !check.pass)) process.exitCode = 1;
    return { latency, load, successRate, addedP99Ms: addedP99, checks };
  } finally {
    await pool?.close();
    await stopAllChildren(STOP_GRACE_MS);
    await rm(workDir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const supplierFlag = process.argv.indexOf("--supplier");
  if (supplierFlag !== -1) {
    await serveSupplier(Number(process.argv[supplierFlag + 1] ?? 0));
  } else {
    await runRoutingBench({ strict: process.argv.includes("--strict") }).catch((error) => {
      process.stderr.write(`routing bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
  }
}
