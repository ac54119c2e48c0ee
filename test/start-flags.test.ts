import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LETHE_BIN, spawnServe } from "./support/run-cli.js";

// `npm start` and the installed `lethe` command must run the gateway with the same V8
// flags (a young generation capped at 4 MB, GC on the main thread alone): the benches
// measure the start script, operators often run the command. NODE_OPTIONS cannot carry
// --single-threaded-gc, so the command's shebang line does.
async function startScriptFlags(): Promise<string[]> {
  const packageJson = JSON.parse(await readFile(path.resolve(import.meta.dirname, "../package.json"), "utf8"));
  const match = /^(?:exec\s+)?node\s+(.*?)\s*bin\/lethe\.js serve$/.exec(packageJson.scripts.start);
  expect(match).not.toBeNull();
  return (match?.[1] ?? "").split(/\s+/).filter((flag) => flag !== "");
}

describe("V8 flags of the gateway process", () => {
  it("are the same in the start script and in the command's shebang line", async () => {
    const flags = await startScriptFlags();
    expect(flags).toContain("--single-threaded-gc");
    expect(flags.some((flag) => flag.startsWith("--max-semi-space-size="))).toBe(true);
    const [shebang] = (await readFile(LETHE_BIN, "utf8")).split("\n");
    expect(shebang).toBe(`#!/usr/bin/env -S node ${flags.join(" ")}`);
  });

  it("are in effect when the command itself serves", async () => {
    const cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-flags-"));
    const serve = spawnServe({ LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe") }, cwd, [], {
      asCommand: true,
    });
    try {
      await serve.waitFor(/listening on http:\/\/127\.0\.0\.1:\d+/);
      // env -S execs node in place: the command's own process is node, with the flags
      const commandLine = (await readFile(`/proc/${serve.child.pid}/cmdline`, "utf8")).split("\0");
      expect(commandLine[0]).toMatch(/node$/);
      for (const flag of await startScriptFlags()) expect(commandLine).toContain(flag);
    } finally {
      await serve.stop();
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

describe("npm start", () => {
  // npm passes SIGTERM on to the script's process: with `exec`, that is the gateway itself;
  // without it, the shell npm started took the signal and the gateway ran on, orphaned
  it("stops the gateway when npm itself gets SIGTERM", async () => {
    const cwd = await mkdtemp(path.join(os.tmpdir(), "lethe-npm-start-"));
    const npm = spawn("npm", ["start", "--silent"], {
      cwd: path.resolve(import.meta.dirname, ".."),
      env: { PATH: process.env.PATH ?? "", HOME: cwd, LETHE_PORT: "0", LETHE_DATA_DIR: path.join(cwd, ".lethe") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const listening = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString("utf8");
        if (/listening on http:\/\/127\.0\.0\.1:\d+/.test(output)) resolve();
      };
      npm.stdout.on("data", onData);
      npm.stderr.on("data", onData);
      npm.once("exit", () => reject(new Error(`npm start exited: ${output}`)));
    });
    let gateway: number | null = null;
    try {
      await listening;
      gateway = gatewayPidUnder(npm.pid as number);
      expect(gateway).not.toBeNull();
      const npmExited = once(npm, "exit");
      npm.kill("SIGTERM");
      await npmExited;
      // the gateway drains and exits on its own signal, not left running without its parent
      await expect.poll(() => isRunning(gateway as number), { timeout: 15_000, interval: 100 }).toBe(false);
    } finally {
      if (npm.exitCode === null) npm.kill("SIGKILL");
      // a gateway the signal did not reach is not left behind by a failing run
      if (gateway !== null && isRunning(gateway)) process.kill(gateway, "SIGKILL");
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

/** The pid of the node process serving under `parentPid` (the script's process, or its child). */
function gatewayPidUnder(parentPid: number): number | null {
  const children = (pid: number) =>
    execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" })
      .split("\n")
      .map((line) => Number(line.trim()))
      .filter((child) => child > 0);
  const queue = children(parentPid);
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    const commandLine = execFileSync("ps", ["-o", "args=", "-p", String(pid)], { encoding: "utf8" });
    if (commandLine.includes("bin/lethe.js serve") && commandLine.startsWith("node")) return pid;
    queue.push(...children(pid));
  }
  return null;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
