import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";

/** Whether a redis-server binary is installed here (Redis tests are skipped without one). */
export const HAS_REDIS_SERVER = spawnSync("redis-server", ["--version"]).status === 0;

/** A throw-away redis-server on a free loopback port, when one is installed. */
export async function startRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  const probe = createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  const dir = await mkdtemp(path.join(os.tmpdir(), "lethe-audit-redis-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
  const child: ChildProcess = spawn("redis-server", args, { stdio: ["ignore", "pipe", "ignore"] });
  let output = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) resolve();
    });
    child.once("error", reject);
    child.once("exit", () => reject(new Error("redis-server exited before it was ready")));
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
