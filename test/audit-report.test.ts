import { describe, expect, it } from "vitest";
import { buildReport } from "../src/audit/audit-report.js";
import { CanaryRegistry } from "../src/audit/canary-registry.js";
import type { PathRun } from "../src/audit/drive-paths.js";
import { STORE_NAMES, type StoreName, type StoreScanner } from "../src/audit/stores/store-scanner.js";
import { type StoreCoverage, type StoreResult, StoreSweep } from "../src/audit/stores/store-sweep.js";

// the verdict is the audit's product: a PASS must mean every store the deployment uses was searched

const RUNS: PathRun[] = [{ name: "a path", outcome: "driven", notes: [] }];

function registry(): CanaryRegistry {
  const canaries = new CanaryRegistry();
  canaries.mint(0);
  return canaries;
}

/** Every store complete, but for the ones given. */
function stores(overrides: Partial<Record<StoreName, [StoreCoverage, string | null]>> = {}): StoreResult[] {
  return STORE_NAMES.map((store) => {
    const [coverage, gap] = overrides[store] ?? ["complete", null];
    const scanned = coverage === "complete" || coverage === "incomplete";
    return { store, description: store, scanned, coverage, detail: gap ?? "read", gap, canaries: new Set<number>() };
  });
}

function report(storeResults: StoreResult[], models: { listed: string[]; driven: string[] } | null = null) {
  return buildReport({
    mode: models === null ? "embedded" : "target",
    target: models === null ? null : "http://127.0.0.1:1",
    runs: RUNS,
    stores: storeResults,
    registry: registry(),
    models:
      models === null
        ? null
        : { ...models, notDriven: models.listed.filter((model) => !models.driven.includes(model)) },
    durationMs: 1,
  });
}

describe("audit verdict", () => {
  it("is a plain PASS when every store in use was searched in full, stores not in use aside", () => {
    const result = report(stores({ postgres: ["not in use", null], redis: ["not in use", null] }));
    expect(result.verdict).toMatch(/^PASS: no canary found in any store \(/);
    expect(result.pass).toBe(true);
    expect(result.excluded).toEqual({ stores: [], models: [] });
  });

  it.each([
    ["log", "no log file given: pass --log FILE, or --no-log if it cannot be had"],
    ["metrics", "GET /metrics needs an operator token (set LETHE_OPERATOR_TOKEN)"],
    ["data dir", "/nonexistent does not exist (set LETHE_DATA_DIR)"],
    ["postgres", "cannot reach PostgreSQL at 127.0.0.1:1/test"],
    ["redis", "cannot reach Redis at 127.0.0.1:1"],
  ] as [StoreName, string][])("is INCONCLUSIVE when the %s, in use, was not scanned, and says why", (store, why) => {
    const result = report(stores({ [store]: ["not scanned", why] }));
    expect(result.pass).toBe(false);
    expect(result.verdict).toBe(
      `INCONCLUSIVE: no canary found, but 1 store(s) in use were not searched in full: ${store} (${why})`,
    );
  });

  it("is INCONCLUSIVE when a store was scanned only in part", () => {
    const result = report(stores({ redis: ["incomplete", "stopped after 10 keys"] }));
    expect(result.pass).toBe(false);
    expect(result.verdict).toMatch(/^INCONCLUSIVE: .*: redis \(stopped after 10 keys\)$/);
  });

  it("is a qualified PASS naming what the operator excluded: the log, the models not chosen", () => {
    const result = report(stores({ log: ["excluded", "--no-log: the operator said it cannot be read"] }), {
      listed: ["a", "b", "c"],
      driven: ["b"],
    });
    expect(result.pass).toBe(true);
    expect(result.verdict).toMatch(/^PASS \(qualified\): no canary found in any store searched \(/);
    expect(result.verdict).toMatch(
      /; not searched, as the operator chose: log \(--no-log: .*\), model\(s\) a, c \(not chosen with --model\)$/,
    );
    expect(result.excluded).toEqual({ stores: ["log"], models: ["a", "c"] });
  });

  it("stays INCONCLUSIVE when a store in use is missing besides the exclusions, and still names those", () => {
    const result = report(
      stores({ log: ["excluded", "--no-log"], metrics: ["not scanned", "GET /metrics answered HTTP 500"] }),
      { listed: ["a", "b"], driven: ["a"] },
    );
    expect(result.pass).toBe(false);
    expect(result.verdict).toMatch(
      /^INCONCLUSIVE: .*metrics \(GET \/metrics answered HTTP 500\); not searched, as the operator chose: log \(--no-log\), model\(s\) b \(not chosen with --model\)$/,
    );
  });

  it("FAILs on a hit whatever else was not searched", () => {
    const results = stores({ log: ["not scanned", "no log file given"] });
    (results[0] as StoreResult).canaries.add(0);
    expect(report(results).verdict).toMatch(/^FAIL: 1 canary hit\(s\), content was retained in: data dir \(1\)/);
  });
});

describe("store sweep", () => {
  it("counts a scan that failed part-way as incomplete, naming the error's code and never its message", async () => {
    const sweep = new StoreSweep(registry());
    const failing: StoreScanner = {
      store: "redis",
      description: "keys",
      unavailable: async () => null,
      async scan(open) {
        open().feed(Buffer.from("first batch"));
        throw Object.assign(new Error("READONLY cnry-like content"), { code: "ECONNRESET" });
      },
    };
    await sweep.scan(failing);
    const redis = sweep.results().find((result) => result.store === "redis");
    expect(redis).toMatchObject({
      scanned: true,
      coverage: "incomplete",
      gap: "the scan failed part-way (ECONNRESET)",
    });
    expect(redis?.detail).not.toContain("READONLY");
  });
});
