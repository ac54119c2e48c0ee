import { appendFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuditReport, renderReport, runAudit, type SeededLeakKind, type StoreName } from "../src/audit/index.js";
import { seededLeak } from "../src/audit/seeded-leak.js";
import { STORE_NAMES } from "../src/audit/stores/store-scanner.js";
import { DEFAULT_CONFIG_FILE, resolveConfig } from "../src/config/load-config.js";
import { startGateway } from "../src/server/start-gateway.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import { HAS_REDIS_SERVER, startRedis } from "./support/redis-server.js";
import { runCli } from "./support/run-cli.js";

/** Every canary's unique core looks like this: the audit's own output must never hold one. */
const CANARY_CORE = /cnry[0-9a-f]{20}/;

function hitsIn(report: AuditReport, store: StoreName): number {
  return report.stores.find((entry) => entry.store === store)?.hits ?? -1;
}

describe("lethe audit, embedded", () => {
  let report: AuditReport;

  beforeAll(async () => {
    report = await runAudit({ env: {} });
  }, 60_000);

  it("drives at least 30 paths through every store kind and finds no canary", () => {
    expect(report.paths.filter((path) => path.outcome === "not as designed")).toEqual([]);
    expect(report.figures.pathsDriven).toBeGreaterThanOrEqual(30);
    expect(report.figures.hits).toBe(0);
    expect(report.pass).toBe(true);
    expect(report.verdict).toMatch(/^PASS: /);
    expect(report.stores.map((store) => store.store)).toEqual([...STORE_NAMES]);
    const scanned = report.stores.filter((store) => store.scanned).map((store) => store.store);
    expect(scanned).toEqual(["data dir", "log", "temp dir", "metrics"]);
    expect(report.stores.find((store) => store.store === "postgres")?.detail).toMatch(/not configured/);
    expect(report.encodings.families).toEqual(["raw", "JSON-escaped", "base64", "URL-encoded", "hex", "UTF-16"]);
  });

  it("lists what this build cannot drive as not applicable, with the reason", () => {
    const cached = report.paths.find((path) => path.name === "cached response");
    expect(cached?.outcome).toBe("not applicable");
    expect(cached?.notes.join(" ")).toMatch(/no response cache/);
  });

  it("prints the table, the figures and the verdict, and never a canary", () => {
    const text = renderReport(report);
    expect(text).toMatch(/\d+ paths driven \(\d+ not applicable\), 4 stores scanned, 6 encodings searched/);
    expect(text.split("\n").at(-1)).toBe(report.verdict);
    expect(text).not.toMatch(CANARY_CORE);
    expect(JSON.stringify(report)).not.toMatch(CANARY_CORE);
  });
});

describe("lethe audit fails on a seeded leak", () => {
  const cases: [SeededLeakKind, StoreName][] = [
    ["log", "log"],
    ["data-dir", "data dir"],
    ["temp-dir", "temp dir"],
    ["metrics", "metrics"],
  ];
  it.each(cases)(
    "a request body written to the %s is found there, and only there",
    async (kind, store) => {
      const report = await runAudit({ env: {}, seedLeak: kind });
      expect(report.pass).toBe(false);
      expect(report.verdict).toMatch(new RegExp(`^FAIL: \\d+ canary hit\\(s\\), content was retained in: ${store} `));
      expect(hitsIn(report, store)).toBeGreaterThan(0);
      for (const other of report.stores) if (other.store !== store) expect(other.hits).toBe(0);
      expect(report.paths.some((path) => (path.hits[store] ?? 0) > 0)).toBe(true);
      expect(renderReport(report)).not.toMatch(CANARY_CORE);
    },
    60_000,
  );
});

describe.skipIf(!HAS_REDIS_SERVER)("lethe audit with LETHE_REDIS_URL", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;

  beforeAll(async () => {
    redis = await startRedis();
  });

  afterAll(async () => {
    await redis?.stop();
  });

  it("scans every key under the audit's prefix, and finds a body the seeded leak pushed there", async () => {
    const report = await runAudit({ env: { LETHE_REDIS_URL: redis.url }, seedLeak: "redis" });
    expect(report.stores.find((store) => store.store === "redis")?.scanned).toBe(true);
    expect(report.pass).toBe(false);
    expect(hitsIn(report, "redis")).toBeGreaterThan(0);
    for (const other of report.stores) if (other.store !== "redis") expect(other.hits).toBe(0);
  }, 60_000);
});

describe("lethe audit on the command line", () => {
  let target: TestGateway;

  beforeAll(async () => {
    target = await startTestGateway();
  });

  afterAll(async () => {
    await target.close();
    await removeDataDir(target);
  });

  it("runs the embedded audit, prints the verdict last and exits 0", async () => {
    const result = await runCli(["audit"], {});
    expect(result.err).toBe("");
    expect(result.code).toBe(0);
    expect(result.out.split("\n").at(-1)).toMatch(/^PASS: no canary found in any store/);
    expect(result.out).not.toMatch(CANARY_CORE);
  }, 60_000);

  it("audits a running deployment with --target and --key, scanning the data dir the environment names", async () => {
    const result = await runCli(["audit", "--target", target.url, "--key", target.key, "--json"], {
      LETHE_DATA_DIR: target.dataDir,
    });
    expect(result.code).toBe(0);
    const report = JSON.parse(result.out) as AuditReport;
    expect(report.mode).toBe("target");
    expect(report.pass).toBe(true);
    expect(report.figures.pathsDriven).toBeGreaterThanOrEqual(20);
    expect(report.figures.pathsNotApplicable).toBeGreaterThan(0);
    expect(report.stores.find((store) => store.store === "data dir")).toMatchObject({
      scanned: true,
      description: `every file in ${target.dataDir} (SQLite database, WAL, secrets)`,
    });
    expect(report.stores.find((store) => store.store === "log")?.detail).toMatch(/--log FILE/);
    // a pass says which stores it could not look into
    expect(report.verdict).toMatch(/^PASS: .*; not scanned: log$/);
    // the target leaves routing.allow_route_header off: the header is ignored, which is as designed
    expect(report.paths.find((run) => run.name.includes("x-lethe-route"))?.notes).toEqual([]);
    expect(result.out).not.toContain(target.key);
    expect(result.out).not.toMatch(CANARY_CORE);
  }, 60_000);

  it("looks for the data dir where the gateway keeps it by default (./.lethe) when LETHE_DATA_DIR is not set", async () => {
    const cwd = process.cwd();
    const elsewhere = await mkdtemp(path.join(os.tmpdir(), "lethe-audit-cwd-"));
    process.chdir(elsewhere);
    try {
      const result = await runCli(["audit", "--target", target.url, "--key", target.key, "--json"], {});
      const report = JSON.parse(result.out) as AuditReport;
      const dataDir = report.stores.find((store) => store.store === "data dir");
      expect(dataDir?.scanned).toBe(false);
      // the report names the data dir it looked for
      expect(dataDir?.detail).toBe(`${path.join(elsewhere, ".lethe")} does not exist (set LETHE_DATA_DIR)`);
      expect(report.verdict).toMatch(/; not scanned: data dir, log$/);
    } finally {
      process.chdir(cwd);
      await rm(elsewhere, { recursive: true, force: true });
    }
  }, 60_000);

  it.each([
    [["--target", "http://127.0.0.1:1", "--key", "x"], /^lethe: cannot reach http:\/\/127\.0\.0\.1:1/],
    [["--target", "not a url", "--key", "x"], /^lethe: --target must be an http\(s\) URL/],
    [["--target", "http://127.0.0.1:1"], /^lethe: --target needs --key KEY/],
    [["--key", "sk-lethe-x"], /^lethe: --key is only used with --target URL/],
    [["--log", "lethe.log"], /^lethe: --log FILE is only used with --target URL/],
    [["--config", "lethe.config.yaml"], /^lethe: lethe audit takes no --config/],
    [["--bogus"], /^lethe: Unknown option '--bogus'/],
  ])("refuses bad input %j with a clear message and exit code 2", async (args, message) => {
    const result = await runCli(["audit", ...args], {});
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
    expect(result.out).toBe("");
  });

  it("is inconclusive, exit code 1, when the target's limits refused the audit's key on some paths", async () => {
    // three requests a minute: most paths' canaries are turned away at the gate and prove nothing
    const limited = await startTestGateway({ config: { ...(DEFAULT_CONFIG_FILE as object), limits: { rpm: 3 } } });
    try {
      const result = await runCli(["audit", "--target", limited.url, "--key", limited.key, "--json"], {
        LETHE_DATA_DIR: limited.dataDir,
      });
      expect(result.code).toBe(1);
      const report = JSON.parse(result.out) as AuditReport;
      expect(report.pass).toBe(false);
      expect(report.figures.pathsRefused).toBeGreaterThan(10);
      expect(report.verdict).toMatch(/^INCONCLUSIVE: no canary found, but the gateway refused the audit's key/);
      const refused = report.paths.filter((path) => path.outcome === "refused by limits");
      expect(refused[0]?.notes.join(" ")).toContain("LETHE_RATE_LIMITED");
    } finally {
      await limited.close();
      await removeDataDir(limited);
    }
  }, 60_000);

  it("refuses a key the target does not accept, without printing it", async () => {
    const wrong = `sk-lethe-${"w".repeat(38)}`;
    const result = await runCli(["audit", "--target", target.url, "--key", wrong], {});
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/refused the key \(HTTP 401\)/);
    expect(result.err).not.toContain(wrong);
  });

  it.each([
    ["log", "log"],
    ["data-dir", "data dir"],
  ] as [SeededLeakKind, StoreName][])(
    "fails with exit code 1 when the target leaks into its %s",
    async (kind, store) => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-audit-target-"));
      const logFile = path.join(dataDir, "..", `${path.basename(dataDir)}.log`);
      const logDestination = { write: (line: string) => appendFileSync(logFile, line) };
      const leak = seededLeak(kind, { logDestination, dataDir, redis: null, databaseUrl: null });
      const env = { LETHE_DATA_DIR: dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1" };
      const leaking = await startGateway(resolveConfig(DEFAULT_CONFIG_FILE, env, null), {
        logDestination,
        configureServer: (app, gateway) => leak.configureServer(app, gateway),
      });
      try {
        const args = ["audit", "--target", leaking.url, "--key", leaking.firstStartKey as string, "--log", logFile];
        const result = await runCli([...args, "--json"], { LETHE_DATA_DIR: dataDir });
        expect(result.code).toBe(1);
        const report = JSON.parse(result.out) as AuditReport;
        expect(hitsIn(report, store)).toBeGreaterThan(0);
        expect(report.verdict).toMatch(/^FAIL: /);
      } finally {
        await leaking.close();
        await rm(dataDir, { recursive: true, force: true });
        await rm(logFile, { force: true });
      }
    },
  );

  it("refuses a log file that does not exist", async () => {
    const result = await runCli(
      ["audit", "--target", target.url, "--key", target.key, "--log", "/nonexistent/lethe.log"],
      {},
    );
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/cannot read the log file/);
  });
});
