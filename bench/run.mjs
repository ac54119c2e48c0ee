// Lethe's benchmark (issue 2, "Figures"). It starts a fake supplier that answers
// instantly, a bare Node pass-through proxy and Lethe itself (auth, metering and
// billing on, the built dist/ via bin/lethe.js), each as its own child process,
// then measures all three interleaved in one run:
//
//   - requests/s at 50 connections (autocannon), non-streaming, round by round with
//     the order rotating, plus the CPU each target's own process spent per request;
//   - latency with 1 request in flight, alternating between the targets request by
//     request: full response (non-streaming) and time to the first body byte of a
//     stream, as p50/p99;
//   - Lethe's RSS after the run.
//
// It prints a table and the issue's targets as ratios against the direct figures of
// the same run, and writes everything to bench/results/latest.json. The machine's
// load average is printed with them: other work on a 2-core machine moves every
// figure, the ratios least.
//
// Usage: npm run bench [-- --cpu-prof] [-- --strict] [-- --core-only]
//   --cpu-prof  runs Lethe under `node --cpu-prof`; the profile lands in bench/results/profiles/
//   --strict    exits 1 when a target is missed (for CI)
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { Pool } from "undici";
import {
  addDemoCredits,
  coreBenchConfigYaml,
  findFreePort,
  killAllChildren,
  letheServeArgs,
  nodeFlagsFrom,
  readCpuMs,
  readFirstStartKey,
  readMemory,
  spawnNode,
  stopAllChildren,
  stopChild,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";
import { runBillingBench } from "./billing-bench.mjs";
import { runFormatsBench } from "./formats-bench.mjs";
import { runRoutingBench } from "./routing-bench.mjs";
import { runScaleBench } from "./scale-bench.mjs";
import { runStreamBench } from "./stream-bench.mjs";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS_DIR = path.join(REPO_ROOT, "bench", "results");
const HOST = "127.0.0.1";
const ENDPOINT = "/v1/chat/completions";
const MODEL_ID = "bench-model";
const EXPECTED_TEXT = "Hello from the fake supplier.";

const SETTINGS = {
  rounds: 3,
  throughputConnections: 50,
  throughputSeconds: 4,
  latencyRequestsPerRound: 1000,
  // a gateway runs warm: under load V8 keeps optimising Lethe's request path (and Node's and
  // undici's, which differ in shape between its server and client sockets) for about eight
  // seconds, about 100 TurboFan compilations and 15 deoptimisations per 3 s after the first
  // second (--trace-opt --trace-deopt), on background threads that take CPU from the
  // measured rounds; every target gets the same warm-up
  warmupSeconds: 8,
  warmupLatencyRequests: 300,
};

const TARGETS_OF_THE_ISSUE = {
  minThroughputRatio: 0.3,
  maxAddedP99Ms: 1,
  maxAddedTtfbMs: 1,
  maxRssMb: 150,
};

const flags = new Set(process.argv.slice(2));

// An interrupted run still ends its children (bench-processes.mjs kills them on "exit").
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killAllChildren();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------
// Starting the three processes.

async function startFakeSupplier() {
  const child = spawnNode(["bench/fake-supplier.mjs"], { name: "fake supplier" });
  return { child, port: await waitForPort(child) };
}

async function startBareProxy(supplierPort) {
  const child = spawnNode(["bench/bare-proxy.mjs", `http://${HOST}:${supplierPort}`], { name: "bare proxy" });
  return { child, port: await waitForPort(child) };
}

/** Starts `node bin/lethe.js serve` on a fresh data dir; resolves with its port and the first-start API key. */
async function startLethe(workDir, supplierPort) {
  const port = await findFreePort();
  const environment = await writeLetheSetup(workDir, coreBenchConfigYaml(supplierPort, MODEL_ID), port);
  // BENCH_LETHE_NODE_FLAGS tries V8 flags on Lethe alone (e.g. "--max-semi-space-size=4")
  const nodeFlags = nodeFlagsFrom("BENCH_LETHE_NODE_FLAGS");
  if (flags.has("--cpu-prof")) {
    nodeFlags.push("--cpu-prof", `--cpu-prof-dir=${path.join(RESULTS_DIR, "profiles")}`);
  }
  const child = spawnNode(letheServeArgs([], null, nodeFlags), { name: "Lethe", environment });
  const apiKey = await readFirstStartKey(child);
  addDemoCredits(environment);
  return { child, port, apiKey, environment };
}

/** Sums the REQUESTS column of `lethe usage`: proof that metering recorded the bench's requests. */
function countMeteredRequests(environment) {
  const usage = spawnSync(process.execPath, ["bin/lethe.js", "usage", "--account", "demo"], {
    cwd: REPO_ROOT,
    env: environment,
    encoding: "utf8",
  });
  if (usage.status !== 0) return null;
  const rows = usage.stdout.trim().split("\n").slice(1);
  return rows.reduce((total, row) => total + (Number(row.split("\t")[2]) || 0), 0);
}

// ---------------------------------------------------------------------------
// Requests: identical for every target, so only what sits in between differs.

function requestBodies() {
  const messages = [{ role: "user", content: "Say hello." }];
  return {
    json: JSON.stringify({ model: MODEL_ID, messages, max_tokens: 16 }),
    // include_usage makes the supplier's stream identical whether or not Lethe is in between
    // (Lethe always asks for usage upstream, to meter the stream)
    stream: JSON.stringify({
      model: MODEL_ID,
      messages,
      max_tokens: 16,
      stream: true,
      stream_options: { include_usage: true },
    }),
  };
}

function requestHeaders(apiKey) {
  return { "content-type": "application/json", authorization: `Bearer ${apiKey}` };
}

/** One request through a target before measuring: it must answer correctly, or the figures mean nothing. */
async function checkTarget(target, bodies, headers) {
  const json = await target.pool.request({ method: "POST", path: ENDPOINT, headers, body: bodies.json });
  const answer = await json.body.json();
  if (json.statusCode !== 200 || answer?.choices?.[0]?.message?.content !== EXPECTED_TEXT) {
    throw new Error(`${target.label}: unexpected answer (status ${json.statusCode})`);
  }
  const stream = await target.pool.request({ method: "POST", path: ENDPOINT, headers, body: bodies.stream });
  const text = await stream.body.text();
  if (stream.statusCode !== 200 || !text.includes("data: [DONE]") || !text.includes('"usage"')) {
    throw new Error(`${target.label}: unexpected stream (status ${stream.statusCode})`);
  }
  if (target.name === "lethe" && json.headers["x-lethe-zdr"] !== "enforced") {
    throw new Error("Lethe did not enforce ZDR on the bench model");
  }
}

/** Without a key Lethe must refuse: the bench measures Lethe with auth on. */
async function checkAuthIsOn(target, bodies) {
  const refused = await target.pool.request({
    method: "POST",
    path: ENDPOINT,
    headers: { "content-type": "application/json" },
    body: bodies.json,
  });
  await refused.body.dump();
  if (refused.statusCode !== 401) throw new Error(`Lethe answered ${refused.statusCode} without an API key`);
}

// ---------------------------------------------------------------------------
// Measurements.

function collectGarbage() {
  // the bench process itself must not pause for GC in the middle of a latency loop
  globalThis.gc?.();
}

/**
 * Requests per second at `connections` concurrent connections, non-streaming, and
 * the CPU the target's own process spent per request (the supplier's for direct,
 * the proxy's for the bare proxy and Lethe): where the machine's two cores go.
 */
async function measureThroughput(target, body, headers, seconds, connections) {
  collectGarbage();
  const cpuBefore = await readCpuMs(target.pid);
  const result = await autocannon({
    url: `${target.origin}${ENDPOINT}`,
    method: "POST",
    headers,
    body,
    connections,
    duration: seconds,
  });
  const cpuMs = (await readCpuMs(target.pid)) - cpuBefore;
  return {
    requestsPerSecond: result.requests.average,
    requests: result.requests.total,
    cpuMicrosPerRequest: (cpuMs * 1000) / Math.max(1, result.requests.total),
    failures: result.errors + result.timeouts + result.non2xx,
  };
}

/** Times one request: ms to the end of the body, or (`firstByte`) to its first chunk, a stream's time to first byte. */
async function timeOneRequest(pool, body, headers, firstByte) {
  const startedAt = process.hrtime.bigint();
  const response = await pool.request({ method: "POST", path: ENDPOINT, headers, body });
  let firstChunkAt = null;
  for await (const _chunk of response.body) firstChunkAt ??= process.hrtime.bigint();
  const endedAt = process.hrtime.bigint();
  if (response.statusCode !== 200) throw new Error(`latency loop: status ${response.statusCode}`);
  return Number((firstByte ? firstChunkAt : endedAt) - startedAt) / 1e6;
}

/**
 * Sends `count` requests to every target with exactly one in flight, alternating
 * between the targets request by request: a burst of noise from the rest of the
 * machine then hits all of them alike, not whichever one was being measured at the
 * time. Returns each target's latencies in ms, in the order of `targets`.
 */
async function measureLatency(targets, body, headers, count, firstByte) {
  collectGarbage();
  const samples = targets.map(() => new Float64Array(count));
  for (let index = 0; index < count; index++) {
    for (let position = 0; position < targets.length; position++) {
      samples[position][index] = await timeOneRequest(targets[position].pool, body, headers, firstByte);
    }
  }
  return samples;
}

function percentile(sorted, fraction) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))];
}

function summarise(sampleSets) {
  const all = new Float64Array(sampleSets.reduce((total, samples) => total + samples.length, 0));
  let offset = 0;
  for (const samples of sampleSets) {
    all.set(samples, offset);
    offset += samples.length;
  }
  all.sort();
  return { samples: all.length, p50Ms: percentile(all, 0.5), p99Ms: percentile(all, 0.99) };
}

/** Short unrecorded runs against every target, so each is JIT-warm and has its connections open. */
async function warmUp(targets, bodies, headers) {
  for (const target of targets) {
    await measureThroughput(target, bodies.json, headers, SETTINGS.warmupSeconds, SETTINGS.throughputConnections);
  }
  await measureLatency(targets, bodies.json, headers, SETTINGS.warmupLatencyRequests, false);
  await measureLatency(targets, bodies.stream, headers, SETTINGS.warmupLatencyRequests, true);
}

/**
 * One round: the throughput of every target in turn (the order rotates per round,
 * so none always goes first), then the latencies of all of them, interleaved.
 */
async function runRound(round, targets, bodies, headers) {
  const order = targets.map((_, index) => targets[(index + round) % targets.length]);
  for (const target of order) {
    const throughput = await measureThroughput(
      target,
      bodies.json,
      headers,
      SETTINGS.throughputSeconds,
      SETTINGS.throughputConnections,
    );
    target.throughputRuns.push(throughput);
    process.stdout.write(
      `  round ${round + 1}: ${target.label.padEnd(24)} ${Math.round(throughput.requestsPerSecond)} req/s\n`,
    );
  }
  const latencies = await measureLatency(targets, bodies.json, headers, SETTINGS.latencyRequestsPerRound, false);
  const ttfbs = await measureLatency(targets, bodies.stream, headers, SETTINGS.latencyRequestsPerRound, true);
  targets.forEach((target, position) => {
    target.latencySamples.push(latencies[position]);
    target.ttfbSamples.push(ttfbs[position]);
  });
}

// ---------------------------------------------------------------------------
// Results.

function targetResult(target) {
  const runs = target.throughputRuns;
  return {
    label: target.label,
    requestsPerSecond: runs.reduce((total, run) => total + run.requestsPerSecond, 0) / runs.length,
    requestsPerSecondPerRound: runs.map((run) => run.requestsPerSecond),
    cpuMicrosPerRequest: runs.reduce((total, run) => total + run.cpuMicrosPerRequest, 0) / runs.length,
    failedRequests: runs.reduce((total, run) => total + run.failures, 0),
    latency: summarise(target.latencySamples),
    ttfb: summarise(target.ttfbSamples),
  };
}

function check(name, value, unit, passes, target) {
  return { name, value, unit, target, pass: passes };
}

/** The issue's targets, as ratios or differences against the direct figures of this same run. */
function evaluate(direct, bare, lethe, letheMemory) {
  const rssMb = letheMemory.rssBytes / 1024 / 1024;
  const added = (metric, statistic) => lethe[metric][statistic] - direct[metric][statistic];
  const limits = TARGETS_OF_THE_ISSUE;
  return [
    check(
      "throughput Lethe / direct",
      lethe.requestsPerSecond / direct.requestsPerSecond,
      "x",
      lethe.requestsPerSecond / direct.requestsPerSecond >= limits.minThroughputRatio,
      `>= ${limits.minThroughputRatio}`,
    ),
    check("throughput Lethe / bare proxy", lethe.requestsPerSecond / bare.requestsPerSecond, "x", null, "info"),
    check("throughput bare proxy / direct", bare.requestsPerSecond / direct.requestsPerSecond, "x", null, "info"),
    check("added latency p50 (Lethe - direct)", added("latency", "p50Ms"), "ms", null, "info"),
    check(
      "added latency p99 (Lethe - direct)",
      added("latency", "p99Ms"),
      "ms",
      added("latency", "p99Ms") < limits.maxAddedP99Ms,
      `< ${limits.maxAddedP99Ms} ms`,
    ),
    check(
      "added stream TTFB p50 (Lethe - direct)",
      added("ttfb", "p50Ms"),
      "ms",
      added("ttfb", "p50Ms") < limits.maxAddedTtfbMs,
      `< ${limits.maxAddedTtfbMs} ms`,
    ),
    check(
      "added stream TTFB p99 (Lethe - direct)",
      added("ttfb", "p99Ms"),
      "ms",
      added("ttfb", "p99Ms") < limits.maxAddedTtfbMs,
      `< ${limits.maxAddedTtfbMs} ms`,
    ),
    check("Lethe RSS after the run", rssMb, "MB", rssMb < limits.maxRssMb, `< ${limits.maxRssMb} MB`),
  ];
}

function formatNumber(value, decimals) {
  return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

function printTable(results, bare) {
  const columns = ["target", "req/s @50", "CPU µs/req", "p50 ms", "p99 ms", "TTFB p50 ms", "TTFB p99 ms", "failed"];
  const widths = [26, 11, 11, 9, 9, 12, 12, 7];
  const row = (cells) =>
    cells.map((cell, index) => (index === 0 ? cell.padEnd(widths[0]) : cell.padStart(widths[index]))).join(" ");
  const lines = [row(columns), row(widths.map((width) => "-".repeat(width)))];
  for (const result of results) {
    lines.push(
      row([
        result.label,
        formatNumber(result.requestsPerSecond, 0),
        formatNumber(result.cpuMicrosPerRequest, 0),
        formatNumber(result.latency.p50Ms, 3),
        formatNumber(result.latency.p99Ms, 3),
        formatNumber(result.ttfb.p50Ms, 3),
        formatNumber(result.ttfb.p99Ms, 3),
        String(result.failedRequests),
      ]),
    );
  }
  const direct = results[0];
  lines.push(
    "",
    "CPU µs/req: CPU time of the target's own process per request in the 50-connection runs",
    "(direct: the fake supplier; bare proxy and Lethe: the proxy alone, without the supplier behind it)",
    `bare proxy adds: latency p50 ${formatNumber(bare.latency.p50Ms - direct.latency.p50Ms, 3)} ms, ` +
      `p99 ${formatNumber(bare.latency.p99Ms - direct.latency.p99Ms, 3)} ms; ` +
      `stream TTFB p50 ${formatNumber(bare.ttfb.p50Ms - direct.ttfb.p50Ms, 3)} ms, ` +
      `p99 ${formatNumber(bare.ttfb.p99Ms - direct.ttfb.p99Ms, 3)} ms`,
  );
  lines.push(
    `req/s per round: ${results.map((result) => `${result.label} ${result.requestsPerSecondPerRound.map((value) => Math.round(value)).join("/")}`).join("; ")}`,
  );
  process.stdout.write(`\n${lines.join("\n")}\n`);
}

function printChecks(checks) {
  const lines = checks.map((item) => {
    const mark = item.pass === null ? "[info]" : item.pass ? "[PASS]" : "[FAIL]";
    const value =
      `${formatNumber(item.value, item.unit === "MB" ? 1 : 3)} ${item.unit === "x" ? "" : item.unit}`.trim();
    const target = item.pass === null ? "" : `(target ${item.target})`;
    return `${mark} ${item.name.padEnd(40)} ${value.padStart(10)}  ${target}`;
  });
  process.stdout.write(`\nTargets (issue 2), from this one run:\n${lines.join("\n")}\n`);
}

async function writeResults(report) {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, "latest.json");
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  return file;
}

// ---------------------------------------------------------------------------

async function main() {
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-bench-"));
  const pools = [];
  try {
    const supplier = await startFakeSupplier();
    const bareProxy = await startBareProxy(supplier.port);
    const lethe = await startLethe(workDir, supplier.port);
    const makeTarget = (name, label, port, pid) => {
      const origin = `http://${HOST}:${port}`;
      // one keep-alive connection: the latency loops measure with exactly 1 request in flight
      const pool = new Pool(origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 });
      pools.push(pool);
      return { name, label, origin, pid, pool, throughputRuns: [], latencySamples: [], ttfbSamples: [] };
    };
    const targets = [
      makeTarget("direct", "direct to supplier", supplier.port, supplier.child.pid),
      makeTarget("bare-proxy", "bare Node proxy", bareProxy.port, bareProxy.child.pid),
      makeTarget("lethe", "Lethe (auth, metering)", lethe.port, lethe.child.pid),
    ];
    const bodies = requestBodies();
    const headers = requestHeaders(lethe.apiKey);
    for (const target of targets) await checkTarget(target, bodies, headers);
    await checkAuthIsOn(targets[2], bodies);

    const loadAverage = os.loadavg()[0];
    process.stdout.write(
      `Lethe bench: node ${process.version}, ${os.cpus().length} CPUs (load average ${loadAverage.toFixed(2)} before the run), ${SETTINGS.rounds} rounds of ` +
        `${SETTINGS.throughputSeconds} s at ${SETTINGS.throughputConnections} connections + ` +
        `${SETTINGS.latencyRequestsPerRound} requests per target at 1 in flight, interleaved (non-streaming and streaming)\n`,
    );
    await warmUp(targets, bodies, headers);
    for (let round = 0; round < SETTINGS.rounds; round++) await runRound(round, targets, bodies, headers);

    const letheMemory = await readMemory(lethe.child.pid);
    const [direct, bare, letheResult] = targets.map(targetResult);
    await stopChild(lethe.child);
    const meteredRequests = countMeteredRequests(lethe.environment);
    const checks = evaluate(direct, bare, letheResult, letheMemory);

    printTable([direct, bare, letheResult], bare);
    process.stdout.write(
      `\nLethe RSS after the run ${formatNumber(letheMemory.rssBytes / 1048576, 1)} MB ` +
        `(peak ${formatNumber(letheMemory.peakRssBytes / 1048576, 1)} MB); metered requests recorded: ${meteredRequests ?? "unknown"}\n`,
    );
    printChecks(checks);
    const file = await writeResults({
      generatedAt: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? null,
      loadAverageBefore: loadAverage,
      settings: SETTINGS,
      targets: { direct, bareProxy: bare, lethe: letheResult },
      lethe: { ...letheMemory, meteredRequests },
      checks,
    });
    process.stdout.write(`\nResults written to ${path.relative(REPO_ROOT, file)}\n`);
    if (flags.has("--strict") && checks.some((item) => item.pass === false)) process.exitCode = 1;
  } finally {
    await Promise.all(pools.map((pool) => pool.close()));
    await stopAllChildren(2_000);
    await rm(workDir, { recursive: true, force: true });
  }
}

// --core-only stops after issue 2's figures (quick iterations on the hot path)
const more = (run) => () => (flags.has("--core-only") ? undefined : run({ strict: flags.has("--strict") }));

main()
  // issue 7's routing figure, in its own file: it starts its own suppliers and Lethe
  .then(more(runRoutingBench))
  // issue 5's billing figure: credits and rate limits on against off, in one Lethe
  .then(more(runBillingBench))
  // issue 6's scale-out figures: --workers 2 on PostgreSQL against --workers 1 on SQLite, records lost
  .then(more(runScaleBench))
  // issue 3's wire-format figures: the Anthropic surface and the translated paths against OpenAI-native
  .then(more(runFormatsBench))
  // long streams: CPU an event and small requests' latency beside them, against the bare proxy
  .then(more(() => runStreamBench()))
  .catch((error) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
    killAllChildren();
    process.exitCode = 1;
  });
