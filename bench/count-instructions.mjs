// Counts the machine instructions a proxy spends per request, under valgrind's callgrind:
// a count, not a time, so it barely moves with the rest of the machine. On these shared
// 2-core VMs throughput swings by ±30 % from round to round, which hides any change
// smaller than about 10 %; this tells a 1 % change apart. It complements compare-builds
// (which measures what an operator sees) and cannot replace it: instructions are not
// cycles (cache misses, page faults and the scheduler are not counted).
//
// The fake supplier and the load generator run natively; only the target runs under
// valgrind, which slows it about fifty-fold. Counting starts after a warm-up (V8 tiers
// functions up by how often they run, not by time, so the same warm-up gives the same
// optimised code) and covers every thread of the process: the SQLite writer, GC helpers
// and V8's compiler threads included.
//
// Usage: node bench/count-instructions.mjs [CHECKOUT ...] [--bare] [--stream]
//          [--warmup N] [--requests N] [--keep]
//   CHECKOUT   a copy of the repo with dist/ built (default: this one); several are
//              counted one after the other, each with the same requests
//   --bare     count the bare Node proxy as well (bench/bare-proxy.mjs), for reference
//   --stream   streaming requests instead of JSON ones
//   --threads  also print each thread's share (main, SQLite writer, V8's helpers...)
//   --keep     keep the callgrind output files (bench/results/callgrind/) for callgrind_annotate
// Every target runs with --no-concurrent-recompilation, so that V8 optimises a function on
// the thread that runs it, as soon as it is hot: on background threads, valgrind's slowness
// left the request path in whatever tier the compiler had reached, and the main thread's
// count moved by 10 % between builds for reasons of timing alone (a 2 % change measured
// +8 % once). Further node flags come from COUNT_NODE_FLAGS, as in the other benches.
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import {
  addDemoCredits,
  coreBenchConfigYaml,
  findApiKey,
  findFreePort,
  letheServeArgs,
  nodeFlagsFrom,
  spawnNode,
  stopAllChildren,
  waitForPort,
  writeLetheSetup,
} from "./bench-processes.mjs";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const OUTPUT_DIR = path.join(REPO_ROOT, "bench", "results", "callgrind");
const HOST = "127.0.0.1";
const CONNECTIONS = 8;
const READY_TIMEOUT_MS = 180_000;
const NODE_FLAGS = ["--no-concurrent-recompilation", ...nodeFlagsFrom("COUNT_NODE_FLAGS")];

function parseArguments(argv) {
  const options = {
    checkouts: [],
    bare: false,
    stream: false,
    threads: false,
    warmup: 4000,
    requests: 2000,
    keep: false,
  };
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index];
    if (argument === "--bare") options.bare = true;
    else if (argument === "--stream") options.stream = true;
    else if (argument === "--keep") options.keep = true;
    else if (argument === "--threads") options.threads = true;
    else if (argument === "--warmup") options.warmup = Number(argv[++index]);
    else if (argument === "--requests") options.requests = Number(argv[++index]);
    else options.checkouts.push(path.resolve(argument));
  }
  if (options.checkouts.length === 0) options.checkouts.push(REPO_ROOT);
  return options;
}

function requestBody(stream) {
  return JSON.stringify({
    model: "bench-model",
    messages: [{ role: "user", content: "Say hello." }],
    max_tokens: 16,
    ...(stream ? { stream: true } : {}),
  });
}

/** Starts `node ARGS` under callgrind with counting off; resolves once `ready` matches a stdout line. */
function spawnUnderCallgrind(nodeArgs, { environment, outputFile, ready, threads }) {
  const child = spawn(
    "valgrind",
    [
      ...(threads ? ["--separate-threads=yes"] : []),
      "--tool=callgrind",
      // no instrumentation until the warm-up is over: counting is switched on with callgrind_control
      "--instr-atstart=no",
      `--callgrind-out-file=${outputFile}`,
      // V8 rewrites code it generated: valgrind must notice, or it runs stale translations
      "--smc-check=all-non-file",
      process.execPath,
      ...nodeArgs,
    ],
    { cwd: REPO_ROOT, env: environment, stdio: ["ignore", "pipe", "pipe"] },
  );
  let tail = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (text) => {
    tail = (tail + text).slice(-2000);
  });
  const lines = createInterface({ input: child.stdout });
  const matched = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready under valgrind:\n${tail}`)), READY_TIMEOUT_MS);
    lines.on("line", (line) => {
      if (!ready(line)) return;
      clearTimeout(timer);
      resolve(line);
    });
    child.once("exit", (code) => reject(new Error(`exited (${code}) under valgrind:\n${tail}`)));
  });
  return { child, matched };
}

function callgrindControl(pid, ...args) {
  const result = spawnSync("callgrind_control", [...args, String(pid)], { encoding: "utf8" });
  if (result.status !== 0 || !result.stdout.includes("OK")) {
    throw new Error(`callgrind_control ${args.join(" ")} failed: ${result.stdout} ${result.stderr}`);
  }
}

/** A dump's files: OUTFILE.1, or with --threads OUTFILE.1-01, OUTFILE.1-02... (thread 1 is the main thread). */
async function dumpFiles(outputFile) {
  const base = `${path.basename(outputFile)}.1`;
  const names = await readdir(path.dirname(outputFile));
  return names
    .filter((name) => name === base || name.startsWith(`${base}-`))
    .sort()
    .map((name) => path.join(path.dirname(outputFile), name));
}

/** A dump file's instruction count (its "totals:" line; "summary:" says 0 when counting started late). */
async function readTotal(file) {
  const match = /^totals: (\d+)/m.exec(await readFile(file, "utf8"));
  if (match === null) throw new Error(`no totals in ${file}`);
  return Number(match[1]);
}

/**
 * Instructions spent in V8's optimising compilers (TurboFan, Maglev), from callgrind_annotate:
 * what is left of the warm-up. It varies from run to run with when V8 decides to (re)optimise,
 * so the figures are given with and without it.
 */
function compilerInstructions(file) {
  const annotated = spawnSync("callgrind_annotate", ["--threshold=100", file], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  });
  let total = 0;
  for (const line of annotated.stdout.split("\n")) {
    const match = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line);
    if (match !== null && /v8::internal::(compiler|maglev|turboshaft)::/.test(match[2])) {
      total += Number(match[1].replaceAll(",", ""));
    }
  }
  return total;
}

async function load(url, headers, body, amount) {
  // valgrind slows the target about fifty-fold: a generous timeout
  const result = await autocannon({
    url,
    method: "POST",
    headers,
    body,
    connections: CONNECTIONS,
    amount,
    timeout: 120,
  });
  const failed = result.non2xx + result.errors + result.timeouts;
  if (failed > 0) {
    throw new Error(
      `${failed} of ${amount} requests failed (non-2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts})`,
    );
  }
}

/** Warms the target up, counts `requests` of its requests, and returns instructions per request. */
async function count(target, options, label) {
  const body = requestBody(options.stream);
  await load(target.url, target.headers, body, options.warmup);
  callgrindControl(target.pid, "--instr=on");
  await load(target.url, target.headers, body, options.requests);
  callgrindControl(target.pid, "--instr=off");
  // callgrind_control returns once the dump is written
  callgrindControl(target.pid, "--dump");
  const files = await dumpFiles(target.outputFile);
  if (files.length === 0) throw new Error(`${label}: callgrind wrote no dump`);
  const perRequest = (instructions) => instructions / options.requests;
  let total = 0;
  let compiler = 0;
  const threads = [];
  for (const file of files) {
    const instructions = await readTotal(file);
    const compiling = compilerInstructions(file);
    total += instructions;
    compiler += compiling;
    threads.push(
      `${file.slice(file.lastIndexOf("-") + 1)}: ${perRequest(instructions).toFixed(0)} (compiler ${perRequest(compiling).toFixed(0)})`,
    );
  }
  process.stdout.write(
    `${label}: ${perRequest(total).toFixed(0)} instructions per request, ` +
      `${perRequest(total - compiler).toFixed(0)} without V8's optimising compiler\n`,
  );
  if (options.threads) process.stdout.write(`  per thread: ${threads.join("; ")}\n`);
  return { files, all: perRequest(total), withoutCompiler: perRequest(total - compiler) };
}

async function startLethe(checkout, supplierPort, directory, outputFile, threads) {
  const port = await findFreePort();
  await mkdir(directory, { recursive: true });
  const environment = await writeLetheSetup(directory, coreBenchConfigYaml(supplierPort, "bench-model"), port);
  const args = letheServeArgs([], checkout, NODE_FLAGS);
  const { child, matched } = spawnUnderCallgrind(args, {
    environment,
    outputFile,
    threads,
    ready: (line) => line.includes("sk-lethe-"),
  });
  const apiKey = findApiKey(await matched);
  addDemoCredits(environment, checkout);
  return {
    child,
    pid: child.pid,
    outputFile,
    url: `http://${HOST}:${port}/v1/chat/completions`,
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
  };
}

async function startBare(supplierPort, outputFile, threads) {
  const args = [...NODE_FLAGS, "bench/bare-proxy.mjs", `http://${HOST}:${supplierPort}`];
  const { child, matched } = spawnUnderCallgrind(args, {
    environment: process.env,
    outputFile,
    threads,
    ready: (line) => line.startsWith('{"port":'),
  });
  const { port } = JSON.parse(await matched);
  return {
    child,
    pid: child.pid,
    outputFile,
    url: `http://${HOST}:${port}/v1/chat/completions`,
    headers: { "content-type": "application/json" },
  };
}

async function stop(target) {
  const exited = new Promise((resolve) => target.child.once("exit", resolve));
  target.child.kill("SIGTERM");
  const timer = setTimeout(() => target.child.kill("SIGKILL"), 60_000);
  await exited;
  clearTimeout(timer);
}

async function main() {
  const options = parseArguments(process.argv.slice(2));
  const workDir = await mkdtemp(path.join(os.tmpdir(), "lethe-count-"));
  // a kept run's dumps would be counted with this run's
  await rm(OUTPUT_DIR, { recursive: true, force: true });
  await mkdir(OUTPUT_DIR, { recursive: true });
  const results = [];
  try {
    const supplier = spawnNode(["bench/fake-supplier.mjs"], { name: "fake supplier" });
    const supplierPort = await waitForPort(supplier);
    process.stdout.write(
      `${options.stream ? "streaming" : "JSON"} requests: ${options.warmup} to warm up, ${options.requests} counted, ${CONNECTIONS} connections\n`,
    );
    if (options.bare) {
      const outputFile = path.join(OUTPUT_DIR, "bare.out");
      const target = await startBare(supplierPort, outputFile, options.threads);
      try {
        results.push(["bare proxy", await count(target, options, "bare proxy"), outputFile]);
      } finally {
        await stop(target);
      }
    }
    for (const [index, checkout] of options.checkouts.entries()) {
      const label = `Lethe ${checkout === REPO_ROOT ? "(this checkout)" : checkout}`;
      const outputFile = path.join(OUTPUT_DIR, `lethe-${index}.out`);
      const target = await startLethe(
        checkout,
        supplierPort,
        path.join(workDir, String(index)),
        outputFile,
        options.threads,
      );
      try {
        results.push([label, await count(target, options, label), outputFile]);
      } finally {
        await stop(target);
      }
    }
    const [, first] = results[0];
    process.stdout.write(
      `\n${"".padEnd(44)} ${"all".padStart(10)} ${"ratio".padStart(6)} ${"w/o compiler".padStart(13)} ${"ratio".padStart(6)}\n`,
    );
    for (const [label, counted] of results) {
      process.stdout.write(
        `  ${label.padEnd(42)} ${counted.all.toFixed(0).padStart(10)} ${(counted.all / first.all).toFixed(3).padStart(6)} ` +
          `${counted.withoutCompiler.toFixed(0).padStart(13)} ${(counted.withoutCompiler / first.withoutCompiler).toFixed(3).padStart(6)}\n`,
      );
    }
  } finally {
    await stopAllChildren(2_000);
    await rm(workDir, { recursive: true, force: true });
    // callgrind's own end-of-run dumps (OUTFILE, OUTFILE-NN) hold only the time after counting stopped
    const names = await readdir(OUTPUT_DIR);
    for (const name of names) {
      const counted = /\.out\.1(-\d+)?$/.test(name);
      if (!counted || !options.keep) await rm(path.join(OUTPUT_DIR, name), { force: true });
    }
  }
}

main().catch((error) => {
  process.stderr.write(`count-instructions failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
