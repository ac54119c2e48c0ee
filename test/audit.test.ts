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
import { closedPort } from "./support/closed-port.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import { HAS_REDIS_SERVER, startRedis } from "./support/redis-server.js";
import { runCli } from "./support/run-cli.js";

/** Every canary's unique core looks like this: the audit's own output must never hold one. */
const CANARY_CORE = /cnry[0-9a-f]{20}/;

/** What every verdict of a `--no-log` audit that is not a pass ends with. */
const NO_LOG = "; not searched, as the operator chose: log (--no-log: the operator said it cannot be read)";

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
    // several audits in a minute, each sending a few bad keys: the auth-failure throttle must not end the run
    const limits = { rpm: 1_000_000, tpm: 1_000_000_000_000, auth_failures_per_minute: 1_000 };
    target = await startTestGateway({ config: { ...(DEFAULT_CONFIG_FILE as object), limits } });
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
    const result = await runCli(["audit", "--target", target.url, "--key", target.key, "--no-log", "--json"], {
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
      coverage: "complete",
      description: `every file in ${target.dataDir} (SQLite database, WAL, secrets)`,
    });
    // the operator said the log cannot be had: a pass, but one that says what it did not search
    expect(report.stores.find((store) => store.store === "log")?.coverage).toBe("excluded");
    expect(report.excluded).toEqual({ stores: ["log"], models: [] });
    expect(report.verdict).toMatch(/^PASS \(qualified\): .*; not searched, as the operator chose: log \(--no-log: /);
    // the target leaves routing.allow_route_header off: the header is ignored, which is as designed
    expect(report.paths.find((run) => run.name.includes("x-lethe-route"))?.notes).toEqual([]);
    expect(result.out).not.toContain(target.key);
    expect(result.out).not.toMatch(CANARY_CORE);
  }, 60_000);

  it("is inconclusive, exit code 1, when no log file is given: the log is in use and was not searched", async () => {
    const result = await runCli(["audit", "--target", target.url, "--key", target.key, "--json"], {
      LETHE_DATA_DIR: target.dataDir,
    });
    expect(result.code).toBe(1);
    const report = JSON.parse(result.out) as AuditReport;
    expect(report.pass).toBe(false);
    expect(report.stores.find((store) => store.store === "log")?.coverage).toBe("not scanned");
    expect(report.verdict).toBe(
      "INCONCLUSIVE: no canary found, but 1 store(s) in use were not searched in full: " +
        "log (no log file given: pass --log FILE, or --no-log if it cannot be had)",
    );
  }, 60_000);

  it("looks for the data dir where the gateway keeps it by default (./.lethe) when LETHE_DATA_DIR is not set", async () => {
    const cwd = process.cwd();
    const elsewhere = await mkdtemp(path.join(os.tmpdir(), "lethe-audit-cwd-"));
    process.chdir(elsewhere);
    try {
      const result = await runCli(["audit", "--target", target.url, "--key", target.key, "--no-log", "--json"], {});
      expect(result.code).toBe(1);
      const report = JSON.parse(result.out) as AuditReport;
      const dataDir = report.stores.find((store) => store.store === "data dir");
      expect(dataDir?.scanned).toBe(false);
      // the report names the data dir it looked for
      const missing = `${path.join(elsewhere, ".lethe")} does not exist (set LETHE_DATA_DIR)`;
      expect(dataDir?.detail).toBe(missing);
      expect(report.verdict).toBe(
        `INCONCLUSIVE: no canary found, but 1 store(s) in use were not searched in full: data dir (${missing})${NO_LOG}`,
      );
    } finally {
      process.chdir(cwd);
      await rm(elsewhere, { recursive: true, force: true });
    }
  }, 60_000);

  it("is inconclusive, naming each, when the PostgreSQL and Redis the environment names cannot be reached", async () => {
    const [databasePort, redisPort] = [await closedPort(), await closedPort()];
    const result = await runCli(["audit", "--target", target.url, "--key", target.key, "--no-log", "--json"], {
      LETHE_DATA_DIR: target.dataDir,
      LETHE_DATABASE_URL: `postgres://postgres:pw-audfix-9z@127.0.0.1:${databasePort}/lethe`,
      LETHE_REDIS_URL: `redis://:pw-audfix-9z@127.0.0.1:${redisPort}`,
    });
    expect(result.code).toBe(1);
    const report = JSON.parse(result.out) as AuditReport;
    expect(report.verdict).toBe(
      "INCONCLUSIVE: no canary found, but 2 store(s) in use were not searched in full: " +
        `postgres (cannot reach PostgreSQL at 127.0.0.1:${databasePort}/lethe), redis (cannot reach Redis at 127.0.0.1:${redisPort})${NO_LOG}`,
    );
    expect(result.out).not.toContain("pw-audfix-9z");
  }, 60_000);

  it("is inconclusive when /metrics needs an operator token and LETHE_OPERATOR_TOKEN is not set", async () => {
    const guarded = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), server: { metrics_auth: "operator" } },
    });
    try {
      const result = await runCli(["audit", "--target", guarded.url, "--key", guarded.key, "--no-log", "--json"], {
        LETHE_DATA_DIR: guarded.dataDir,
      });
      expect(result.code).toBe(1);
      const report = JSON.parse(result.out) as AuditReport;
      expect(report.verdict).toBe(
        "INCONCLUSIVE: no canary found, but 1 store(s) in use were not searched in full: " +
          `metrics (GET /metrics needs an operator token (set LETHE_OPERATOR_TOKEN))${NO_LOG}`,
      );
    } finally {
      await guarded.close();
      await removeDataDir(guarded);
    }
  }, 60_000);

  it.each([
    [["--target", "http://127.0.0.1:1", "--key", "x"], /^lethe: cannot reach http:\/\/127\.0\.0\.1:1/],
    [["--target", "not a url", "--key", "x"], /^lethe: --target must be an http\(s\) URL/],
    [["--target", "http://127.0.0.1:1"], /^lethe: --target needs --key KEY/],
    [["--key", "sk-lethe-x"], /^lethe: --key is only used with --target URL/],
    [["--log", "lethe.log"], /^lethe: --log FILE is only used with --target URL/],
    [["--no-log"], /^lethe: --no-log is only used with --target URL/],
    [["--model", "m"], /^lethe: --model is only used with --target URL/],
    [
      ["--target", "http://127.0.0.1:1", "--key", "x", "--log", "l", "--no-log"],
      /^lethe: --log FILE and --no-log contradict/,
    ],
    [["--config", "lethe.config.yaml"], /^lethe: lethe audit takes no --config/],
    [["--bogus"], /^lethe: Unknown option '--bogus'/],
  ])("refuses bad input %j with a clear message and exit code 2", async (args, message) => {
    const result = await runCli(["audit", ...args], {});
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
    expect(result.out).toBe("");
  });

  it.each([
    ["LETHE_DATABASE_URL", "mysql://root:hunter2@db/lethe", /^lethe: LETHE_DATABASE_URL is not a postgres:\/\/ URL$/],
    ["LETHE_REDIS_URL", "not a url hunter2", /^lethe: LETHE_REDIS_URL is not a redis:\/\/ URL$/],
  ])(
    "refuses a target audit whose %s is not one, before driving anything, without printing it",
    async (name, value, message) => {
      const result = await runCli(["audit", "--target", "http://127.0.0.1:1", "--key", "x", "--no-log"], {
        [name]: value,
      });
      expect(result.code).toBe(2);
      expect(result.err).toMatch(message);
      expect(result.err).not.toContain("hunter2");
    },
  );

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

  it("is inconclusive when no request of the audit's was served: a target whose supplier is down proves nothing", async () => {
    const config = {
      suppliers: [{ id: "down", type: "openai", base_url: "http://127.0.0.1:9/v1", zdr: true }],
      models: [{ id: "unserved", routes: [{ supplier: "down", model: "m" }] }],
      routing: { max_attempts: 1 },
    };
    const down = await startTestGateway({ config });
    try {
      const result = await runCli(["audit", "--target", down.url, "--key", down.key, "--no-log", "--json"], {
        LETHE_DATA_DIR: down.dataDir,
      });
      expect(result.code).toBe(1);
      const report = JSON.parse(result.out) as AuditReport;
      expect(report.pass).toBe(false);
      expect(report.verdict).toMatch(
        /^INCONCLUSIVE: no canary found, but no request of the audit's was answered with a 2xx/,
      );
    } finally {
      await down.close();
      await removeDataDir(down);
    }
  }, 60_000);

  it("is inconclusive when the audit's key requires ZDR and a model has no ZDR supplier: its canaries never left the gate", async () => {
    const config = {
      suppliers: [
        { id: "demo", type: "demo", zdr: true },
        { id: "keeps-content", type: "demo", zdr: false },
      ],
      models: [
        { id: "lethe-demo", routes: [{ supplier: "demo", model: "lethe-demo" }] },
        { id: "not-zdr", routes: [{ supplier: "keeps-content", model: "lethe-demo" }] },
      ],
    };
    const mixed = await startTestGateway({ config });
    try {
      const result = await runCli(
        ["audit", "--target", mixed.url, "--key", mixed.key, "--model", "not-zdr", "--no-log", "--json"],
        { LETHE_DATA_DIR: mixed.dataDir },
      );
      expect(result.code).toBe(1);
      const report = JSON.parse(result.out) as AuditReport;
      expect(report.pass).toBe(false);
      expect(report.verdict).toMatch(/^INCONCLUSIVE: no canary found, but the gateway refused the audit's key/);
      expect(report.verdict).toContain("ZDR optional");
      const refused = report.paths.filter((path) => path.outcome === "refused by limits");
      expect(refused.length).toBeGreaterThan(5);
      expect(refused[0]?.notes.join(" ")).toContain("LETHE_ZDR_UNAVAILABLE");
    } finally {
      await mixed.close();
      await removeDataDir(mixed);
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

describe("lethe audit with a store it cannot reach, embedded", () => {
  it("is inconclusive when the Redis LETHE_REDIS_URL names cannot be reached", async () => {
    const port = await closedPort();
    const report = await runAudit({ env: { LETHE_REDIS_URL: `redis://127.0.0.1:${port}` } });
    expect(report.pass).toBe(false);
    expect(report.stores.find((store) => store.store === "redis")?.coverage).toBe("not scanned");
    expect(report.verdict).toBe(
      `INCONCLUSIVE: no canary found, but 1 store(s) in use were not searched in full: redis (cannot reach Redis at 127.0.0.1:${port})`,
    );
  }, 60_000);
});

describe("lethe audit against a target with several models, its log in a file", () => {
  const MODELS = ["lethe-demo", "demo-second", "demo-third"];
  let dataDir: string;
  let logFile: string;
  let gateway: Awaited<ReturnType<typeof startGateway>>;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-audit-models-"));
    logFile = `${dataDir}.log`;
    const config = {
      suppliers: [{ id: "demo", type: "demo", zdr: true }],
      models: MODELS.map((id) => ({ id, routes: [{ supplier: "demo", model: "lethe-demo" }] })),
      limits: { rpm: 1_000_000, tpm: 1_000_000_000_000 },
    };
    const env = { LETHE_DATA_DIR: dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1" };
    gateway = await startGateway(resolveConfig(config, env, null), {
      logDestination: { write: (line: string) => appendFileSync(logFile, line) },
    });
  });

  afterAll(async () => {
    await gateway.close();
    await rm(dataDir, { recursive: true, force: true });
    await rm(logFile, { force: true });
  });

  /** The models the gateway recorded requests for, with how many each. */
  async function recordedModels(): Promise<Map<string, number>> {
    await gateway.gateway.meter.drain();
    const db = (gateway.gateway.store as unknown as { db: import("kysely").Kysely<Record<string, { model: string }>> })
      .db;
    const rows = await db.selectFrom("request_metadata").select("model").execute();
    const counts = new Map<string, number>();
    for (const { model } of rows) counts.set(model, (counts.get(model) ?? 0) + 1);
    return counts;
  }

  function audit(...extra: string[]) {
    const args = ["audit", "--target", gateway.url, "--key", gateway.firstStartKey as string, ...extra, "--json"];
    return runCli(args, { LETHE_DATA_DIR: dataDir });
  }

  it("drives every model the target lists, the model-independent paths once, and passes plainly with --log", async () => {
    const before = await recordedModels();
    const result = await audit("--log", logFile);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.out) as AuditReport;
    expect(report.verdict).toMatch(/^PASS: no canary found in any store \(/);
    expect(report.stores.filter((store) => store.coverage !== "complete").map((store) => store.store)).toEqual([
      "postgres",
      "redis",
    ]);
    expect(report.models).toEqual({ listed: MODELS, driven: MODELS, notDriven: [] });
    // each model's content reached the gateway, and so its supplier
    const after = await recordedModels();
    for (const model of MODELS) expect((after.get(model) ?? 0) - (before.get(model) ?? 0)).toBeGreaterThanOrEqual(15);
    const names = report.paths.map((run) => run.name);
    for (const model of MODELS) expect(names).toContain(`openai client -> model ${model}: streamed`);
    expect(names.filter((name) => name.endsWith("client: malformed JSON"))).toHaveLength(2);
    expect(names.filter((name) => name.startsWith("canary in the API key slot"))).toHaveLength(2);
  }, 60_000);

  it("drives only the models chosen with --model, and names the others in a qualified verdict", async () => {
    const before = await recordedModels();
    const result = await audit("--log", logFile, "--model", "demo-third", "--model", "lethe-demo");
    expect(result.code).toBe(0);
    const report = JSON.parse(result.out) as AuditReport;
    expect(report.models).toEqual({ listed: MODELS, driven: ["lethe-demo", "demo-third"], notDriven: ["demo-second"] });
    expect(report.verdict).toMatch(
      /^PASS \(qualified\): .*; not searched, as the operator chose: model\(s\) demo-second \(not chosen with --model\)$/,
    );
    const after = await recordedModels();
    expect(after.get("demo-second")).toBe(before.get("demo-second"));
  }, 60_000);

  it("refuses a --model the target does not list", async () => {
    const result = await audit("--no-log", "--model", "not-served");
    expect(result.code).toBe(2);
    expect(result.err).toMatch(
      /^lethe: --model not-served is not one of the 3 model\(s\) http:\/\/127\.0\.0\.1:\d+ lists$/,
    );
  });
});
