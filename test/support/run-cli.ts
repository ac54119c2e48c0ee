import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { main } from "../../src/cli/main.js";

/** The built `lethe` entry point (npm test builds dist/ before the suite runs). */
export const LETHE_BIN = path.resolve(import.meta.dirname, "../../bin/lethe.js");

/** Runs a `lethe` command in this process and captures what it prints. */
export async function runCli(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (line) => out.push(line), err: (line) => err.push(line), env });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** A `lethe serve` child process with everything it printed captured. */
export interface ServeProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the first match of `pattern` in the output. */
  waitFor(pattern: RegExp): Promise<RegExpMatchArray>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Spawns `node bin/lethe.js serve [ARGS]` with the given environment; with `asCommand`,
 * runs `bin/lethe.js` itself, as an installed `lethe` command runs (its shebang line).
 */
export function spawnServe(
  env: Record<string, string>,
  cwd: string,
  args: string[] = [],
  { asCommand = false } = {},
): ServeProcess {
  const command = asCommand ? LETHE_BIN : process.execPath;
  const child = spawn(command, [...(asCommand ? [] : [LETHE_BIN]), "serve", ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  const waiters: (() => void)[] = [];
  const onData = (chunk: Buffer) => {
    text += chunk.toString("utf8");
    for (const waiter of waiters.splice(0)) waiter();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    output: () => text,
    waitFor(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = text.match(pattern);
          if (match) resolve(match);
          else if (child.exitCode !== null || child.signalCode !== null)
            reject(new Error(`lethe serve exited (${child.exitCode ?? child.signalCode}): ${text}`));
          else waiters.push(check);
        };
        child.once("exit", check);
        check();
      });
    },
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}
