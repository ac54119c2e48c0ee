import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const OPEN_STORE = fileURLToPath(new URL("../dist/store/sqlite/open-sqlite-store.js", import.meta.url));

/** Opens and closes the SQLite store of `dir` in a process of its own; resolves with its exit code and stderr. */
function openInProcess(dir: string): Promise<{ code: number | null; err: string }> {
  const script = `const { openSqliteStore } = await import(${JSON.stringify(OPEN_STORE)});
const store = await openSqliteStore(${JSON.stringify(dir)});
await store.close();`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (chunk: Buffer) => {
      err += chunk.toString("utf8");
    });
    child.once("exit", (code) => resolve({ code, err }));
  });
}

describe("opening a new SQLite data dir from several processes at once", () => {
  it("migrates it once and opens it in every one (Kysely takes no migration lock on SQLite)", async () => {
    for (let round = 0; round < 6; round++) {
      const dir = await mkdtemp(path.join(os.tmpdir(), "lethe-open-race-"));
      try {
        const results = await Promise.all(Array.from({ length: 4 }, () => openInProcess(dir)));
        expect(results.filter((result) => result.code !== 0).map((result) => result.err)).toEqual([]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  }, 60_000);
});
