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
  const match = /^node\s+(.*?)\s*bin\/lethe\.js serve$/.exec(packageJson.scripts.start);
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
