import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { findCanaries, makeCanary } from "./support/canary.js";

// the canary scanner is what every ZDR assertion relies on: it must be able to find a leak
describe("canary scanner", () => {
  it.each([
    ["raw", (canary: string) => Buffer.from(`xx${canary}yy`)],
    ["utf-16", (canary: string) => Buffer.from(`x${canary}`, "utf16le")],
    ["hex", (canary: string) => Buffer.from(Buffer.from(canary).toString("hex"))],
    ["base64 aligned", (canary: string) => Buffer.from(Buffer.from(canary).toString("base64"))],
    ["base64 shifted by 1", (canary: string) => Buffer.from(Buffer.from(`a${canary}`).toString("base64"))],
    ["base64 shifted by 2", (canary: string) => Buffer.from(Buffer.from(`ab${canary}`).toString("base64"))],
  ])("finds a canary written %s into a nested file", async (_name, encode) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "lethe-canary-"));
    const canary = makeCanary("scan");
    await writeFile(path.join(dir, "clean.bin"), "nothing here");
    await rm(path.join(dir, "nested"), { recursive: true, force: true });
    await import("node:fs/promises").then((fs) => fs.mkdir(path.join(dir, "nested")));
    await writeFile(path.join(dir, "nested", "leak.db-wal"), encode(canary));
    const hits = await findCanaries([canary, makeCanary("absent")], { dataDir: dir });
    expect(hits).toEqual([{ canary, place: path.join(dir, "nested", "leak.db-wal") }]);
    await rm(dir, { recursive: true, force: true });
  });

  it("finds a canary in captured text", async () => {
    const canary = makeCanary("text");
    expect(await findCanaries([canary], { texts: { log: `{"event":"x","v":"${canary}"}` } })).toHaveLength(1);
  });
});
