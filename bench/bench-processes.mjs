// The child-process plumbing every bench shares: spawning `node` children, waiting for them
// to be ready, stopping them, and reading their CPU time and memory from /proc.
//
// Every child is tracked in one set for the whole process, so none outlives a bench, even on
// errors; `bench/run.mjs` runs the benches one after another, and each stops its own children
// before the next starts.

import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const HOST = "127.0.0.1";
// /proc reports CPU times in USER_HZ ticks, which Linux fixes at 100 a second
const CLOCK_TICKS_PER_SECOND = 100;
const TAIL_CHARACTERS = 2000;

const children = new Set();

process.on("exit", killAllChildren);

/** Kills every child still running at once; for exits, where there is no time to let them drain. */
export function killAllChildren() {
  for (const child of children) child.kill("SIGKILL");
}

/** Spawns `node ARGS` in the repo with piped output, tracked for clean-up; keeps the tail of its output for error reports. */
export function spawnNode(args, { name = "child", environment = process.env, stdoutInTail = false } = {}) {
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: environment, stdio: ["ignore", "pipe", "pipe"] });
  child.benchName = name;
  child.outputTail = "";
  const keepTail = (text) => {
    child.outputTail = (child.outputTail + text).slice(-TAIL_CHARACTERS);
  };
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", keepTail);
  child.lines = createInterface({ input: child.stdout });
  // some benches want stdout in the report too, to show how far a child got before it failed
  if (stdoutInTail) child.lines.on("line", (line) => keepTail(`${line}\n`));
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Resolves with the first stdout line of `child` that `matches`; rejects if it exits or times out first. */
export function waitForLine(child, matches, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    const cleanUp = () => {
      clearTimeout(timer);
      child.lines.off("line", onLine);
      child.off("exit", onExit);
    };
    const onLine = (line) => {
      if (!matches(line)) return;
      cleanUp();
      resolve(line);
    };
    const onExit = (code) => {
      cleanUp();
      reject(new Error(`${child.benchName} exited (code ${code}) before it was ready:\n${child.outputTail}`));
    };
    const timer = setTimeout(() => {
      cleanUp();
      reject(new Error(`${child.benchName} was not ready within ${timeoutMs} ms:\n${child.outputTail}`));
    }, timeoutMs);
    child.lines.on("line", onLine);
    child.once("exit", onExit);
  });
}

/** Reads the `{"port":N}` line the fake suppliers and the bare proxy print when they listen. */
export async function waitForPort(child, timeoutMs = 15_000) {
  const line = await waitForLine(child, (text) => text.startsWith('{"port":'), timeoutMs);
  return JSON.parse(line).port;
}

/** Sends `signal` (SIGTERM lets Lethe drain its meter), SIGKILL after a grace period; resolves with the exit code. */
export async function stopChild(child, { signal = "SIGTERM", graceMs = 10_000 } = {}) {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

/** Stops every child still running, each with `stopChild`; for a bench's `finally`. */
export async function stopAllChildren(graceMs = 10_000) {
  await Promise.all([...children].map((child) => stopChild(child, { graceMs })));
}

/** A port nobody listens on right now, for LETHE_PORT. */
export function findFreePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, HOST, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat; with
 * `thread`, that thread's alone (the process's main thread has the process's own id).
 */
export async function readCpuMs(pid, thread = null) {
  const stat = await readFile(thread === null ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, "utf8");
  // the command name in parentheses may hold spaces: count fields from after it (utime is field 14)
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}

/** Resident set size (and its peak) of a process, from /proc/<pid>/status, in bytes. */
export async function readMemory(pid) {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kilobytes = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  return { rssBytes: kilobytes("VmRSS") * 1024, peakRssBytes: kilobytes("VmHWM") * 1024 };
}

/**
 * The arguments of `node` that start Lethe as `npm start` does: the V8 flags of the start
 * script (the young generation's size), then `bin/lethe.js serve` and `extra`. The benches
 * measure what an operator runs.
 */
export function letheServeArgs(extra = [], checkout = null, nodeFlags = []) {
  const start = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")).scripts.start;
  const match = /^(?:exec\s+)?node\s+(.*?)\s*bin\/lethe\.js serve$/.exec(start);
  if (match === null) throw new Error(`unexpected start script: ${start}`);
  const flags = match[1].split(/\s+/).filter((flag) => flag !== "");
  // `checkout`: another copy of the repo (compare-builds.mjs runs two builds side by side)
  const entry = checkout === null ? "bin/lethe.js" : path.join(checkout, "bin", "lethe.js");
  // `nodeFlags` after the start script's own: for a V8 flag given twice, the last one counts
  return [...flags, ...nodeFlags, entry, "serve", ...extra];
}

/** Node flags from an environment variable, space-separated ("" or unset: none). */
export function nodeFlagsFrom(variable) {
  return (process.env[variable] ?? "").split(" ").filter((flag) => flag !== "");
}

/** Writes `configYaml` into `directory` and returns Lethe's environment for it: no inherited LETHE_* (e.g. a database URL). */
export async function writeLetheSetup(directory, configYaml, port, extraEnvironment = {}) {
  const configPath = path.join(directory, "lethe.config.yaml");
  await writeFile(configPath, configYaml);
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("LETHE_")));
  return {
    ...inherited,
    LETHE_HOST: HOST,
    LETHE_PORT: String(port),
    LETHE_DATA_DIR: path.join(directory, "data"),
    LETHE_CONFIG: configPath,
    BENCH_SUPPLIER_KEY: "sk-fake-supplier-key",
    ...extraEnvironment,
  };
}

/** The first `sk-lethe-` API key in `text`, or undefined; Lethe and its CLI print keys among other words. */
export function findApiKey(text) {
  return /sk-lethe-[0-9A-Za-z]+/.exec(text)?.[0];
}

/** Waits for the demo account's key that a first `lethe serve` prints on its own line, and returns it. */
export async function readFirstStartKey(child) {
  const apiKey = findApiKey(await waitForLine(child, (line) => line.includes("sk-lethe-")));
  if (apiKey === undefined) throw new Error("Lethe printed no first-start API key");
  return apiKey;
}

/**
 * Lethe's config for the core bench (run.mjs, compare-builds.mjs): one ZDR OpenAI-compatible supplier (the fake one),
 * one priced model, and rate limits far above what the bench sends, so every
 * request is served (the limits are still counted on every request).
 */
export function coreBenchConfigYaml(supplierPort, modelId) {
  return `limits:
  rpm: 1000000000
  tpm: 1000000000000
suppliers:
  - id: fake-openai
    type: openai
    base_url: http://${HOST}:${supplierPort}/v1
    api_key_env: BENCH_SUPPLIER_KEY
    zdr: true
models:
  - id: ${modelId}
    routes:
      - supplier: fake-openai
        model: fake-model
        price: { input_per_mtok: 0.10, output_per_mtok: 0.20 }
`;
}

/**
 * Tops up the demo account through the CLI, as an operator would (the bench models are
 * priced, so billing is on); `checkout` is the copy of the repo whose CLI to run.
 */
export function addDemoCredits(environment, checkout = REPO_ROOT) {
  const topUp = spawnSync(
    process.execPath,
    [path.join(checkout, "bin", "lethe.js"), "credits", "add", "--account", "demo", "1000000"],
    { cwd: checkout, env: environment, encoding: "utf8" },
  );
  if (topUp.status !== 0) throw new Error(`lethe credits add failed: ${topUp.stderr.trim()}`);
}
