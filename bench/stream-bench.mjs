// What relaying long streams costs: many clients each reading a long answer whose events
// arrive one network read at a time (the fake supplier's `bench_events` mode), through the
// bare Node proxy and through Lethe, interleaved in rounds. It prints, per target, the CPU
// its process spent per streamed event (the proxy's own work: the bare proxy forwards
// bytes, Lethe reads every event, meters it and writes it in the client's format), and the
// latency of small non-streaming requests sent one at a time meanwhile (what the streams
// cost everyone else on the same gateway).
//
// Usage: node bench/stream-bench.mjs [--rounds N] [--seconds S] [--streams C] [--events E] [--checkout DIR]
// (--checkout: another copy of the repo with dist/ built, as in compare-builds.mjs)
// `npm run bench` runs it with its defaults after the core figures.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Pool } from "undici";
import {
  addDemoCredits,
  coreBenchConfigYaml,
  findFreePort,
  letheServeArgs,
  nodeFlagsFrom,
  readCpuMs,
  readFirstStartKey,
  spawnNode,
  stopAllChildren,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const HOST = "127.0.0.1";
const MODEL_ID = "bench-model";
const ENDPOINT = "/v1/chat/completions";

function parseArguments(argv) {
  const options = { rounds: 3, seconds: 5, streams: 40, events: 400, checkout: null };
  for (let index = 0; index < argv.length; index++) {
    const name = argv[index]?.replace(/^--/, "");
    if (name === "checkout") {
      options.checkout = path.resolve(argv[++index] ?? ".");
      continue;
    }
    if (!(name in options)) throw new Error(`unknown argument: ${argv[index]}`);
    options[name] = Number(argv[++index]);
    if (!(options[name] > 0)) throw new Error(`--${name} needs a positive number`);
  }
  return options;
}

function percentile(sorted, fraction) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

/** One client reading streams back to back until `until`; counts the events it was sent. */
async function streamLoop(pool, headers, body, until, totals) {
  while (Date.now() < until) {
    const answer = await pool.request({ method: "POST", path: ENDPOINT, headers, body });
    let text = "";
    for await (const part of answer.body) {
      // count events as they come; keep only a tail long enough to see [DONE] across reads
      const piece = part.toString("latin1");
      for (let at = piece.indexOf("data: "); at !== -1; at = piece.indexOf("data: ", at + 6)) totals.events++;
      text = (text + piece).slice(-32);
    }
    if (answer.statusCode !== 200 || !text.endsWith("data: [DONE]\n\n")) totals.broken++;
    else totals.streams++;
  }
}

/** Small non-streaming requests one at a time while the streams run: their latencies, in ms. */
async function probeLoop(pool, headers, body, until, samples) {
  while (Date.now() < until) {
    const started = process.hrtime.bigint();
    const answer = await pool.request({ method: "POST", path: ENDPOINT, headers, body });
    await answer.body.dump();
    if (answer.statusCode === 200) samples.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
}

async function measureRound(target, options, bodies, headers) {
  const totals = { events: 0, streams: 0, broken: 0 };
  const samples = [];
  const cpuBefore = await readCpuMs(target.pid);
  const until = Date.now() + options.seconds * 1000;
  await Promise.all([
    ...Array.from({ length: options.streams }, () =>
      streamLoop(target.streamPool, headers, bodies.stream, until, totals),
    ),
    probeLoop(target.probePool, headers, bodies.json, until, samples),
  ]);
  const cpuMs = (await readCpuMs(target.pid)) - cpuBefore;
  target.events += totals.events;
  target.cpuMs += cpuMs;
  target.streams += totals.streams;
  target.broken += totals.broken;
  target.samples.push(...samples);
}

async function startTargets(workDir, checkout) {
  const supplier = spawnNode(["bench/fake-supplier.mjs"], { name: "fake supplier" });
  const supplierPort = await waitForPort(supplier);
  const bare = spawnNode(["bench/bare-proxy.mjs", `http://${HOST}:${supplierPort}`], { name: "bare proxy" });
  // listening from now: its line may come while Lethe starts
  const barePort = waitForPort(bare);
  const port = await findFreePort();
  const environment = await writeLetheSetup(workDir, coreBenchConfigYaml(supplierPort, MODEL_ID), port);
  // STREAM_BENCH_NODE_FLAGS: V8 flags for Lethe alone (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof")
  const lethe = spawnNode(letheServeArgs([], checkout, nodeFlagsFrom("STREAM_BENCH_NODE_FLAGS")), {
    name: "Lethe",
    environment,
  });
  const apiKey = await readFirstStartKey(lethe);
  addDemoCredits(environment, checkout ?? undefined);
  return { apiKey, bare: { child: bare, port: await barePort }, lethe: { child: lethe, port } };
}

function makeTarget(label, port, pid, streams) {
  const origin = `http://${HOST}:${port}`;
  return {
    label,
    pid,
    streamPool: new Pool(origin, { connections: streams, keepAliveTimeout: 60_000 }),
    probePool: new Pool(origin, { connections: 1, keepAliveTimeout: 60_000 }),
    events: 0,
    cpuMs: 0,
    streams: 0,
    broken: 0,
    samples: [],
  };
}

/** Runs the bench; resolves with each target's figures (also printed). */
export async function runStreamBench(argv = []) {
  const options = parseArguments(argv);
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-stream-bench-"));
  const targets = [];
  try {
    const started = await startTargets(workDir, options.checkout);
    targets.push(makeTarget("bare Node proxy", started.bare.port, started.bare.child.pid, options.streams));
    targets.push(makeTarget("Lethe", started.lethe.port, started.lethe.child.pid, options.streams));
    const headers = { "content-type": "application/json", authorization: `Bearer ${started.apiKey}` };
    const messages = [{ role: "user", content: "Say hello." }];
    const bodies = {
      stream: JSON.stringify({ model: MODEL_ID, messages, stream: true, bench_events: options.events }),
      json: JSON.stringify({ model: MODEL_ID, messages, max_tokens: 16 }),
    };
    process.stdout.write(
      `Stream bench: ${options.streams} clients reading ${options.events}-event streams, one event a network read, ` +
        `${options.rounds} rounds of ${options.seconds} s per target, interleaved; small requests one at a time meanwhile\n`,
    );
    // a warm-up round for each, not counted
    for (const target of targets) await measureRound(target, { ...options, seconds: 2 }, bodies, headers);
    for (const target of targets) Object.assign(target, { events: 0, cpuMs: 0, streams: 0, broken: 0, samples: [] });
    for (let round = 0; round < options.rounds; round++) {
      for (const target of targets) await measureRound(target, options, bodies, headers);
    }
    const results = targets.map((target) => {
      const sorted = target.samples.sort((a, b) => a - b);
      return {
        label: target.label,
        eventsPerSecond: target.events / (options.rounds * options.seconds),
        cpuMicrosPerEvent: (target.cpuMs * 1000) / target.events,
        streams: target.streams,
        broken: target.broken,
        probeP50Ms: percentile(sorted, 0.5),
        probeP99Ms: percentile(sorted, 0.99),
        probes: sorted.length,
      };
    });
    for (const result of results) {
      process.stdout.write(
        `  ${result.label.padEnd(16)} ${Math.round(result.eventsPerSecond).toLocaleString("en").padStart(9)} events/s, ` +
          `CPU ${result.cpuMicrosPerEvent.toFixed(2).padStart(6)} µs an event, ${result.streams} streams whole ` +
          `(${result.broken} not), small requests meanwhile p50 ${result.probeP50Ms.toFixed(2)} ms, ` +
          `p99 ${result.probeP99Ms.toFixed(2)} ms (${result.probes})\n`,
      );
    }
    const [bare, lethe] = results;
    process.stdout.write(
      `  Lethe / bare proxy: CPU an event ${(lethe.cpuMicrosPerEvent / bare.cpuMicrosPerEvent).toFixed(2)}×, ` +
        `events/s ${(lethe.eventsPerSecond / bare.eventsPerSecond).toFixed(2)}, ` +
        `small-request p99 ${(lethe.probeP99Ms / bare.probeP99Ms).toFixed(2)}×\n`,
    );
    return { options, results };
  } finally {
    await Promise.all(targets.flatMap((target) => [target.streamPool.close(), target.probePool.close()]));
    await stopAllChildren(2_000);
    await rm(workDir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await runStreamBench(process.argv.slice(2));
