import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Worker } from "node:worker_threads";
import BetterSqlite3 from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { CreditGuard } from "../src/billing/credit-guard.js";
import { mintedId, type RequestId } from "../src/config/ids.js";
import { type EventFields, type EventLog, type EventName, silentLog } from "../src/logging/event-log.js";
import { METADATA_COLUMNS, type MetadataRecord } from "../src/metering/metadata-record.js";
import { Meter } from "../src/metering/meter.js";
import { openSqliteStore, SQLITE_FILE, toParameters } from "../src/store/sqlite/open-sqlite-store.js";
import type { Store } from "../src/store/store.js";
import { metadataRecord } from "./support/metadata-records.js";

// The embedded store's hot writes (metadata records, ledger debits) run on a writer
// thread with its own connection. Everything here is read back through a separate
// connection, as another process would see the file.

const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A fresh store, a read-only connection to its file, and `close` for tests that close the store themselves. */
async function openWithReader() {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-writer-"));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const store: Store = await openSqliteStore(dataDir);
  let open = true;
  cleanups.push(async () => {
    if (open) await store.close();
  });
  const file = path.join(dataDir, SQLITE_FILE);
  const reader = new BetterSqlite3(file, { readonly: true });
  cleanups.push(async () => {
    reader.close();
  });
  const count = (table: string) => reader.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
  const close = async () => {
    open = false;
    await store.close();
  };
  return { store, file, reader, count, close };
}

/** An event log that keeps every event, to check what the meter reported. */
function capturingLog(events: { name: EventName; fields: object }[]): EventLog {
  return {
    event<Name extends EventName>(name: Name, fields: EventFields[Name]) {
      events.push({ name, fields });
    },
    flush(done) {
      done?.();
    },
  };
}

describe("toParameters", () => {
  it("lays a record out in METADATA_COLUMNS order, every field its own value, booleans as 0/1", () => {
    // distinct values everywhere, so a swapped pair of columns cannot go unnoticed
    const record = Object.fromEntries(
      METADATA_COLUMNS.map((column, index) => [column, `value-${index}`]),
    ) as unknown as MetadataRecord;
    const booleans = ["streamed", "cache_hit", "tokens_estimated"] as const;
    // one boolean true at a time, so two boolean columns swapped show too
    for (const set of booleans) {
      const flags = Object.fromEntries(booleans.map((column) => [column, column === set]));
      const expected: unknown[] = METADATA_COLUMNS.map((column, index) =>
        column in flags ? (flags[column] ? 1 : 0) : `value-${index}`,
      );
      expect(toParameters({ ...record, ...flags })).toEqual(expected);
    }
  });
});

describe("SQLite writer thread", () => {
  it("writes metadata records that another connection reads back, booleans as 0/1", async () => {
    const { store, reader, count } = await openWithReader();
    const records = Array.from({ length: 1_500 }, (_, index) =>
      metadataRecord({ account: "acct_writer", streamed: index % 2 === 0, tokens_estimated: true, ttft_ms: index }),
    );
    await store.insertMetadata(records);
    await store.insertMetadata([]);
    expect(count("request_metadata")).toBe(1_500);
    const first = records[0] as (typeof records)[number];
    expect(reader.prepare("SELECT * FROM request_metadata WHERE request_id = ?").get(first.request_id)).toEqual({
      ...first,
      streamed: 1,
      cache_hit: 0,
      tokens_estimated: 1,
    });
  });

  it("lowers each balance by exactly its debits, one entry each under a fresh le_ id", async () => {
    const { store, reader } = await openWithReader();
    const payer = await store.createAccount({ name: "payer" });
    const small = await store.createAccount({ name: "small" });
    await store.ledger.credit(payer.id, 1_000_000, "top_up");
    await store.ledger.credit(small.id, 500, "top_up");
    const debits = Array.from({ length: 300 }, (_, index) => ({
      accountId: index % 3 === 0 ? small.id : payer.id,
      amountMicros: index + 1,
      requestId: mintedId<RequestId>(`req_debit${index}`),
      ts: 1_700_000_000_000 + index,
    }));
    await store.ledger.debit(debits);
    const spent = (accountId: string) =>
      debits.filter((debit) => debit.accountId === accountId).reduce((sum, debit) => sum + debit.amountMicros, 0);
    const balance = reader.prepare("SELECT balance_micros FROM accounts WHERE id = ?").pluck();
    expect(balance.get(payer.id)).toBe(1_000_000 - spent(payer.id));
    // below zero is recorded as it is (the documented overrun)
    expect(balance.get(small.id)).toBe(500 - spent(small.id));
    const entries = reader
      .prepare("SELECT id, account_id, ts, amount_micros, request_id FROM ledger_entries WHERE kind = 'debit'")
      .all() as { id: string; account_id: string; ts: number; amount_micros: number; request_id: string }[];
    expect(entries).toHaveLength(300);
    const byRequest = new Map(entries.map((entry) => [entry.request_id, entry]));
    for (const debit of debits) {
      expect(byRequest.get(debit.requestId)).toMatchObject({
        account_id: debit.accountId,
        ts: debit.ts,
        amount_micros: -debit.amountMicros,
      });
    }
    for (const entry of entries) expect(entry.id).toMatch(/^le_[0-9a-z]{20}$/);
    expect(new Set(entries.map((entry) => entry.id)).size).toBe(300);
    expect(await store.ledger.sum(payer.id)).toBe(await store.ledger.balance(payer.id));
  });

  it("close() writes everything sent before it, then refuses further writes", async () => {
    const { store, count, reader, close } = await openWithReader();
    const account = await store.createAccount({ name: "closing" });
    await store.ledger.credit(account.id, 10_000, "top_up");
    // sent, not awaited: as the last flushes of a shutdown are when close() is called
    const writes = [
      store.insertMetadata(Array.from({ length: 200 }, () => metadataRecord({ account: account.id }))),
      store.ledger.debit([
        { accountId: account.id, amountMicros: 2_500, requestId: mintedId<RequestId>("req_closing"), ts: Date.now() },
      ]),
      store.insertMetadata(Array.from({ length: 200 }, () => metadataRecord({ account: account.id }))),
    ];
    await close();
    await Promise.all(writes);
    expect(count("request_metadata")).toBe(400);
    expect(reader.prepare("SELECT balance_micros FROM accounts WHERE id = ?").pluck().get(account.id)).toBe(7_500);
    await expect(store.insertMetadata([metadataRecord({ account: account.id })])).rejects.toMatchObject({
      code: "WRITER_CLOSED",
    });
  });

  it("rejects a refused write with SQLite's code alone; the meter keeps the batch and writes it once it can", async () => {
    const { store, file, reader, count } = await openWithReader();
    // another connection refuses this account's rows for a while (a trigger): a batch is one
    // transaction, so nothing of it lands
    const other = new BetterSqlite3(file);
    other.exec(`CREATE TRIGGER refuse_conflict BEFORE INSERT ON request_metadata
      WHEN NEW.account = 'acct_conflict' BEGIN SELECT RAISE(ABORT, 'refused'); END`);
    const existing = metadataRecord({ account: "acct_fine" });
    const fresh = metadataRecord({ account: "acct_conflict" });
    const refused = await store.insertMetadata([existing, fresh]).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: "SQLITE_CONSTRAINT_TRIGGER" });
    expect((refused as Error).message).not.toContain(fresh.request_id);
    expect(count("request_metadata")).toBe(0);

    const events: { name: EventName; fields: object }[] = [];
    const meter = new Meter(store, capturingLog(events), { flushIntervalMs: 60_000, batchSize: 100, maxBuffered: 100 });
    meter.record(existing);
    meter.record(fresh);
    await meter.flush();
    expect(events).toEqual([{ name: "meter_flush_failed", fields: { records: 2, code: "LETHE_INTERNAL" } }]);
    expect(meter.pending).toBe(2);
    expect(meter.writtenCount).toBe(0);

    // the refusal goes: the kept records are written on the next flush
    other.exec("DROP TRIGGER refuse_conflict");
    other.close();
    expect(await meter.drain()).toBe(2);
    expect(meter.pending).toBe(0);
    expect(count("request_metadata")).toBe(2);
    const latency = reader.prepare("SELECT latency_ms FROM request_metadata WHERE request_id = ?").pluck();
    expect(latency.get(fresh.request_id)).toBe(100);

    // the same records again (a retry after a commit whose answer was lost): skipped, not refused
    await store.insertMetadata([{ ...existing, latency_ms: 999 }, fresh]);
    expect(count("request_metadata")).toBe(2);
    expect(latency.get(existing.request_id)).toBe(100);
  });

  it("a writer thread that dies after committing, before its answer, loses nothing and writes nothing twice", async () => {
    const { store, reader, count } = await openWithReader();
    const account = await store.createAccount({ name: "dying" });
    await store.ledger.credit(account.id, 100_000, "top_up");
    const events: { name: EventName; fields: object }[] = [];
    const meter = new Meter(store, capturingLog(events), {
      flushIntervalMs: 60_000,
      batchSize: 1_000,
      maxBuffered: 1_000,
    });
    const guard = new CreditGuard(store, silentLog, 60_000);
    for (let index = 0; index < 300; index++) meter.record(metadataRecord({ account: account.id }));
    const reservation = await guard.reserve(account.id, 1_000, () => 1_000);
    guard.settle(reservation, 900, mintedId<RequestId>("req_dying"));
    const flushes = Promise.all([meter.flush(), guard.flush()]);
    // hold the event loop until the thread has committed both, then end it with its answers
    // unread: to this side both writes failed, and both are retried
    const committed = () =>
      count("request_metadata") === 300 &&
      reader.prepare("SELECT count(*) FROM ledger_entries WHERE request_id = 'req_dying'").pluck().get() === 1;
    const deadline = Date.now() + 5_000;
    while (!committed() && Date.now() < deadline);
    expect(committed()).toBe(true);
    const current = (store as unknown as { writer: { worker: Worker | null } }).writer.worker;
    expect(current).not.toBeNull();
    // its answers are already queued for this side (a thread ended after posting still
    // delivers them): drop them, as a thread that died between commit and answer would
    current?.removeAllListeners("message");
    void current?.terminate();
    await flushes;
    expect(events).toEqual([{ name: "meter_flush_failed", fields: { records: 300, code: "LETHE_INTERNAL" } }]);
    expect(guard.pendingCount).toBe(1);

    // a new thread takes the retries: the rows already there are skipped
    expect(await meter.drain()).toBe(300);
    await guard.drain();
    expect(guard.pendingCount).toBe(0);
    expect(count("request_metadata")).toBe(300);
    expect(await store.ledger.balance(account.id)).toBe(99_100);
    expect(await store.ledger.sum(account.id)).toBe(99_100);
  });

  it("does not charge twice a balance the credit guard read between the writer's commit and its answer", async () => {
    const { store, reader } = await openWithReader();
    const account = await store.createAccount({ name: "racing" });
    await store.ledger.credit(account.id, 10_000, "top_up");
    const guard = new CreditGuard(store, silentLog, 60_000);
    const first = await guard.reserve(account.id, 1_000, () => 1_000);
    guard.settle(first, 700, mintedId<RequestId>("req_race_one"));
    await guard.flush();
    expect(await guard.available(account.id)).toBe(9_300);

    const second = await guard.reserve(account.id, 1_000, () => 1_000);
    guard.settle(second, 400, mintedId<RequestId>("req_race_two"));
    // a new turn of the event loop, so the store reads its change counter afresh, as a request would
    await new Promise((resolve) => setImmediate(resolve));
    const flushed = guard.flush();
    // hold the event loop until the writer thread has committed: its answer cannot arrive yet
    const written = reader.prepare("SELECT count(*) FROM ledger_entries WHERE request_id = 'req_race_two'").pluck();
    const deadline = Date.now() + 5_000;
    while (written.get() === 0 && Date.now() < deadline);
    expect(written.get()).toBe(1);
    // the writer's own commit does not send the guard back to the database (revision.ts): the
    // charge counts once, as pending, until its answer arrives
    expect(await guard.available(account.id)).toBe(8_900);
    await flushed;
    expect(await guard.available(account.id)).toBe(8_900);
    expect(await store.ledger.balance(account.id)).toBe(8_900);
  });

  it("moves the change counter for other connections' changes to keys, accounts and the ledger, not for its own writer's debits", async () => {
    const { store, file } = await openWithReader();
    const account = await store.createAccount({ name: "watched" });
    await store.ledger.credit(account.id, 1_000_000, "top_up");
    const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
    await nextTurn();
    let counter = store.changeCounter();

    // this process's own writer thread: debits and metadata leave the counter alone
    for (let batch = 0; batch < 5; batch++) {
      await store.ledger.debit([
        {
          accountId: account.id,
          amountMicros: 10,
          requestId: mintedId<RequestId>(`req_own_${batch}`),
          ts: Date.now(),
          holdId: null,
        },
      ]);
      await store.insertMetadata([metadataRecord({ account: account.id })]);
      await nextTurn();
      expect(store.changeCounter()).toBe(counter);
    }

    // another connection (the CLI, another replica): each kind of change moves it
    const other = new BetterSqlite3(file);
    cleanups.push(async () => {
      other.close();
    });
    const changes = [
      () => other.prepare("UPDATE accounts SET rpm = 5 WHERE id = ?").run(account.id),
      () =>
        other
          .prepare(
            "INSERT INTO ledger_entries (id, account_id, ts, kind, amount_micros, request_id) VALUES ('le_other', ?, 1, 'adjustment', -5, NULL)",
          )
          .run(account.id),
      // another replica's debits: entries, and its account's balance lowered in the same transaction
      () => other.prepare("UPDATE accounts SET balance_micros = balance_micros - 5 WHERE id = ?").run(account.id),
    ];
    for (const change of changes) {
      change();
      await nextTurn();
      const moved = store.changeCounter();
      expect(moved).not.toBe(counter);
      counter = moved;
    }
  });

  it("migrates a ledger that already holds a request debited twice: amounts kept, the duplicate marked", async () => {
    const { store, file, close } = await openWithReader();
    const account = await store.createAccount({ name: "twice" });
    await store.ledger.credit(account.id, 10_000, "top_up");
    await store.ledger.debit([
      { accountId: account.id, amountMicros: 700, requestId: mintedId<RequestId>("req_twice"), ts: 1 },
    ]);
    await close();
    // the state before migration 0005: no unique index, and a retried batch's second debit
    const old = new BetterSqlite3(file);
    old.exec("DROP INDEX ledger_entries_debit_request");
    old.exec("DROP INDEX ledger_entries_request_debit_ts");
    old.exec("ALTER TABLE audit_events DROP COLUMN subject_operator_id");
    old.exec(
      "DELETE FROM lethe_migrations WHERE name IN ('0005_debit_once', '0006_debit_fold', '0007_audit_event_operator')",
    );
    old
      .prepare(
        "INSERT INTO ledger_entries (id, account_id, ts, kind, amount_micros, request_id) VALUES (?, ?, 2, 'debit', -700, 'req_twice')",
      )
      .run(`le_${"z".repeat(20)}`, account.id);
    old.prepare("UPDATE accounts SET balance_micros = balance_micros - 700 WHERE id = ?").run(account.id);
    old.close();

    const reopened = await openSqliteStore(path.dirname(file));
    cleanups.push(() => reopened.close());
    // the balance is still the sum of the entries; the later duplicate is marked, and the
    // request cannot be debited a third time
    expect(await reopened.ledger.balance(account.id)).toBe(8_600);
    expect(await reopened.ledger.sum(account.id)).toBe(8_600);
    const ids = (await reopened.ledger.recent(account.id, 10)).map((entry) => entry.requestId).sort();
    expect(ids).toEqual([null, "req_twice", `req_twice~duplicate~le_${"z".repeat(20)}`]);
    await reopened.ledger.debit([
      { accountId: account.id, amountMicros: 700, requestId: mintedId<RequestId>("req_twice"), ts: 3 },
    ]);
    expect(await reopened.ledger.balance(account.id)).toBe(8_600);
  });

  it("migrates the CLI's operator events written before 0007: by cli, naming the operator changed", async () => {
    const { store, file, close } = await openWithReader();
    await store.operators.recordEvent({ operatorId: null, action: "key_revoke", keyId: "key_x" });
    await store.operators.recordEvent({ operatorId: "op_admin", action: "credits_add", accountId: "acct_x" });
    await close();
    // the state before migration 0007: the CLI wrote the operator it changed as operator_id
    const old = new BetterSqlite3(file);
    old.exec("ALTER TABLE audit_events DROP COLUMN subject_operator_id");
    old.exec("DELETE FROM lethe_migrations WHERE name = '0007_audit_event_operator'");
    const insert = old.prepare("INSERT INTO audit_events (id, ts, operator_id, action) VALUES (?, ?, ?, ?)");
    insert.run("ae_1", 1, "op_changed", "operator_create");
    insert.run("ae_2", 2, "op_changed", "operator_rotate");
    old.close();

    const reopened = await openSqliteStore(path.dirname(file));
    cleanups.push(() => reopened.close());
    const events = (await reopened.operators.recentEvents(10)).map((event) => [
      event.action,
      event.operator_id,
      event.subject_operator_id,
    ]);
    expect(events.sort()).toEqual([
      ["credits_add", "op_admin", null],
      ["key_revoke", null, null],
      ["operator_create", null, "op_changed"],
      ["operator_rotate", null, "op_changed"],
    ]);
  });
});
