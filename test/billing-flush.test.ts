import path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BILLED, type BillingRig, closeBillingRig, startBillingRig } from "./support/billing-rig.js";

const FLUSH_INTERVAL_MS = 50;

/** Polls `done` until it holds or `withinMs` passes; true when it held. */
async function eventually(done: () => boolean, withinMs: number): Promise<boolean> {
  const until = Date.now() + withinMs;
  while (Date.now() < until) {
    if (done()) return true;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return done();
}

describe("metadata and charges settled while a write is in flight", () => {
  let rig: BillingRig;

  beforeAll(async () => {
    rig = await startBillingRig({ metering: { flush_interval_ms: FLUSH_INTERVAL_MS } });
  });

  afterAll(async () => {
    expect(await closeBillingRig(rig)).toEqual([]);
  });

  it("are written once that write ends, with no later request to arm a timer", async () => {
    const gateway = rig.gateway.running.gateway;
    const account = await rig.account("flush-busy", { credits: 1_000_000 });
    const body = { model: BILLED.gpt, max_tokens: 64, messages: [{ role: "user", content: rig.canary("flush") }] };

    // another connection (the CLI, a backup) holds SQLite's write lock: the first flush waits on it
    const other = new Database(path.join(rig.gateway.dataDir, "lethe.db"));
    try {
      other.exec("BEGIN IMMEDIATE");
      expect((await rig.post("/v1/chat/completions", account.key, body)).status).toBe(200);
      // the first request's charge is being written, blocked on the lock
      expect(await eventually(() => gateway.credits.writing, 2_000)).toBe(true);

      expect((await rig.post("/v1/chat/completions", account.key, body)).status).toBe(200);
      // the second request's timers fire while that flush still waits
      await new Promise((resolve) => setTimeout(resolve, FLUSH_INTERVAL_MS * 4));
      expect(gateway.credits.pendingCount).toBe(2);
      other.exec("COMMIT");
    } finally {
      other.close();
    }

    // no further request: the gateway writes the second charge and record on its own
    expect(await eventually(() => gateway.credits.pendingCount === 0 && gateway.meter.pending === 0, 3_000)).toBe(true);
    const records = (await rig.records()).filter((record) => record.account === account.id);
    expect(records).toHaveLength(2);
    const charged = records.reduce((sum, record) => sum + record.cost_micros, 0);
    expect(charged).toBeGreaterThan(0);
    await gateway.credits.drain();
    expect(await gateway.store.ledger.balance(account.id)).toBe(1_000_000 - charged);
  });
});
