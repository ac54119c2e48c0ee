import { describe, expect, it } from "vitest";
import { runAudit } from "../src/audit/index.js";

// the scale-out audit: the same paths against a gateway on the machine's real PostgreSQL
// and Redis (each run in a schema and key prefix of its own, dropped afterwards)
const SCALE_OUT_ENV = {
  LETHE_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/test",
  LETHE_REDIS_URL: "redis://127.0.0.1:6379",
};

describe("lethe audit in scale-out mode", () => {
  it("drives every path and finds no canary in any of the six store kinds", async () => {
    const report = await runAudit({ env: SCALE_OUT_ENV });
    expect(report.stores.map((store) => [store.store, store.scanned])).toEqual([
      ["data dir", true],
      ["log", true],
      ["temp dir", true],
      ["metrics", true],
      ["postgres", true],
      ["redis", true],
    ]);
    // every table Lethe owns was read: the detail line counts them
    expect(report.stores.find((store) => store.store === "postgres")?.detail).toMatch(/\b(9|1\d) source\(s\)/);
    expect(report.stores.every((store) => store.hits === 0)).toBe(true);
    expect(report.pass).toBe(true);
  }, 90_000);

  it("fails on a request body written into a PostgreSQL table, and only there", async () => {
    const report = await runAudit({ env: SCALE_OUT_ENV, seedLeak: "postgres" });
    expect(report.pass).toBe(false);
    for (const store of report.stores) {
      if (store.store === "postgres") expect(store.hits).toBeGreaterThan(0);
      else expect(store.hits).toBe(0);
    }
  }, 90_000);
});
