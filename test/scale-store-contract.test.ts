import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type AccountId, type KeyId, type ModelId, mintedId, type RequestId } from "../src/config/ids.js";
import type { MetadataRecord } from "../src/metering/metadata-record.js";
import { runRetention } from "../src/retention/retention-job.js";
import { openPostgresStore } from "../src/store/postgres/open-postgres-store.js";
import { openSqliteStore } from "../src/store/sqlite/open-sqlite-store.js";
import type { Store } from "../src/store/store.js";
import { dropSchema, querySchema, schemaTables, schemaUrl, uniqueName, waitUntil } from "./support/scale-rig.js";

// The store contract, run unchanged against the embedded SQLite store and PostgreSQL:
// one query layer (Kysely) must give both the same answers.

const DAY_MS = 86_400_000;

/** Opens stores on one location: `open()` again reaches the same data (another process would). */
interface StoreFactory {
  name: "sqlite" | "postgres";
  location(): Promise<{ open(): Promise<Store>; dispose(): Promise<void> }>;
}

const factories: StoreFactory[] = [
  {
    name: "sqlite",
    async location() {
      const dir = await mkdtemp(path.join(os.tmpdir(), "lethe-contract-"));
      return { open: () => openSqliteStore(dir), dispose: () => rm(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: "postgres",
    async location() {
      const schema = uniqueName("contract");
      return { open: () => openPostgresStore(schemaUrl(schema)), dispose: () => dropSchema(schema) };
    },
  },
];

let sequence = 0;

function record(overrides: Partial<MetadataRecord>): MetadataRecord {
  sequence++;
  return {
    request_id: mintedId<RequestId>(`req_contract${sequence.toString().padStart(6, "0")}`),
    ts: Date.now(),
    account: null,
    key_id: null,
    endpoint: "/v1/chat/completions",
    client_format: "openai",
    model: "fast-chat" as ModelId,
    supplier: null,
    status: 200,
    error_code: null,
    input_tokens: 10,
    output_tokens: 5,
    cached_input_tokens: 2,
    reasoning_tokens: 1,
    latency_ms: 12.5,
    ttft_ms: 3.25,
    output_tokens_per_s: 40,
    streamed: false,
    cache_hit: false,
    cost_micros: 100,
    tokens_estimated: false,
    attempts: 1,
    ...overrides,
  };
}

describe.each(factories)("the store contract on $name", (factory) => {
  const disposers: (() => Promise<void>)[] = [];
  const open = async () => {
    const location = await factory.location();
    const store = await location.open();
    disposers.push(async () => {
      await store.close();
      await location.dispose();
    });
    return { store, location };
  };

  afterAll(async () => {
    for (const dispose of disposers.reverse()) await dispose();
  });

  it("creates and finds accounts, and refuses a duplicate name", async () => {
    const { store } = await open();
    expect(await store.countAccounts()).toBe(0);
    const created = await store.createAccount({ name: "alpha", rpm: 60, tpm: null, email: "ops@example.test" });
    expect(created).toMatchObject({ name: "alpha", rpm: 60, tpm: null, zdrRequired: true, balanceMicros: 0 });
    expect(await store.findAccountByName("alpha")).toEqual(created);
    expect(await store.findAccountById(created.id)).toEqual(created);
    expect(await store.findAccountByName("nobody")).toBeUndefined();
    // PostgreSQL refuses a NUL in a compared text outright: a lookup by such a name finds nothing
    expect(await store.findAccountByName("alpha\u0000")).toBeUndefined();
    await expect(store.createAccount({ name: "alpha" })).rejects.toThrow();
    expect(await store.countAccounts()).toBe(1);
  });

  it("stores keys by hash, lists them, and revokes each once", async () => {
    const { store } = await open();
    const account = await store.createAccount({ name: "keys" });
    const first = await store.createKey({
      accountId: account.id,
      keyHash: "hash-one",
      display: "sk-…one",
      label: "ci",
    });
    const second = await store.createKey({
      accountId: account.id,
      keyHash: "hash-two",
      display: "sk-…two",
      label: null,
      rpm: 5,
      tpm: 500,
    });
    expect((await store.listKeys(account.id)).map((key) => key.id)).toEqual([first.id, second.id]);
    expect(await store.findKeyByHash("hash-two")).toEqual(second);
    expect(await store.findKeyById(first.id)).toEqual(first);
    expect(await store.findKeyByHash("hash-none")).toBeUndefined();
    expect(await store.revokeKey(first.id)).toBe(true);
    expect(await store.revokeKey(first.id)).toBe(false);
    expect(await store.revokeKey(mintedId<KeyId>("key_missing"))).toBe(false);
    expect((await store.findKeyById(first.id))?.revokedAt).toBeTypeOf("number");
    expect((await store.findKeyById(second.id))?.revokedAt).toBeNull();
  });

  it("moves the change counter when another connection revokes a key", async () => {
    const { store, location } = await open();
    const account = await store.createAccount({ name: "watched" });
    const key = await store.createKey({ accountId: account.id, keyHash: "hash-watched", display: "d", label: null });
    const other = await location.open();
    try {
      const before = store.changeCounter();
      await other.revokeKey(key.id);
      // SQLite's data_version and PostgreSQL's LISTEN/NOTIFY both reach this connection
      await waitUntil("a change notice", () => store.changeCounter() !== before, 5_000);
    } finally {
      await other.close();
    }
  });

  it("moves the key counter on key and account changes, and on PostgreSQL not on balance moves", async () => {
    const { store, location } = await open();
    const account = await store.createAccount({ name: "split" });
    const key = await store.createKey({ accountId: account.id, keyHash: "hash-split", display: "d", label: null });
    const other = await location.open();
    try {
      const keysBefore = store.keyChangeCounter();
      const anyBefore = store.changeCounter();
      await other.ledger.credit(account.id, 5_000, "top_up");
      await other.ledger.debit([
        { accountId: account.id, amountMicros: 100, requestId: "req_split" as never, ts: 1, holdId: null },
      ]);
      await waitUntil("a balance notice", () => store.changeCounter() !== anyBefore, 5_000);
      // PostgreSQL: the key cache keeps its keys through balance moves (every ledger flush of
      // every replica announces one). SQLite has one revision for both, but its own writer's
      // debits never move it (revision.ts): only another process's top-ups do, rarely
      if (factory.name === "postgres") expect(store.keyChangeCounter()).toBe(keysBefore);
      await other.revokeKey(key.id);
      await waitUntil("a key notice", () => store.keyChangeCounter() !== keysBefore, 5_000);
    } finally {
      await other.close();
    }
  });

  it("sums the days retention rolled up with the raw ones, per UTC day and model (lethe usage)", async () => {
    const { store } = await open();
    const account = mintedId<AccountId>("acct_rolled");
    const dayOne = Date.parse("2031-05-01T10:00:00Z");
    const dayTwo = dayOne + DAY_MS;
    await store.insertMetadata([
      ...Array.from({ length: 3 }, () => record({ account, ts: dayOne })),
      ...Array.from({ length: 2 }, () => record({ account, ts: dayTwo })),
    ]);
    // on day three, with a one-day window: day one is rolled up, day two stays raw
    const result = await runRetention(store, { metadataDays: 1, aggregateDays: 400 }, dayTwo + DAY_MS);
    expect(result.rolledUp).toBe(3);
    const rows = await store.usageByDayAndModel(account, dayOne - DAY_MS);
    expect(rows.map((row) => [row.day, row.model, row.requests, row.costMicros])).toEqual([
      ["2031-05-01", "fast-chat", 3, 300],
      ["2031-05-02", "fast-chat", 2, 200],
    ]);
    // from mid-day one (after its records): the rolled-up day, counted at its start, is
    // outside the window, as its raw records were before the roll-up
    const fromMidDay = await store.usageByDayAndModel(account, dayOne + 3_600_000);
    expect(fromMidDay.map((row) => [row.day, row.requests])).toEqual([["2031-05-02", 2]]);
    // up to a time (lethe usage stops at now): raw records before it, rolled-up days that start before it
    const untilDayTwo = await store.usageByDayAndModel(account, dayOne - DAY_MS, false, dayTwo);
    expect(untilDayTwo.map((row) => [row.day, row.requests])).toEqual([["2031-05-01", 3]]);
    const untilDayOne = await store.usageByDayAndModel(account, dayOne - DAY_MS, false, dayOne - 36_000_000);
    expect(untilDayOne).toEqual([]);
  });

  it("writes metadata in batches larger than one insert and sums usage per UTC day and model", async () => {
    const { store } = await open();
    const account = mintedId<AccountId>("acct_usage");
    const dayOne = Date.parse("2031-03-01T10:00:00Z");
    const dayTwo = dayOne + DAY_MS;
    const records = [
      // more than one 400-row chunk, in one call
      ...Array.from({ length: 450 }, () => record({ account, ts: dayOne })),
      record({ account, ts: dayTwo, model: "slow-chat" as ModelId, status: 502, error_code: "LETHE_UPSTREAM_ERROR" }),
      record({ account: mintedId<AccountId>("acct_other"), ts: dayTwo }),
    ];
    await store.insertMetadata(records);
    await store.insertMetadata([]);
    expect(await store.usageByDayAndModel(account, dayOne - DAY_MS)).toEqual([
      {
        day: "2031-03-01",
        model: "fast-chat",
        requests: 450,
        errors: 0,
        inputTokens: 4500,
        outputTokens: 2250,
        cachedInputTokens: 900,
        reasoningTokens: 450,
        costMicros: 45_000,
      },
      {
        day: "2031-03-02",
        model: "slow-chat",
        requests: 1,
        errors: 1,
        inputTokens: 10,
        outputTokens: 5,
        cachedInputTokens: 2,
        reasoningTokens: 1,
        costMicros: 100,
      },
    ]);
    expect(await store.usageByDayAndModel(account, dayTwo)).toHaveLength(1);
    const raw = await store.usage.rawRows(account, dayTwo, dayTwo + 1);
    expect(raw).toEqual([
      {
        ts: dayTwo,
        account,
        model: "slow-chat",
        supplier: null,
        key_id: null,
        error_code: "LETHE_UPSTREAM_ERROR",
        input_tokens: 10,
        output_tokens: 5,
        cached_input_tokens: 2,
        reasoning_tokens: 1,
        cost_micros: 100,
        latency_ms: 12.5,
      },
    ]);
    const requests = async () =>
      (await store.usageByDayAndModel(account, 0)).reduce((sum, row) => sum + row.requests, 0);
    // a batch sent again (the retry of a commit whose answer was lost) writes only what is new:
    // a record already there is the same record, skipped rather than failing the batch forever
    const again = { ...(records[0] as MetadataRecord), latency_ms: 999 };
    await store.insertMetadata([record({ account }), again]);
    expect(await requests()).toBe(452);
    const first = await store.usage.rawRows(account, dayOne, dayOne + 1);
    expect(first.every((row) => row.latency_ms === 12.5)).toBe(true);
    // any other refusal fails the batch whole: it is one transaction
    const broken = { ...record({ account }), model: null } as unknown as MetadataRecord;
    await expect(store.insertMetadata([record({ account }), broken])).rejects.toThrow();
    expect(await requests()).toBe(452);
  });

  it("keeps every balance equal to the sum of its ledger entries", async () => {
    const { store } = await open();
    const first = await store.createAccount({ name: "payer-one" });
    const second = await store.createAccount({ name: "payer-two" });
    expect(await store.ledger.credit(first.id, 5_000_000, "top_up")).toBe(5_000_000);
    expect(await store.ledger.credit(second.id, 1_000, "top_up")).toBe(1_000);
    await store.ledger.debit([
      { accountId: first.id, amountMicros: 1_234, requestId: mintedId<RequestId>("req_a"), ts: Date.now() },
      { accountId: first.id, amountMicros: 766, requestId: mintedId<RequestId>("req_b"), ts: Date.now() },
      { accountId: second.id, amountMicros: 1_500, requestId: mintedId<RequestId>("req_c"), ts: Date.now() },
    ]);
    await store.ledger.debit([]);
    // the same batch again (the retry of a COMMIT whose answer was lost) charges only what is new
    await store.ledger.debit([
      { accountId: first.id, amountMicros: 1_234, requestId: mintedId<RequestId>("req_a"), ts: Date.now() },
      { accountId: second.id, amountMicros: 1_500, requestId: mintedId<RequestId>("req_c"), ts: Date.now() },
      { accountId: second.id, amountMicros: 100, requestId: mintedId<RequestId>("req_d"), ts: Date.now() },
    ]);
    expect(await store.ledger.credit(first.id, -1_000, "adjustment")).toBe(4_997_000);
    expect(await store.ledger.balance(first.id)).toBe(4_997_000);
    expect(await store.ledger.sum(first.id)).toBe(4_997_000);
    // a debit may take an account below zero (the documented overrun): the ledger records it as it is
    expect(await store.ledger.balance(second.id)).toBe(-600);
    expect(await store.ledger.sum(second.id)).toBe(-600);
    expect((await store.findAccountById(first.id))?.balanceMicros).toBe(4_997_000);
    const recent = await store.ledger.recent(first.id, 10);
    expect(recent.map((entry) => entry.kind).sort()).toEqual(["adjustment", "debit", "debit", "top_up"]);
    expect(recent.find((entry) => entry.requestId === "req_a")?.amountMicros).toBe(-1_234);
    expect(await store.ledger.balance(mintedId<AccountId>("acct_missing"))).toBe(0);
  });

  it("erases an account: keys revoked, personal data gone, metadata unlinked, ledger kept", async () => {
    const { store } = await open();
    const account = await store.createAccount({ name: "leaving", email: "person@example.test" });
    const key = await store.createKey({ accountId: account.id, keyHash: "hash-leaving", display: "d", label: "mine" });
    await store.ledger.credit(account.id, 900, "top_up");
    await store.insertMetadata([record({ account: account.id, key_id: key.id })]);
    await store.accountAdmin.updateSettings(account.id, { rpm: 7 });
    expect((await store.findAccountById(account.id))?.rpm).toBe(7);
    const now = Date.now();
    await store.accountAdmin.erase(account.id, now);
    const erased = await store.findAccountById(account.id);
    expect(erased).toMatchObject({ name: `deleted-${account.id}`, email: null, deletedAt: now });
    expect(await store.findKeyById(key.id)).toMatchObject({ revokedAt: now, label: null });
    expect(await store.usageByDayAndModel(account.id, 0)).toEqual([]);
    expect(await store.ledger.sum(account.id)).toBe(900);
    expect((await store.accountAdmin.listAccountIds()).map((entry) => entry.name)).toEqual([`deleted-${account.id}`]);
  });

  it("keeps operators and their audit events", async () => {
    const { store } = await open();
    const operator = await store.operators.create("root-operator", "token-hash");
    expect(await store.operators.findByName("root-operator")).toEqual(operator);
    expect(await store.operators.findByHash("token-hash")).toEqual(operator);
    expect(await store.operators.findByHash("other")).toBeUndefined();
    await store.operators.recordEvent({ operatorId: operator.id, action: "account_create", accountId: "acct_x" });
    await store.operators.recordEvent({ operatorId: operator.id, action: "credits_add", amountMicros: 2_500_000 });
    const events = await store.operators.recentEvents(10);
    expect(events).toHaveLength(2);
    expect(events.map((event) => event.action).sort()).toEqual(["account_create", "credits_add"]);
    expect(events.find((event) => event.action === "credits_add")?.amount_micros).toBe(2_500_000);
  });

  it("rolls expired metadata into daily aggregates and drops old pseudonyms", async () => {
    const { store } = await open();
    const account = mintedId<AccountId>("acct_retained");
    const now = Date.parse("2031-06-20T12:00:00Z");
    const old = Date.parse("2031-06-01T08:00:00Z");
    const ancient = Date.parse("2031-01-10T08:00:00Z");
    await store.insertMetadata([
      record({ account, ts: old, latency_ms: 10 }),
      record({ account, ts: old + 1_000, latency_ms: 30, error_code: "LETHE_UPSTREAM_ERROR", status: 502 }),
      record({ account, ts: ancient }),
      record({ account, ts: now - 1_000 }),
    ]);
    const result = await runRetention(store, { metadataDays: 7, aggregateDays: 60 }, now);
    expect(result).toEqual({ rolledUp: 3, aggregates: 2, debitsCollapsed: 0, unlinked: 1 });
    const daily = await store.usage.dailyRows(account, "2031-01-01", "2031-12-31");
    expect(daily).toHaveLength(1);
    expect(daily[0]).toMatchObject({ day: "2031-06-01", requests: 2, errors: 1, latency_p50_ms: 10 });
    expect(await store.usage.rawRows(account, 0, now)).toHaveLength(1);
    // a second run finds nothing new to roll up
    expect(await runRetention(store, { metadataDays: 7, aggregateDays: 60 }, now)).toEqual({
      rolledUp: 0,
      aggregates: 0,
      debitsCollapsed: 0,
      unlinked: 0,
    });
  });

  it("answers ping while the database is there", async () => {
    const { store } = await open();
    expect(await store.ping()).toBe(true);
    expect(store.kind).toBe(factory.name);
  });
});

describe("PostgreSQL start-up", () => {
  it("runs migrations once when several replicas start on a fresh schema at the same moment", async () => {
    const schema = uniqueName("migrate");
    try {
      const stores = await Promise.all(Array.from({ length: 5 }, () => openPostgresStore(schemaUrl(schema))));
      try {
        const account = await (stores[0] as Store).createAccount({ name: "shared" });
        for (const store of stores) expect((await store.findAccountById(account.id))?.name).toBe("shared");
      } finally {
        await Promise.all(stores.map((store) => store.close()));
      }
      const applied = await querySchema<{ name: string }>(schema, "SELECT name FROM lethe_migrations ORDER BY name");
      expect(applied.map((row) => row.name)).toEqual([
        "0001_core",
        "0002_attempts",
        "0003_billing",
        "0004_credit_holds",
        "0005_debit_once",
        "0006_debit_fold",
        "0007_audit_event_operator",
      ]);
      expect(await schemaTables(schema)).toEqual(
        expect.arrayContaining([
          "accounts",
          "api_keys",
          "audit_events",
          "ledger_entries",
          "operators",
          "request_metadata",
          "usage_daily",
        ]),
      );
    } finally {
      await dropSchema(schema);
    }
  });

  it("refuses a schema name that is not a plain identifier", async () => {
    await expect(openPostgresStore(schemaUrl("Robert'); DROP TABLE x;--"))).rejects.toThrow(/lowercase identifier/);
  });
});

describe("the PostgreSQL roll-up", () => {
  it("deletes only the rows it summed: a row committed for the day while it runs is kept for the next run", async () => {
    const schema = uniqueName("rollup_race");
    const store = await openPostgresStore(schemaUrl(schema));
    try {
      const account = mintedId<AccountId>("acct_late");
      const now = Date.parse("2031-06-20T12:00:00Z");
      const old = Date.parse("2031-06-01T08:00:00Z");
      await store.insertMetadata([record({ account, ts: old })]);
      // a record of the same day lands in the middle of the roll-up (a meter's retry after an
      // outage): a trigger on the aggregates writes it, between summing the day and deleting it
      await store.insertMetadata([record({ account, ts: old + 60_000, request_id: "req_late" as RequestId })]);
      await querySchema(
        schema,
        "CREATE TABLE late_rows AS SELECT * FROM request_metadata WHERE request_id = 'req_late'",
      );
      await querySchema(schema, "DELETE FROM request_metadata WHERE request_id = 'req_late'");
      await querySchema(
        schema,
        `CREATE FUNCTION land_late() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           INSERT INTO request_metadata SELECT * FROM late_rows; DELETE FROM late_rows; RETURN NULL;
         END $$`,
      );
      await querySchema(
        schema,
        "CREATE TRIGGER land_late AFTER INSERT ON usage_daily FOR EACH STATEMENT EXECUTE FUNCTION land_late()",
      );
      const windows = { metadataDays: 7, aggregateDays: 60 };
      // the late row was not summed with the day, so it was not deleted with it: the next
      // day's turn of the same run finds it and counts it
      await runRetention(store, windows, now);
      expect(await store.usage.rawRows(account, 0, now)).toEqual([]);
      const daily = await store.usage.dailyRows(account, "2031-01-01", "2031-12-31");
      expect(daily.reduce((sum, row) => sum + row.requests, 0)).toBe(2);
    } finally {
      await store.close();
      await dropSchema(schema);
    }
  });
});

describe("the PostgreSQL change feed", () => {
  it("hears its own schema's changes, not those of another deployment in the same database", async () => {
    const [mine, theirs] = [uniqueName("feed_mine"), uniqueName("feed_theirs")];
    const writer = await openPostgresStore(schemaUrl(mine));
    const reader = await openPostgresStore(schemaUrl(mine));
    const other = await openPostgresStore(schemaUrl(theirs));
    try {
      // a feed not yet listening moves its counter on every read: wait until it holds still
      const settled = (store: Store) =>
        waitUntil("the feed to listen", () => {
          const first = store.keyChangeCounter();
          return store.keyChangeCounter() === first ? first + 1 : false;
        });
      const readerBefore = (await settled(reader)) - 1;
      const otherBefore = (await settled(other)) - 1;
      const account = await writer.createAccount({ name: "feed-account" });
      await writer.accountAdmin.updateSettings(account.id, { rpm: 5 });
      await waitUntil("the same schema's notice", () => reader.keyChangeCounter() !== readerBefore);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(other.keyChangeCounter()).toBe(otherBefore);
    } finally {
      await Promise.all([writer.close(), reader.close(), other.close()]);
      await Promise.all([dropSchema(mine), dropSchema(theirs)]);
    }
  });
});
