// Where a proxy's CPU goes under the bench's load, thread by thread, and what its GC does:
// Lethe (or the bare proxy) alone behind the fake supplier, 50 connections of autocannon,
// a warm-up, then one measured run. It prints the CPU each thread of the target used per
// request (from /proc/PID/task/*/stat: Lethe's main thread, its SQLite writer thread, V8's
// platform threads), and with --gc the young-generation collections per 1,000 requests and
// the bytes promoted to the old generation per request (from --trace-gc-nvp).
//
// It is how session 7 found that V8's parallel scavenge woke four helper threads per
// collection (hence `--single-threaded-gc`), and that records waiting for a busy writer
// thread were promoted. Seconds are noisy on these shared machines (±20 % from one run to
// the next); counts (collections, promoted bytes) are steadier. For a change's effect on
// throughput use compare-builds.mjs; for instructions, count-instructions.mjs.
//
// Usage: node bench/thread-cpu.mjs [--bare] [--gc] [--seconds N] [--checkout DIR]
//   --bare        the bare Node proxy instead of Lethe
//   --gc          count collections and promoted bytes (runs the target with --trace-gc-nvp)
//   --seconds N   the measured run (default 8; the warm-up is always 8 s)
//   --checkout D  another copy of the repo with dist/ built (as in compare-builds.mjs)
// Further node flags for the target come from THREAD_CPU_NODE_FLAGS.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import autocannon from "autocannon";
import {
  addDemoCredits,
  coreBenchConfigYaml,
  findFreePort,
  letheServeArgs,
  nodeFlagsFrom,
  readCpuMs,
  readFirstStartKey,
  readMemory,
  spawnNode,
  stopAllChildren,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const HOST = "127.0.0.1";
const MODEL_ID = "bench-model";
const CONNECTIONS = 50;
const WARMUP_SECONDS = 8;

function parseArguments(argv) {
  const options = { bare: false, gc: false, seconds: 8, checkout: null };
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index];
    if (argument === "--bare") options.bare = true;
    else if (argument === "--gc") options.gc = true;
    else if (argument === "--seconds") options.seconds = Number(argv[++index]);
    else if (argument === "--checkout") options.checkout = path.resolve(argv[++index] ?? ".");
    else throw new Error(`unknown argument: ${argument}`);
  }
  if (!(options.seconds > 0)) throw new Error("--seconds needs a positive number");
  return options;
}

/** CPU ms each thread of `pid` has used so far, by thread id, with the thread's name. */
async function threadTimes(pid) {
  const times = new Map();
  for (const thread of await readdir(`/proc/${pid}/task`)) {
    try {
      const name =
        thread === String(pid) ? "main" : (await readFile(`/proc/${pid}/task/${thread}/comm`, "utf8")).trim();
      times.set(thread, { name, ms: await readCpuMs(pid, thread) });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return times;
}

function load(port, headers, seconds) {
  const body = JSON.stringify({ model: MODEL_ID, messages: [{ role: "user", content: "Say hello." }], max_tokens: 16 });
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: `http://${HOST}:${port}/v1/chat/completions`,
        method: "POST",
        headers,
        body,
        connections: CONNECTIONS,
        duration: seconds,
      },
      (error, result) => (error ? reject(error) : resolve(result)),
    );
  });
}

/** Counts young-generation collections and promoted bytes in the target's --trace-gc-nvp lines, while on. */
function watchCollections(child) {
  const counts = { on: false, scavenges: 0, promotedBytes: 0 };
  child.lines.on("line", (line) => {
    // the SQLite writer thread's isolate traces too: its heap is tiny and promotes nothing
    if (!counts.on || !line.includes("gc=s ")) return;
    counts.scavenges++;
    counts.promotedBytes += Number(/\bpromoted=(\d+)/.exec(line)?.[1] ?? 0);
  });
  return counts;
}

async function startTarget(options, supplierPort, directory) {
  const nodeFlags = [...nodeFlagsFrom("THREAD_CPU_NODE_FLAGS"), ...(options.gc ? ["--trace-gc-nvp"] : [])];
  if (options.bare) {
    const child = spawnNode([...nodeFlags, "bench/bare-proxy.mjs", `http://${HOST}:${supplierPort}`], {
      name: "bare proxy",
    });
    return { child, port: await waitForPort(child), headers: { "content-type": "application/json" } };
  }
  const port = await findFreePort();
  const environment = await writeLetheSetup(directory, coreBenchConfigYaml(supplierPort, MODEL_ID), port);
  const child = spawnNode(letheServeArgs([], options.checkout, nodeFlags), { name: "Lethe", environment });
  const apiKey = await readFirstStartKey(child);
  addDemoCredits(environment, options.checkout ?? undefined);
  return { child, port, headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` } };
}

async function main() {
  const options = parseArguments(process.argv.slice(2));
  const directory = await mkdtemp(path.join(os.tmpdir(), "lethe-thread-cpu-"));
  try {
    const supplier = spawnNode(["bench/fake-supplier.mjs"], { name: "fake supplier" });
    const target = await startTarget(options, await waitForPort(supplier), directory);
    const collections = watchCollections(target.child);
    await load(target.port, target.headers, WARMUP_SECONDS);

    collections.on = true;
    const before = await threadTimes(target.child.pid);
    const result = await load(target.port, target.headers, options.seconds);
    const after = await threadTimes(target.child.pid);
    collections.on = false;
    const memory = await readMemory(target.child.pid);

    const requests = result.requests.total;
    const perRequest = (ms) => ((ms * 1000) / requests).toFixed(1);
    process.stdout.write(
      `${options.bare ? "bare proxy" : "Lethe"}: ${Math.round(result.requests.average)} req/s at ${CONNECTIONS} connections, ` +
        `${result.non2xx} answers not 2xx, RSS ${(memory.rssBytes / 2 ** 20).toFixed(1)} MB\n`,
    );
    let total = 0;
    for (const [thread, { name, ms }] of after) {
      const used = ms - (before.get(thread)?.ms ?? 0);
      total += used;
      if (used > 0)
        process.stdout.write(`  ${`${name} (${thread})`.padEnd(28)} ${perRequest(used).padStart(7)} µs/request\n`);
    }
    process.stdout.write(`  ${"all threads".padEnd(28)} ${perRequest(total).padStart(7)} µs/request\n`);
    if (options.gc) {
      process.stdout.write(
        `  young-generation collections ${((collections.scavenges * 1000) / requests).toFixed(2)} per 1,000 requests, ` +
          `${Math.round(collections.promotedBytes / requests)} bytes promoted per request\n`,
      );
    }
  } finally {
    await stopAllChildren();
    await rm(directory, { recursive: true, force: true });
  }
}

await main();
