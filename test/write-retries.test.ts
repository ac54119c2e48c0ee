import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CreditGuard } from "../src/billing/credit-guard.js";
import { mintedId, type RequestId } from "../src/config/ids.js";
import { silentLog } from "../src/logging/event-log.js";
import { Meter } from "../src/metering/meter.js";
import { openSqliteStore } from "../src/store/sqlite/open-sqlite-store.js";
import type { Store } from "../src/store/store.js";
import { metadataRecord } from "./support/metadata-records.js";

/** `store` with its metadata inserts and ledger debits failing, as against a database that is away; counts the tries. */
function failingWrites(store: Store): { store: Store; tries: { metadata: number; debits: number } } {
  const tries = { metadata: 0, debits: 0 };
  const bound = (target: object, key: string | symbol) => {
    const value = Reflect.get(target, key);
    return typeof value === "function" ? value.bind(target) : value;
  };
  const ledger = new Proxy(store.ledger, {
    get: (target, key) =>
      key === "debit"
        ? async () => {
            tries.debits++;
            throw new Error("the database is away");
          }
        : bound(target, key),
  });
  const failing = new Proxy(store, {
    get: (target, key) => {
      if (key === "ledger") return ledger;
      if (key === "insertMetadata") {
        return async () => {
          tries.metadata++;
          throw new Error("the database is away");
        };
      }
      return bound(target, key);
    },
  });
  return { store: failing, tries };
}

/** Resolves after `turns` turns of the event loop (setImmediate), so batch flushes get their chance. */
async function turns(count: number): Promise<void> {
  for (let index = 0; index < count; index++) await new Promise((resolve) => setImmediate(resolve));
}

describe("writes while the database is away", () => {
  let dataDir: string;
  let store: Store;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-write-retries-"));
    store = await openSqliteStore(dataDir);
  });

  afterAll(async () => {
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("retries the meter's failed write once per flush interval, not once per record past a batch", async () => {
    const { store: away, tries } = failingWrites(store);
    const meter = new Meter(away, silentLog, { flushIntervalMs: 60_000, batchSize: 4, maxBuffered: 10_000 });
    for (let index = 0; index < 50; index++) {
      meter.record(metadataRecord({ account: null }));
      await turns(2);
    }
    // the first full batch tried once; everything after waits for the retry timer
    expect(tries.metadata).toBe(1);
    expect(meter.pending).toBe(50);
    // shutdown's drain still tries (a bounded number of times) rather than wait for the timer
    await meter.drain();
    expect(tries.metadata).toBe(51);
  });

  it("logs the refusals it drops past the bound as one count a second, not a line each", async () => {
    /** A request refused at the gate: it never reached a supplier. */
    const refusal = () =>
      metadataRecord({ account: null, supplier: null, status: 503, error_code: "LETHE_METERING_UNAVAILABLE" });
    const { store: away } = failingWrites(store);
    const events: { name: string; fields: Record<string, unknown> }[] = [];
    const log = {
      ...silentLog,
      event: (name: string, fields: Record<string, unknown>) => events.push({ name, fields }),
    };
    const meter = new Meter(away, log as typeof silentLog, {
      flushIntervalMs: 60_000,
      batchSize: 1_000,
      maxBuffered: 2,
    });
    meter.record(metadataRecord({ account: null }));
    meter.record(metadataRecord({ account: null }));
    for (let index = 0; index < 500; index++) meter.record(refusal());
    expect(events.filter((event) => event.name === "meter_dropped")).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    meter.record(refusal());
    // a request the shutdown deadline cut had reached its supplier: served in part, never dropped
    meter.record(metadataRecord({ account: null, status: 200, error_code: "LETHE_SHUTTING_DOWN" }));
    expect(meter.pending).toBe(3);
    // the shutdown's drain logs what the last second dropped
    await meter.drain(Date.now());
    expect(events.filter((event) => event.name === "meter_dropped").map((event) => event.fields)).toEqual([
      { records: 500 },
      { records: 1 },
    ]);
  });

  it("retries the ledger's failed write once per flush interval, not once per charge past a batch", async () => {
    const { store: away, tries } = failingWrites(store);
    const account = await store.createAccount({ name: "away" });
    await store.ledger.credit(account.id, 1_000_000, "top_up");
    const guard = new CreditGuard(away, silentLog, 60_000, () => store.changeCounter(), null, 4);
    for (let index = 0; index < 50; index++) {
      const reservation = await guard.reserve(account.id, 10, () => 10);
      guard.settle(reservation, 10, mintedId<RequestId>(`req_away_${index}`));
      await turns(2);
    }
    expect(tries.debits).toBe(1);
    expect(guard.pendingCount).toBe(50);
  });
});
