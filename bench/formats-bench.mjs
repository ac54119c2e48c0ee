import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { Pool } from "undici";
import {
  findFreePort,
  letheServeArgs,
  readCpuMs,
  readFirstStartKey,
  spawnNode,
  stopAllChildren,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const HOST = "127.0.0.1";
const EXPECTED_TEXT = "Hello from the fake supplier.";
const SUPPLIER_KEY = "sk-fake-supplier-key";
const ANTHROPIC_VERSION = "2023-06-01";
const SETTINGS = {
  // one round per path: with the order rotating, each path runs first (the slowest slot) exactly once
  rounds: 4,
  connections: 50,
  seconds: 2, // autocannon counts whole seconds
  warmupSeconds: 1,
  // a p99 of 1000 samples rests on its 10 slowest: fewer and it is one unlucky scheduler tick
  ttfbSamples: 1000,
  ttfbWarmupSamples: 100,
};
const TARGETS = { nativeRatio: 0.9, translatedRatio: 0.75, maxAddedTtfbMs: 1 };

// ---------------------------------------------------------------------------
// The fake supplier and Lethe.

async function startSupplier() {
  const child = spawnNode(["bench/fake-supplier.mjs"]);
  return { child, port: await waitForPort(child) };
}

/** Two ZDR suppliers on the one fake (its /v1 in OpenAI's format, its base URL in Anthropic's), a free model on each. */
function letheConfigYaml(supplierPort) {
  return `limits:
  rpm: 1000000000
  tpm: 1000000000000
suppliers:
  - id: fake-openai
    type: openai
    base_url: http://${HOST}:${supplierPort}/v1
    api_key_env: BENCH_SUPPLIER_KEY
    zdr: true
  - id: fake-anthropic
    type: anthropic
    base_url: http://${HOST}:${supplierPort}
    api_key_env: BENCH_SUPPLIER_KEY
    zdr: true
models:
  - id: via-openai
    routes:
      - supplier: fake-openai
        model: fake-model
  - id: via-anthropic
    routes:
      - supplier: fake-anthropic
        model: fake-anthropic-model
`;
}

async function startLethe(workDir, supplierPort) {
  const port = await findFreePort();
  const environment = await writeLetheSetup(workDir, letheConfigYaml(supplierPort), port, {
    BENCH_SUPPLIER_KEY: SUPPLIER_KEY,
  });
  const child = spawnNode(letheServeArgs(), { environment });
  const apiKey = await readFirstStartKey(child);
  return { child, port, apiKey };
}

// ---------------------------------------------------------------------------
// The two client formats: endpoint, headers, bodies, and how to read the answer's text.

const MESSAGES = [{ role: "user", content: "Say hello." }];

const CLIENT_FORMATS = {
  openai: {
    endpoint: "/v1/chat/completions",
    headers: (key) => ({ "content-type": "application/json", authorization: `Bearer ${key}` }),
    json: (model) => JSON.stringify({ model, messages: MESSAGES, max_tokens: 16 }),
    // include_usage makes the supplier's stream the same whether or not Lethe is in between
    // (Lethe always asks for usage upstream, to meter the stream)
    stream: (model) =>
      JSON.stringify({
        model,
        messages: MESSAGES,
        max_tokens: 16,
        stream: true,
        stream_options: { include_usage: true },
      }),
    textOf: (answer) => answer?.choices?.[0]?.message?.content,
    /** The text of an OpenAI stream, or null when it is not a complete one with usage. */
    streamTextOf(sse) {
      if (!sse.includes("data: [DONE]") || !sse.includes('"usage"')) return null;
      let text = "";
      for (const line of sse.split("\n")) {
        if (!line.startsWith("data: {")) continue;
        text += JSON.parse(line.slice(6)).choices?.[0]?.delta?.content ?? "";
      }
      return text;
    },
  },
  anthropic: {
    endpoint: "/v1/messages",
    headers: (key) => ({
      "content-type": "application/json",
      "x-api-key": key,
      "anthropic-version": ANTHROPIC_VERSION,
    }),
    json: (model) => JSON.stringify({ model, max_tokens: 16, messages: MESSAGES }),
    stream: (model) => JSON.stringify({ model, max_tokens: 16, messages: MESSAGES, stream: true }),
    textOf: (answer) => (answer?.type === "message" ? answer.content?.[0]?.text : undefined),
    /** The text of an Anthropic stream, or null when it does not run from message_start to message_stop with usage. */
    streamTextOf(sse) {
      if (!sse.startsWith("event: message_start\n") || !sse.includes("event: message_stop\n")) return null;
      let text = "";
      let usage = null;
      for (const line of sse.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = JSON.parse(line.slice(6));
        if (data.type === "content_block_delta" && data.delta?.type === "text_delta") text += data.delta.text;
        if (data.type === "message_delta") usage = data.usage;
      }
      return usage?.output_tokens > 0 ? text : null;
    },
  },
};

const PATHS = [
  { name: "openai-openai", label: "OpenAI → OpenAI", client: "openai", supplier: "openai", model: "via-openai" },
  {
    name: "anthropic-anthropic",
    label: "Anthropic → Anthropic",
    client: "anthropic",
    supplier: "anthropic",
    model: "via-anthropic",
  },
  {
    name: "openai-anthropic",
    label: "OpenAI → Anthropic",
    client: "openai",
    supplier: "anthropic",
    model: "via-anthropic",
  },
  {
    name: "anthropic-openai",
    label: "Anthropic → OpenAI",
    client: "anthropic",
    supplier: "openai",
    model: "via-openai",
  },
];

/** A pool of one keep-alive connection per target: the TTFB loop has exactly one request in flight. */
function makeTarget(pools, { name, label, client, supplier, model, origin, apiKey, viaLethe }) {
  const format = CLIENT_FORMATS[client];
  const pool = new Pool(origin, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 });
  pools.push(pool);
  return {
    name,
    label,
    client,
    supplier,
    viaLethe,
    origin,
    pool,
    endpoint: format.endpoint,
    headers: format.headers(apiKey),
    jsonBody: format.json(model),
    streamBody: format.stream(model),
    runs: [],
    ttfb: [],
  };
}

/** One request of each kind before measuring: the answer must be right, or the figures mean nothing. */
async function checkTarget(target) {
  const format = CLIENT_FORMATS[target.client];
  const json = await target.pool.request({
    method: "POST",
    path: target.endpoint,
    headers: target.headers,
    body: target.jsonBody,
  });
  const answer = await json.body.json();
  if (json.statusCode !== 200 || format.textOf(answer) !== EXPECTED_TEXT) {
    throw new Error(`${target.label}: unexpected answer (status ${json.statusCode}): ${JSON.stringify(answer)}`);
  }
  if (target.viaLethe) {
    if (json.headers["x-lethe-zdr"] !== "enforced") throw new Error(`${target.label}: Lethe did not enforce ZDR`);
    if (json.headers["x-lethe-supplier"] !== `fake-${target.supplier}`) {
      throw new Error(`${target.label}: served by ${json.headers["x-lethe-supplier"]}, not fake-${target.supplier}`);
    }
  }
  const stream = await target.pool.request({
    method: "POST",
    path: target.endpoint,
    headers: target.headers,
    body: target.streamBody,
  });
  const sse = await stream.body.text();
  if (stream.statusCode !== 200 || format.streamTextOf(sse) !== EXPECTED_TEXT) {
    throw new Error(`${target.label}: unexpected stream (status ${stream.statusCode}):\n${sse.slice(0, 600)}`);
  }
}

// ---------------------------------------------------------------------------
// Measuring.

function collectGarbage() {
  // the bench process itself should not pause for GC in the middle of a TTFB loop
  globalThis.gc?.();
}

/** Requests/s at SETTINGS.connections, non-streaming, and the CPU Lethe and the supplier spent per request. */
async function measureThroughput(target, seconds, pids) {
  collectGarbage();
  const [letheBefore, supplierBefore] = await Promise.all([readCpuMs(pids.lethe), readCpuMs(pids.supplier)]);
  const result = await autocannon({
    url: `${target.origin}${target.endpoint}`,
    method: "POST",
    headers: target.headers,
    body: target.jsonBody,
    connections: SETTINGS.connections,
    duration: seconds,
  });
  const [letheAfter, supplierAfter] = await Promise.all([readCpuMs(pids.lethe), readCpuMs(pids.supplier)]);
  const requests = Math.max(1, result.requests.total);
  return {
    requestsPerSecond: result.requests.average,
    letheCpuMicrosPerRequest: ((letheAfter - letheBefore) * 1000) / requests,
    supplierCpuMicrosPerRequest: ((supplierAfter - supplierBefore) * 1000) / requests,
    failures: result.errors + result.timeouts + result.non2xx,
  };
}

/** ms from sending a streaming request to its first body chunk; the rest of the stream is read, not timed. */
async function timeFirstByte(target) {
  const startedAt = process.hrtime.bigint();
  const response = await target.pool.request({
    method: "POST",
    path: target.endpoint,
    headers: target.headers,
    body: target.streamBody,
  });
  let firstChunkAt = null;
  for await (const _chunk of response.body) firstChunkAt ??= process.hrtime.bigint();
  if (response.statusCode !== 200 || firstChunkAt === null) {
    throw new Error(`${target.label}: stream status ${response.statusCode}`);
  }
  return Number(firstChunkAt - startedAt) / 1e6;
}

/**
 * `count` streaming requests per target with one in flight, alternating between the
 * targets request by request (the starting target rotating), so a burst of noise from
 * the rest of the machine hits them all alike.
 */
async function measureTtfb(targets, count, record) {
  collectGarbage();
  for (let index = 0; index < count; index++) {
    for (let step = 0; step < targets.length; step++) {
      const target = targets[(index + step) % targets.length];
      const elapsedMs = await timeFirstByte(target);
      if (record) target.ttfb.push(elapsedMs);
    }
  }
}

function percentile(values, fraction) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))];
}

const mean = (values) => values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);

function summarise(target) {
  const runs = target.runs;
  return {
    label: target.label,
    requestsPerSecond: mean(runs.map((run) => run.requestsPerSecond)),
    requestsPerSecondPerRound: runs.map((run) => run.requestsPerSecond),
    letheCpuMicrosPerRequest: mean(runs.map((run) => run.letheCpuMicrosPerRequest)),
    supplierCpuMicrosPerRequest: mean(runs.map((run) => run.supplierCpuMicrosPerRequest)),
    failedRequests: runs.reduce((sum, run) => sum + run.failures, 0),
    ttfb: { samples: target.ttfb.length, p50Ms: percentile(target.ttfb, 0.5), p99Ms: percentile(target.ttfb, 0.99) },
  };
}

// ---------------------------------------------------------------------------
// Reporting.

const fixed = (value, decimals) => (Number.isFinite(value) ? value.toFixed(decimals) : "-");

function printTable(paths, directs) {
  const columns = [
    "path",
    "req/s @50",
    "/ OA→OA",
    "Lethe µs/req",
    "supp µs/req",
    "TTFB p50",
    "TTFB p99",
    "added p50",
    "added p99",
    "failed",
  ];
  const widths = [24, 10, 8, 12, 11, 9, 9, 10, 10, 6];
  const row = (cells) =>
    cells.map((cell, index) => (index === 0 ? cell.padEnd(widths[0]) : cell.padStart(widths[index]))).join(" ");
  const reference = paths[0].result.requestsPerSecond;
  const lines = [row(columns), row(widths.map((width) => "-".repeat(width)))];
  for (const item of paths) {
    const { result, added } = item;
    lines.push(
      row([
        result.label,
        fixed(result.requestsPerSecond, 0),
        fixed(result.requestsPerSecond / reference, 3),
        fixed(result.letheCpuMicrosPerRequest, 0),
        fixed(result.supplierCpuMicrosPerRequest, 0),
        fixed(result.ttfb.p50Ms, 3),
        fixed(result.ttfb.p99Ms, 3),
        fixed(added.p50Ms, 3),
        fixed(added.p99Ms, 3),
        String(result.failedRequests),
      ]),
    );
  }
  for (const direct of directs) {
    const ttfb = direct.result.ttfb;
    lines.push(row([direct.result.label, "", "", "", "", fixed(ttfb.p50Ms, 3), fixed(ttfb.p99Ms, 3), "", "", ""]));
  }
  lines.push(
    "",
    "TTFB columns in ms (streaming, 1 in flight, first body chunk); added = path - direct of the path's supplier format",
    "Lethe / supp µs/req: CPU time of the Lethe process / the fake supplier per request in the 50-connection runs",
    `req/s per round: ${paths.map(({ result }) => `${result.label} ${result.requestsPerSecondPerRound.map((value) => Math.round(value)).join("/")}`).join("; ")}`,
  );
  process.stdout.write(`\n${lines.join("\n")}\n`);
}

function printChecks(checks) {
  const lines = checks.map((item) => {
    const mark = item.pass === null ? "[info]" : item.pass ? "[PASS]" : "[FAIL]";
    const target = item.pass === null ? "" : `(target ${item.target})`;
    return `${mark} ${item.name.padEnd(52)} ${item.shown.padStart(12)}  ${target}`.trimEnd();
  });
  process.stdout.write(`\nTargets (issue 3), from this one run:\n${lines.join("\n")}\n`);
}

function evaluate(paths) {
  const reference = paths[0].result;
  const ratioOf = (item) => item.result.requestsPerSecond / reference.requestsPerSecond;
  const cpuRatioOf = (item) => item.result.letheCpuMicrosPerRequest / reference.letheCpuMicrosPerRequest;
  const checks = [];
  for (const item of paths.slice(1)) {
    const minimum = item.client === item.supplier ? TARGETS.nativeRatio : TARGETS.translatedRatio;
    const ratio = ratioOf(item);
    checks.push({
      name: `throughput ${item.result.label} / OpenAI → OpenAI`,
      value: ratio,
      shown: fixed(ratio, 3),
      pass: ratio >= minimum,
      target: `>= ${minimum}`,
    });
  }
  for (const item of paths.slice(1)) {
    const ratio = cpuRatioOf(item);
    checks.push({
      name: `Lethe CPU/req ${item.result.label} / OpenAI → OpenAI`,
      value: ratio,
      shown: fixed(ratio, 3),
      pass: null,
      target: "info",
    });
  }
  for (const item of paths) {
    for (const statistic of ["p50Ms", "p99Ms"]) {
      const value = item.added[statistic];
      checks.push({
        name: `added stream TTFB ${statistic.slice(0, 3)} ${item.result.label}`,
        value,
        shown: `${fixed(value, 3)} ms`,
        pass: value < TARGETS.maxAddedTtfbMs,
        target: `< ${TARGETS.maxAddedTtfbMs} ms`,
      });
    }
  }
  const failures = paths.reduce((sum, item) => sum + item.result.failedRequests, 0);
  checks.push({ name: "failed requests", value: failures, shown: String(failures), pass: failures === 0, target: "0" });
  return checks;
}

// ---------------------------------------------------------------------------

/** Runs the formats bench and prints its figures; with `strict`, a missed target sets a failing exit code. */
export async function runFormatsBench({ strict = false } = {}) {
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-formats-bench-"));
  const pools = [];
  try {
    const supplier = await startSupplier();
    const lethe = await startLethe(workDir, supplier.port);
    const letheOrigin = `http://${HOST}:${lethe.port}`;
    const supplierOrigin = `http://${HOST}:${supplier.port}`;
    const paths = PATHS.map((item) =>
      makeTarget(pools, { ...item, origin: letheOrigin, apiKey: lethe.apiKey, viaLethe: true }),
    );
    const directs = ["openai", "anthropic"].map((format) =>
      makeTarget(pools, {
        name: `direct-${format}`,
        label: `direct ${format === "openai" ? "OpenAI" : "Anthropic"} (fake)`,
        client: format,
        supplier: format,
        model: format === "openai" ? "fake-model" : "fake-anthropic-model",
        origin: supplierOrigin,
        apiKey: SUPPLIER_KEY,
        viaLethe: false,
      }),
    );
    for (const target of [...directs, ...paths]) await checkTarget(target);

    const loadAverage = os.loadavg()[0];
    process.stdout.write(
      `\nFormats bench (issue 3): ${os.cpus().length} CPUs (load average ${loadAverage.toFixed(2)}), ` +
        `${SETTINGS.rounds} rounds of ${SETTINGS.seconds} s at ${SETTINGS.connections} connections per path, ` +
        `then ${SETTINGS.ttfbSamples} streams per path and per direct format at 1 in flight, interleaved\n`,
    );
    const pids = { lethe: lethe.child.pid, supplier: supplier.child.pid };
    for (const target of paths) await measureThroughput(target, SETTINGS.warmupSeconds, pids);
    for (let round = 0; round < SETTINGS.rounds; round++) {
      // the order rotates per round, so no path always runs first
      for (let step = 0; step < paths.length; step++) {
        const target = paths[(round + step) % paths.length];
        const run = await measureThroughput(target, SETTINGS.seconds, pids);
        target.runs.push(run);
        process.stdout.write(
          `  round ${round + 1}: ${target.label.padEnd(22)} ${String(Math.round(run.requestsPerSecond)).padStart(6)} req/s` +
            `  (Lethe ${Math.round(run.letheCpuMicrosPerRequest)} µs/req)\n`,
        );
      }
    }
    const ttfbTargets = [...directs, ...paths];
    await measureTtfb(ttfbTargets, SETTINGS.ttfbWarmupSamples, false);
    await measureTtfb(ttfbTargets, SETTINGS.ttfbSamples, true);

    const directResults = Object.fromEntries(directs.map((target) => [target.supplier, summarise(target)]));
    const pathResults = paths.map((target) => {
      const result = summarise(target);
      const direct = directResults[target.supplier].ttfb;
      return {
        name: target.name,
        client: target.client,
        supplier: target.supplier,
        result,
        added: { p50Ms: result.ttfb.p50Ms - direct.p50Ms, p99Ms: result.ttfb.p99Ms - direct.p99Ms },
      };
    });
    const checks = evaluate(pathResults);
    printTable(
      pathResults,
      directs.map((target) => ({ result: directResults[target.supplier] })),
    );
    printChecks(checks);

    const report = {
      generatedAt: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      loadAverageBefore: loadAverage,
      settings: SETTINGS,
      targets: TARGETS,
      paths: pathResults,
      direct: directResults,
      checks,
    };
    await mkdir(path.join(REPO_ROOT, "bench", "results"), { recursive: true });
    await writeFile(
      path.join(REPO_ROOT, "bench", "results", "formats-latest.json"),
      `${JSON.stringify(report, null, 2)}\n`,
    );
    process.stdout.write("Results written to bench/results/formats-latest.json\n");
    if (strict && checks.some((check) => check.pass === false)) process.exitCode = 1;
    return report;
  } finally {
    await Promise.all(pools.map((pool) => pool.close()));
    await stopAllChildren();
    await rm(workDir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  // an interrupted run still ends its children: exiting runs the "exit" handler in bench-processes.mjs
  for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130));
  await runFormatsBench({ strict: process.argv.includes("--strict") }).catch((error) => {
    process.stderr.write(`formats bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
