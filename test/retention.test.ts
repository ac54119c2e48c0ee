import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type AccountId, mintedId, type RequestId } from "../src/config/ids.js";
import { DEFAULT_CONFIG_FILE, resolveConfig } from "../src/config/load-config.js";
import type { EventFields, EventLog, EventName } from "../src/logging/event-log.js";
import type { MetadataRecord } from "../src/metering/metadata-record.js";
import { runRetention, scheduleRetention } from "../src/retention/retention-job.js";
import { openStore } from "../src/store/open-store.js";
import type { Store } from "../src/store/store.js";
import { usageForAccount } from "../src/usage/usage-query.js";
import { quantile } from "../src/usage/usage-report.js";
import { startTestGateway } from "./support/gateway-harness.js";
import { at, daysBefore, metadataRecord } from "./support/metadata-records.js";
import { dropSchema } from "./support/scale-rig.js";
import { seededRandom } from "./support/seeded-random.js";

const DAY = 86_400_000;
/** The controlled clock: mid-morning UTC, so "today" and its cutoffs are unambiguous. */
const NOW = Date.parse("2025-06-15T10:00:00Z");
const WINDOWS = { metadataDays: 90, aggregateDays: 400 };

/** Sums of a usage report's groups, keyed by group: what must survive a roll-up unchanged. */
function sums(data: Awaited<ReturnType<typeof usageForAccount>>["data"]) {
  return Object.fromEntries(
    data.map((group) => [
      group.group,
      [
        group.requests,
        group.errors,
        group.input_tokens,
        group.output_tokens,
        group.cached_input_tokens,
        group.reasoning_tokens,
        group.cost_micros,
      ],
    ]),
  );
}

// both stores roll up in SQL (roll-up-day.js): the same numbers, to the percentile, on each
describe.each(["sqlite", "postgres"] as const)("retention (%s)", (kind) => {
  let dataDir: string;
  let schema: string;
  let store: Store;
  let alpha: AccountId;
  let beta: AccountId;

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-retention-"));
    schema = `lethe_retention_${process.pid}_${Date.now()}`;
    const env: Record<string, string> = { LETHE_DATA_DIR: dataDir, LETHE_SECRET: "retention-test-secret-0123456789" };
    if (kind === "postgres") env.LETHE_DATABASE_URL = `postgres://postgres@127.0.0.1:5432/test?schema=${schema}`;
    store = await openStore(resolveConfig({}, env, null));
    alpha = (await store.createAccount({ name: "alpha" })).id;
    beta = (await store.createAccount({ name: "beta" })).id;
  });

  afterEach(async () => {
    vi.useRealTimers();
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
    if (kind === "postgres") await dropSchema(schema);
  });

  /** Random records over the last 130 days for both accounts (and some anonymised ones). */
  async function seed(count: number): Promise<MetadataRecord[]> {
    const random = seededRandom(90_400);
    const records = Array.from({ length: count }, () => {
      const input = random.int(0, 5000);
      const output = random.int(0, 2000);
      const failed = random.chance(0.15);
      return metadataRecord({
        account: random.chance(0.05) ? null : random.pick([alpha, beta]),
        key_id: mintedId(`key_${random.pick(["a", "b"]).repeat(20)}`),
        model: random.pick(["fast-chat", "smart-chat"]),
        supplier: random.pick(["acme-openai", "acme-anthropic", null]),
        ts: NOW - random.int(0, 130 * DAY),
        status: failed ? 502 : 200,
        error_code: failed ? "LETHE_UPSTREAM_ERROR" : null,
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: random.int(0, input),
        reasoning_tokens: random.int(0, output),
        latency_ms: random.int(5, 5000) + random.int(0, 999) / 1000,
        cost_micros: random.int(0, 100_000),
      });
    });
    await store.insertMetadata(records);
    return records;
  }

  async function rawCount(): Promise<number> {
    return (await store.usage.expiredRows(Number.MAX_SAFE_INTEGER)).length;
  }

  async function aggregates() {
    return (await store.usage.dailyRows(alpha, "0000-00-00", "9999-99-99")).concat(
      await store.usage.dailyRows(beta, "0000-00-00", "9999-99-99"),
    );
  }

  it("rolls records past the window into daily aggregates per account, model and supplier; the numbers match", async () => {
    const records = await seed(3000);
    const cutoff = Date.parse("2025-06-15T00:00:00Z") - 90 * DAY;
    const expired = records.filter((record) => record.ts < cutoff);
    expect(expired.length).toBeGreaterThan(300);
    const query = { from: daysBefore(NOW, 140), to: daysBefore(NOW, 0) };
    const before = await Promise.all(
      [alpha, beta].flatMap((account) =>
        (["day", "model"] as const).map((grouping) =>
          usageForAccount(store, account, { ...query, group_by: grouping }, NOW),
        ),
      ),
    );

    const result = await runRetention(store, WINDOWS, NOW);
    expect(result.rolledUp).toBe(expired.length);
    expect(await rawCount()).toBe(records.length - expired.length);
    // the rows past the window are gone; the ones inside it are untouched
    const remaining = await store.usage.expiredRows(Number.MAX_SAFE_INTEGER);
    expect(remaining.every((row) => row.ts >= cutoff)).toBe(true);

    // one aggregate per day, account, model and supplier, with the counts, sums and percentiles of its rows
    const groups = new Map<string, MetadataRecord[]>();
    for (const record of expired) {
      const key = JSON.stringify([
        new Date(record.ts).toISOString().slice(0, 10),
        record.account,
        record.model,
        record.supplier,
      ]);
      groups.set(key, [...(groups.get(key) ?? []), record]);
    }
    expect(result.aggregates).toBe(groups.size);
    const stored = await store.usage.dailyRows(null as unknown as AccountId, "0000-00-00", "9999-99-99");
    expect(stored).toEqual([]); // null never matches: anonymised aggregates belong to no account
    const linked = await aggregates();
    const anonymous = [...groups.keys()].filter((key) => JSON.parse(key)[1] === null).length;
    expect(linked).toHaveLength(groups.size - anonymous);
    for (const row of linked) {
      const source = groups.get(JSON.stringify([row.day, row.account, row.model, row.supplier])) as MetadataRecord[];
      const latencies = source.map((record) => record.latency_ms).sort((a, b) => a - b);
      expect({
        requests: Number(row.requests),
        errors: Number(row.errors),
        input: Number(row.input_tokens),
        output: Number(row.output_tokens),
        cached: Number(row.cached_input_tokens),
        reasoning: Number(row.reasoning_tokens),
        cost: Number(row.cost_micros),
        p50: row.latency_p50_ms,
        p95: row.latency_p95_ms,
        p99: row.latency_p99_ms,
      }).toEqual({
        requests: source.length,
        errors: source.filter((record) => record.error_code !== null).length,
        input: source.reduce((sum, record) => sum + record.input_tokens, 0),
        output: source.reduce((sum, record) => sum + record.output_tokens, 0),
        cached: source.reduce((sum, record) => sum + record.cached_input_tokens, 0),
        reasoning: source.reduce((sum, record) => sum + record.reasoning_tokens, 0),
        cost: source.reduce((sum, record) => sum + record.cost_micros, 0),
        p50: quantile(latencies, 0.5),
        p95: quantile(latencies, 0.95),
        p99: quantile(latencies, 0.99),
      });
    }

    // the usage API reports the same numbers before and after the roll-up
    const after = await Promise.all(
      [alpha, beta].flatMap((account) =>
        (["day", "model"] as const).map((grouping) =>
          usageForAccount(store, account, { ...query, group_by: grouping }, NOW),
        ),
      ),
    );
    after.forEach((report, index) => {
      expect(sums(report.data)).toEqual(sums((before[index] as typeof report).data));
    });

    // a second run at the same time has nothing left to do
    expect(await runRetention(store, WINDOWS, NOW)).toEqual({
      rolledUp: 0,
      aggregates: 0,
      debitsCollapsed: 0,
      unlinked: 0,
    });
    expect(await aggregates()).toHaveLength(linked.length);
  });

  it("folds the ledger's per-request debits of expired days into one debit per account and day", async () => {
    await store.ledger.credit(alpha, 10_000_000, "top_up");
    await store.ledger.credit(beta, 10_000_000, "top_up");
    const dayOne = Date.parse("2025-03-01T00:00:00Z");
    const dayTwo = Date.parse("2025-03-05T00:00:00Z");
    const lastDay = Date.parse("2025-06-15T00:00:00Z") - 91 * DAY;
    const debit = (account: AccountId, ts: number, amountMicros: number) => ({
      accountId: account,
      ts,
      amountMicros,
      requestId: mintedId(`req_${Math.random().toString(36).slice(2)}`) as RequestId,
    });
    await store.ledger.debit([
      debit(alpha, dayOne + 1_000, 100),
      debit(alpha, dayOne + 50_000, 250),
      debit(alpha, dayOne + 80_000_000, 5),
      debit(alpha, dayTwo + 3_600_000, 40),
      debit(alpha, dayTwo + 7_200_000, 60),
      debit(beta, dayOne + 9_000, 7),
      // inside the window: kept as it is
      debit(alpha, NOW - 10 * DAY, 1_000),
      // the day before the cutoff: its raw records go, its debits a day later (a charge may still be retried)
      debit(alpha, lastDay + 3_600_000, 9),
    ]);
    const balances = [await store.ledger.balance(alpha), await store.ledger.balance(beta)];
    const result = await runRetention(store, WINDOWS, NOW);
    expect(result.debitsCollapsed).toBe(6);
    // the balances, the sums of the entries, are what they were
    expect([await store.ledger.balance(alpha), await store.ledger.balance(beta)]).toEqual(balances);
    expect([await store.ledger.sum(alpha), await store.ledger.sum(beta)]).toEqual(balances);
    const debitsOf = async (account: AccountId) =>
      (await store.ledger.recent(account, 100))
        .filter((entry) => entry.kind === "debit")
        .map((entry) => [entry.ts, entry.amountMicros, entry.requestId === null ? null : "request"])
        .sort((a, b) => Number(a[0]) - Number(b[0]));
    expect(await debitsOf(alpha)).toEqual([
      [dayOne, -355, null],
      [dayTwo, -100, null],
      [lastDay + 3_600_000, -9, "request"],
      [NOW - 10 * DAY, -1_000, "request"],
    ]);
    expect(await debitsOf(beta)).toEqual([[dayOne, -7, null]]);
    // a second run finds nothing left to fold; the next day's folds the day before the cutoff
    expect((await runRetention(store, WINDOWS, NOW)).debitsCollapsed).toBe(0);
    expect((await runRetention(store, WINDOWS, NOW + DAY)).debitsCollapsed).toBe(1);
    expect((await debitsOf(alpha))[2]).toEqual([lastDay, -9, null]);
    expect(await store.ledger.sum(alpha)).toBe(balances[0]);
  });

  it("keeps a record exactly at the cutoff, rolls up the one a millisecond before", async () => {
    const cutoff = Date.parse("2025-06-15T00:00:00Z") - 90 * DAY;
    await store.insertMetadata([
      metadataRecord({ account: alpha, ts: cutoff }),
      metadataRecord({ account: alpha, ts: cutoff - 1 }),
    ]);
    // later the same day changes nothing: the window moves by whole UTC days
    expect((await runRetention(store, WINDOWS, NOW + 13 * 3_600_000)).rolledUp).toBe(1);
    expect(await rawCount()).toBe(1);
    // the next day it goes too
    expect((await runRetention(store, WINDOWS, NOW + DAY)).rolledUp).toBe(1);
    expect(await rawCount()).toBe(0);
  });

  it("drops the account pseudonym from aggregates older than the second window", async () => {
    await store.insertMetadata([
      metadataRecord({ account: alpha, ts: at("2025-01-10") }),
      metadataRecord({ account: alpha, ts: at("2025-02-20") }),
      metadataRecord({ account: beta, ts: at("2025-02-20") }),
    ]);
    expect((await runRetention(store, WINDOWS, NOW)).aggregates).toBe(3);
    const ofAlpha = () => store.usage.dailyRows(alpha, "0000-00-00", "9999-99-99");
    expect(await ofAlpha()).toHaveLength(2);
    // 2026-02-14 is 400 days after 2025-01-10: that day is still linked, the next day it is not
    expect((await runRetention(store, WINDOWS, Date.parse("2026-02-14T12:00:00Z"))).unlinked).toBe(0);
    expect((await runRetention(store, WINDOWS, Date.parse("2026-02-15T12:00:00Z"))).unlinked).toBe(1);
    expect((await ofAlpha()).map((row) => row.day)).toEqual(["2025-02-20"]);
    // the unlinked aggregate still counts in the deployment's totals, but no longer in the account's usage
    const report = await usageForAccount(
      store,
      alpha,
      { from: "2025-01-01", to: "2025-03-01" },
      Date.parse("2025-12-01T00:00:00Z"),
    );
    expect(report.data.map((group) => group.group)).toEqual(["2025-02-20"]);
    expect((await runRetention(store, WINDOWS, Date.parse("2026-03-30T12:00:00Z"))).unlinked).toBe(2);
    expect(await ofAlpha()).toEqual([]);
  });

  it("honours configured windows", async () => {
    await store.insertMetadata([
      metadataRecord({ account: alpha, ts: NOW - 8 * DAY }),
      metadataRecord({ account: alpha, ts: NOW - 3 * DAY }),
    ]);
    const result = await runRetention(store, { metadataDays: 7, aggregateDays: 30 }, NOW);
    expect(result).toMatchObject({ rolledUp: 1, aggregates: 1 });
    expect(await rawCount()).toBe(1);
    expect((await runRetention(store, { metadataDays: 7, aggregateDays: 30 }, NOW + 26 * DAY)).unlinked).toBe(1);
  });

  it("runs at start-up and then on its interval, by the clock it is given", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    await store.insertMetadata([
      metadataRecord({ account: alpha, ts: NOW - 100 * DAY }),
      metadataRecord({ account: alpha, ts: NOW - 60 * DAY }),
    ]);
    const runs: EventFields["retention_ran"][] = [];
    let announce: () => void = () => {};
    const log: EventLog = {
      event<Name extends EventName>(name: Name, fields: EventFields[Name]) {
        if (name === "retention_ran") {
          runs.push(fields as EventFields["retention_ran"]);
          announce();
        }
      },
      flush: (done) => done?.(),
    };
    const ran = () => new Promise<void>((resolve) => (announce = resolve));
    let clock = NOW;
    let next = ran();
    const stop = scheduleRetention(store, WINDOWS, log, 3_600_000, () => clock);
    await next;
    expect(runs).toEqual([{ rolled_up: 1, aggregates: 1, debits_collapsed: 0, unlinked: 0 }]);
    // an hour later the clock says a month has passed: the second record is now past the window
    clock = NOW + 31 * DAY;
    next = ran();
    vi.advanceTimersByTime(3_600_000);
    await next;
    expect(runs[1]).toEqual({ rolled_up: 1, aggregates: 1, debits_collapsed: 0, unlinked: 0 });
    stop();
    expect(await rawCount()).toBe(0);
  });
});

describe("the retention windows, as the deployment states them", () => {
  it("are in GET /v1/zdr, from the running config", async () => {
    const gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), retention: { metadata_days: 30, aggregate_days: 200 } },
    });
    try {
      const response = await fetch(`${gateway.baseURL}/zdr`);
      const { statement } = (await response.json()) as {
        statement: { metadata: { retention_days: number }; aggregates: { account_unlinked_after_days: number } };
      };
      expect(statement.metadata.retention_days).toBe(30);
      expect(statement.aggregates.account_unlinked_after_days).toBe(200);
    } finally {
      await gateway.close();
      await rm(gateway.dataDir, { recursive: true, force: true });
    }
  });

  it("default to 90 and 400 days, as the README says", async () => {
    const config = resolveConfig({}, {}, null);
    expect(config.retention).toEqual({ metadataDays: 90, aggregateDays: 400 });
    const readme = (await readFile(path.resolve(import.meta.dirname, "../README.md"), "utf8")).replace(/\s+/g, " ");
    expect(readme).toContain(`kept **${config.retention.metadataDays} days** (\`retention.metadata_days\`)`);
    expect(readme).toContain(`after **${config.retention.aggregateDays} days** (\`retention.aggregate_days\`)`);
  });
});

describe("retention while the gateway writes metadata", () => {
  it("rolls up even when the writer thread commits during the roll-up (SQLite)", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-retention-busy-"));
    const store = await openStore(resolveConfig({}, { LETHE_DATA_DIR: dataDir }, null));
    try {
      const account = (await store.createAccount({ name: "busy" })).id;
      const old = Array.from({ length: 300 }, (_, index) =>
        metadataRecord({ account, ts: NOW - 100 * DAY - index * 1000, status: 200, error_code: null }),
      );
      await store.insertMetadata(old);
      // a flush of fresh records on the writer thread, in flight while retention reads and writes
      const fresh = Array.from({ length: 300 }, () =>
        metadataRecord({ account, ts: NOW, status: 200, error_code: null }),
      );
      const [retention] = await Promise.all([runRetention(store, WINDOWS, NOW), store.insertMetadata(fresh)]);
      expect(retention.rolledUp).toBe(300);
    } finally {
      await store.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("retention run by several processes at once", () => {
  it.each(["sqlite", "postgres"] as const)("rolls each raw row up once (%s)", async (kind) => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-retention-race-"));
    const schema = `lethe_retention_race_${process.pid}`;
    const env: Record<string, string> = { LETHE_DATA_DIR: dataDir, LETHE_SECRET: "retention-race-secret-0123456789" };
    if (kind === "postgres") env.LETHE_DATABASE_URL = `postgres://postgres@127.0.0.1:5432/test?schema=${schema}`;
    // two gateway processes' stores on one database, as two replicas or two workers hold them
    const first = await openStore(resolveConfig({}, env, null));
    const second = await openStore(resolveConfig({}, env, null));
    try {
      const account = (await first.createAccount({ name: "raced" })).id;
      const records = Array.from({ length: 400 }, (_, index) =>
        metadataRecord({ account, ts: NOW - 100 * DAY - index * 1000, status: 200, error_code: null }),
      );
      await first.insertMetadata(records);
      const runs = await Promise.allSettled([
        runRetention(first, WINDOWS, NOW),
        runRetention(second, WINDOWS, NOW),
        runRetention(first, WINDOWS, NOW),
      ]);
      // the runs take turns a day at a time: between them, every row rolled up exactly once
      const rolledUp = runs.map((run) => (run.status === "fulfilled" ? run.value.rolledUp : 0));
      expect(rolledUp.reduce((total, count) => total + count, 0)).toBe(400);
      const from = new Date(NOW - 200 * DAY).toISOString();
      const report = await usageForAccount(first, account, { from, to: new Date(NOW).toISOString() }, NOW);
      expect(report.data.reduce((total, group) => total + group.requests, 0)).toBe(400);
    } finally {
      await first.close();
      await second.close();
      await rm(dataDir, { recursive: true, force: true });
      if (kind === "postgres") {
        const { default: pg } = await import("pg");
        const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/test" });
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await client.end();
      }
    }
  });
});

afterAll(() => {
  vi.useRealTimers();
});
