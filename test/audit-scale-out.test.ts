import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAudit } from "../src/audit/index.js";
import {
  deleteRedisKeys,
  dropSchema,
  REDIS_URL,
  type Replica,
  schemaUrl,
  startReplica,
  uniqueName,
} from "./support/scale-rig.js";

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

describe("lethe audit --target against a scale-out deployment", () => {
  const schema = uniqueName("audit_target");
  const prefix = `${uniqueName("audit-target")}:`;
  let replica: Replica;
  let key: string;

  beforeAll(async () => {
    const config = {
      suppliers: [{ id: "demo", type: "demo", zdr: true }],
      models: [{ id: "chat", routes: [{ supplier: "demo", model: "lethe-demo" }] }],
    };
    replica = await startReplica(config, {
      LETHE_DATABASE_URL: schemaUrl(schema),
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: prefix,
    });
    ({ key } = await replica.key("auditor", { credits: 1_000_000_000 }));
  });

  afterAll(async () => {
    await replica.close();
    await dropSchema(schema);
    await deleteRedisKeys(prefix);
  });

  const audit = (env: Record<string, string>) =>
    runAudit({ target: { url: replica.url, key }, noLog: true, env: { LETHE_DATA_DIR: replica.dataDir, ...env } });

  it("is inconclusive when the environment names neither the PostgreSQL nor the Redis the target uses", async () => {
    const report = await audit({});
    expect(report.pass).toBe(false);
    expect(report.verdict).toMatch(/^INCONCLUSIVE/);
    const gaps = report.stores.filter((store) => store.store === "postgres" || store.store === "redis");
    expect(gaps.map((store) => [store.store, store.scanned, store.coverage])).toEqual([
      ["postgres", false, "not scanned"],
      ["redis", false, "not scanned"],
    ]);
    expect(gaps[0]?.detail).toContain("the target stores in PostgreSQL");
  }, 90_000);

  it("is inconclusive when LETHE_REDIS_PREFIX is not the target's: an empty prefix proves nothing", async () => {
    const report = await audit({
      LETHE_DATABASE_URL: schemaUrl(schema),
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: `${prefix}typo:`,
    });
    expect(report.verdict).toMatch(/^INCONCLUSIVE/);
    const redis = report.stores.find((store) => store.store === "redis");
    expect(redis?.coverage).toBe("incomplete");
    expect(redis?.detail).toContain("is LETHE_REDIS_PREFIX the target's?");
    expect(report.stores.find((store) => store.store === "postgres")?.coverage).toBe("complete");
  }, 90_000);

  it("passes with the target's own stores named", async () => {
    const report = await audit({
      LETHE_DATABASE_URL: schemaUrl(schema),
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: prefix,
    });
    expect(report.stores.find((store) => store.store === "redis")?.coverage).toBe("complete");
    expect(report.verdict).toMatch(/^PASS/);
  }, 90_000);
});
