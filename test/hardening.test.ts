import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dangerousFlags } from "../src/process/harden-process.js";
import { makeCanary } from "./support/canary.js";
import { LETHE_BIN, runCli, spawnServe } from "./support/run-cli.js";

const DIST_HARDEN = path.resolve(import.meta.dirname, "../dist/process/harden-process.js");
const DIST_LOG = path.resolve(import.meta.dirname, "../dist/logging/event-log.js");

/** Runs node with arguments and an environment; resolves with its exit code and everything it printed. */
function run(
  args: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd, env: { PATH: process.env.PATH ?? "", ...env } });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on("exit", (code) => resolve({ code, output }));
  });
}

describe("the hardened serving process", () => {
  let cwd: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-harden-"));
    env = { LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe") };
  });

  afterAll(async () => {
    await rm(cwd, { recursive: true, force: true });
  });

  it("recognises the flags that open or dump the heap", () => {
    expect(dangerousFlags(["--inspect=0", "--max-old-space-size=100"], undefined)).toEqual(["--inspect"]);
    expect(dangerousFlags([], "--heapsnapshot-signal=SIGUSR2 --enable-source-maps")).toEqual(["--heapsnapshot-signal"]);
    expect(dangerousFlags(["--report-on-signal"], "--inspect-brk")).toEqual(["--report-on-signal", "--inspect-brk"]);
    expect(dangerousFlags(["--enable-source-maps"], "")).toEqual([]);
    // spellings Node honours too: underscores for dashes, a quoted NODE_OPTIONS entry
    expect(dangerousFlags(["--heapsnapshot_signal=SIGUSR2"], undefined)).toEqual(["--heapsnapshot-signal"]);
    expect(dangerousFlags([], '"--heapsnapshot-signal=SIGUSR2" --heap_snapshot_near_heap_limit=2')).toEqual([
      "--heapsnapshot-signal",
      "--heap-snapshot-near-heap-limit",
    ]);
    expect(dangerousFlags(["--abort-on-uncaught-exception"], "--max-old-space-size=100")).toEqual([
      "--abort-on-uncaught-exception",
    ]);
    // trace events write to a file; node.http's hold every request URL
    expect(dangerousFlags(["--trace-event-categories=node.http"], "--trace_events_enabled")).toEqual([
      "--trace-event-categories",
      "--trace-events-enabled",
    ]);
  });

  it("refuses to serve with trace events on, by a flag or by a preloaded module", async () => {
    const viaFlag = await run(["--trace-event-categories=node.http", LETHE_BIN, "serve"], env, cwd);
    expect(viaFlag.code).toBe(2);
    expect(viaFlag.output).toContain("lethe: refusing to serve with --trace-event-categories enabled");
    const preload = path.join(cwd, "trace-on.mjs");
    await writeFile(
      preload,
      `import { createTracing } from "node:trace_events"; createTracing({ categories: ["node.http"] }).enable();\n`,
    );
    const viaModule = await run(["--import", preload, LETHE_BIN, "serve"], env, cwd);
    expect(viaModule.code).toBe(2);
    expect(viaModule.output).toContain("lethe: refusing to serve with trace events enabled");
  });

  it("refuses to serve with the inspector on, unless --dev says it is a development run", async () => {
    const refused = await run(["--inspect=127.0.0.1:0", LETHE_BIN, "serve"], env, cwd);
    expect(refused.code).toBe(2);
    expect(refused.output).toContain("lethe: refusing to serve with --inspect enabled");
    const viaOptions = await run([LETHE_BIN, "serve"], { ...env, NODE_OPTIONS: "--heapsnapshot-signal=SIGUSR2" }, cwd);
    expect(viaOptions.code).toBe(2);
    expect(viaOptions.output).toContain("--heapsnapshot-signal");
    const quoted = await run([LETHE_BIN, "serve"], { ...env, NODE_OPTIONS: '"--heapsnapshot-signal=SIGUSR2"' }, cwd);
    expect(quoted.code).toBe(2);
    const underscored = await run(["--heapsnapshot_signal=SIGUSR2", LETHE_BIN, "serve"], env, cwd);
    expect(underscored.code).toBe(2);
  });

  it("says in its signed statement that a --dev run is not hardened", async () => {
    const serve = spawnServe(env, cwd, ["--dev"]);
    try {
      const [, url] = await serve.waitFor(/listening on (http:\/\/\S+)/);
      const signed = (await (await fetch(`${url}/v1/zdr`)).json()) as { statement: { development_run: boolean } };
      expect(signed.statement.development_run).toBe(true);
      expect(serve.output()).toContain('"development_run":true');
      const verified = await runCli(["zdr", "verify", url as string], env);
      expect(verified.out).toContain("warning: a development run (serve --dev)");
    } finally {
      await serve.stop();
    }
  });

  it("does not open the debugger on SIGUSR1 while serving", async () => {
    const serve = spawnServe(env, cwd);
    try {
      await serve.waitFor(/listening on/);
      serve.child.kill("SIGUSR1");
      await serve.waitFor(/"signal":"SIGUSR1","event":"signal_ignored"/);
      expect(serve.output()).not.toContain("Debugger listening");
      expect(serve.child.exitCode).toBeNull();
    } finally {
      await serve.stop();
    }
  });

  it("sets the core-file limit to zero and turns diagnostic reports off", async () => {
    const serve = spawnServe(env, cwd);
    try {
      await serve.waitFor(/listening on/);
      expect(serve.output()).toContain('"core_dumps_disabled":true');
      const limits = await readFile(`/proc/${serve.child.pid}/limits`, "utf8");
      expect(limits).toMatch(/^Max core file size\s+0\s+0\s/m);
    } finally {
      await serve.stop();
    }
  });

  it("logs a process warning by its kind and code, never its message", async () => {
    const secret = makeCanary("warning");
    const script = path.join(cwd, "warn.mjs");
    await writeFile(
      script,
      `import { hardenProcess } from ${JSON.stringify(DIST_HARDEN)};
import { createEventLog } from ${JSON.stringify(DIST_LOG)};
await hardenProcess({ allowInspector: false, log: createEventLog() });
process.emitWarning("the prompt was: ${secret}", { type: "DeprecationWarning", code: "DEP0999" });
process.emitWarning("and again: ${secret}", { type: "${secret}" });
setTimeout(() => process.exit(0), 50);
`,
    );
    const result = await run([script], {}, cwd);
    expect(result.code).toBe(0);
    expect(result.output).toMatch(/"kind":"DeprecationWarning","code":"DEP0999","event":"node_warning"/);
    expect(result.output).toMatch(/"kind":"other","event":"node_warning"/);
    expect(result.output).not.toContain(secret);
    expect(result.output).not.toContain("the prompt was");
  });

  it("logs an uncaught exception by its code only, never its message, and exits", async () => {
    const secret = makeCanary("crash");
    const script = path.join(cwd, "crash.mjs");
    await writeFile(
      script,
      `import { hardenProcess } from ${JSON.stringify(DIST_HARDEN)};
import { createEventLog } from ${JSON.stringify(DIST_LOG)};
await hardenProcess({ allowInspector: false, log: createEventLog() });
console.log(JSON.stringify({ fatal: process.report.reportOnFatalError, signal: process.report.reportOnSignal, uncaught: process.report.reportOnUncaughtException }));
setTimeout(() => { throw new Error("the prompt was: ${secret}"); }, 10);
`,
    );
    const result = await run([script], {}, cwd);
    expect(result.code).toBe(70);
    expect(result.output).toContain('{"fatal":false,"signal":false,"uncaught":false}');
    expect(result.output).toMatch(/"code":"LETHE_INTERNAL","event":"uncaught_exception"/);
    expect(result.output).not.toContain(secret);
    expect(result.output).not.toContain("the prompt was");
  });
});
