import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CreditGuard, type Reservation } from "../src/billing/credit-guard.js";
import { type AccountId, mintedId, type RequestId } from "../src/config/ids.js";
import { type RoutePrice, resolveConfig } from "../src/config/load-config.js";
import { LetheError } from "../src/errors/lethe-error.js";
import { silentLog } from "../src/logging/event-log.js";
import { costMicros } from "../src/metering/cost.js";
import { openStore } from "../src/store/open-store.js";
import type { Store } from "../src/store/store.js";
import { type SeededRandom, seededRandom } from "./support/seeded-random.js";

// Prices per million tokens: tokens × price is exactly the cost in micro-units.
const PRICES: RoutePrice[] = [
  { inputPerMtok: 1, outputPerMtok: 2, cachedInputPerMtok: 0.5, cacheWritePerMtok: 1 },
  { inputPerMtok: 3, outputPerMtok: 15, cachedInputPerMtok: 0.3, cacheWritePerMtok: 3 },
  { inputPerMtok: 0.1, outputPerMtok: 0.2, cachedInputPerMtok: 0.05, cacheWritePerMtok: 0.1 },
];

type Outcome = "success" | "overrun" | "error" | "abort" | "stream-cut";

/** One request in flight, as the model of the test sees it. */
interface InFlight {
  requestId: RequestId;
  accountId: AccountId;
  reservation: Reservation;
  input: number;
  maxOutput: number;
  price: RoutePrice;
}

/** What the ledger must say, kept by the test independently of the guard. */
interface AccountModel {
  id: AccountId;
  balance: number;
  settledCosts: number;
  debits: Map<string, number>;
}

/** A request's reservation, as the gateway computes it: a cheap upper bound, and the tokenizer's exact figure. */
/** A reservation as a promise either way: the guard answers synchronously once it knows the balance. */
function reserving(guard: CreditGuard, accountId: AccountId, upperBound: number, exact: number): Promise<Reservation> {
  return Promise.resolve().then(() => guard.reserve(accountId, upperBound, () => exact));
}

function estimate(random: SeededRandom) {
  const price = random.pick(PRICES);
  const input = random.int(1, 3000);
  const maxOutput = random.int(1, 2000);
  const exact = Math.ceil(input * price.inputPerMtok + maxOutput * price.outputPerMtok);
  return { price, input, maxOutput, exact, upperBound: exact + random.int(0, exact) };
}

/** What the supplier produced for a request that ended with `outcome`: a usage and its metered cost. */
function meteredCost(random: SeededRandom, request: InFlight, outcome: Outcome): number {
  if (outcome === "error") return 0;
  const output =
    outcome === "overrun"
      ? random.int(request.maxOutput + 1, request.maxOutput * 2)
      : outcome === "success"
        ? random.int(0, request.maxOutput)
        : // aborted or cut short: part of the answer was produced, and it is billed
          random.int(0, Math.floor(request.maxOutput / 2));
  const cachedInput = random.int(0, request.input);
  return costMicros({ input: request.input, output, cachedInput, cacheWrite: 0, reasoning: 0 }, request.price);
}

describe("CreditGuard over a real SQLite ledger, randomised", () => {
  let dataDir: string;
  let store: Store;
  /** A second connection to the same database, as the CLI in another process would hold. */
  let cli: Store;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-ledger-"));
    const config = resolveConfig({}, { LETHE_DATA_DIR: dataDir }, null);
    store = await openStore(config);
    cli = await openStore(config);
  });

  afterAll(async () => {
    await cli.close();
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("keeps ledger sum = balance = top-ups − settled costs through 5,000 random requests, never over-reserving", async () => {
    const random = seededRandom(20_240_605);
    // a long flush interval: the test decides when charges are written
    const guard = new CreditGuard(store, silentLog, 60_000);
    const accounts: AccountModel[] = [];
    for (const name of ["alpha", "beta", "gamma"]) {
      const account = await store.createAccount({ name });
      const initial = random.int(100_000, 400_000);
      await store.ledger.credit(account.id, initial, "top_up");
      accounts.push({ id: account.id, balance: initial, settledCosts: 0, debits: new Map() });
    }
    const modelOf = (id: AccountId) => accounts.find((account) => account.id === id) as AccountModel;
    const inFlight: InFlight[] = [];
    const reservedOf = (id: AccountId) =>
      inFlight
        .filter((request) => request.accountId === id)
        .reduce((sum, request) => sum + request.reservation.amountMicros, 0);
    const tally = { admitted: 0, refused: 0, settled: 0, overruns: 0, flushes: 0, checks: 0 };
    let requestCounter = 0;

    const finish = (index: number) => {
      const [request] = inFlight.splice(index, 1) as [InFlight];
      const outcome = random.pick<Outcome>([
        "success",
        "success",
        "success",
        "overrun",
        "error",
        "abort",
        "stream-cut",
      ]);
      const cost = meteredCost(random, request, outcome);
      guard.settle(request.reservation, cost, request.requestId);
      // settling twice (an error after a stream already ended) must change nothing
      if (random.chance(0.05)) guard.settle(request.reservation, cost + 1000, request.requestId);
      const model = modelOf(request.accountId);
      model.balance -= cost;
      model.settledCosts += cost;
      if (cost > 0) model.debits.set(request.requestId, cost);
      tally.settled++;
      if (outcome === "overrun") tally.overruns++;
    };

    for (let step = 0; step < 3_200; step++) {
      const roll = random.next();
      if (roll < 0.45) {
        // a burst of requests arriving together for one account: reservations run concurrently
        const account = random.pick(accounts);
        const availableBefore = account.balance - reservedOf(account.id);
        const planned = Array.from({ length: random.int(1, 6) }, () => estimate(random));
        const results = await Promise.allSettled(
          planned.map((plan) => reserving(guard, account.id, plan.upperBound, plan.exact)),
        );
        let admittedMicros = 0;
        results.forEach((result, index) => {
          const plan = planned[index] as (typeof planned)[number];
          if (result.status === "fulfilled") {
            expect([plan.upperBound, plan.exact]).toContain(result.value.amountMicros);
            admittedMicros += result.value.amountMicros;
            inFlight.push({
              requestId: mintedId<RequestId>(`req_property${++requestCounter}`),
              accountId: account.id,
              reservation: result.value,
              input: plan.input,
              maxOutput: plan.maxOutput,
              price: plan.price,
            });
            tally.admitted++;
          } else {
            expect(result.reason).toBeInstanceOf(LetheError);
            expect((result.reason as LetheError).code).toBe("LETHE_INSUFFICIENT_CREDIT");
            tally.refused++;
          }
        });
        // reservations never take more than was available (nothing, when already overdrawn)
        expect(admittedMicros).toBeLessThanOrEqual(Math.max(0, availableBefore));
        // and a refused request really did not fit in what the burst left
        results.forEach((result, index) => {
          if (result.status === "rejected") {
            expect((planned[index] as (typeof planned)[number]).exact).toBeGreaterThan(
              availableBefore - admittedMicros,
            );
          }
        });
      } else if (roll < 0.85) {
        for (let count = random.int(1, 4); count > 0 && inFlight.length > 0; count--) {
          finish(random.int(0, inFlight.length - 1));
        }
      } else if (roll < 0.9) {
        // charges are written off the request path, whenever the timer fires
        await guard.flush();
        tally.flushes++;
      } else if (roll < 0.93) {
        // a top-up through the admin API of this process: it tells the guard
        const account = random.pick(accounts);
        const amount = random.int(10_000, 200_000);
        await store.ledger.credit(account.id, amount, "top_up");
        guard.forget(account.id);
        account.balance += amount;
      } else if (roll < 0.96) {
        // a top-up or a correction from the CLI in another process: the guard must notice by itself
        const account = random.pick(accounts);
        const amount = random.chance(0.7) ? random.int(10_000, 200_000) : -random.int(1, 50_000);
        await cli.ledger.credit(account.id, amount, amount > 0 ? "top_up" : "adjustment");
        account.balance += amount;
        // another process's commit is seen from the next turn of the event loop (the store reads
        // its change counter once per turn), as the next request after a CLI top-up would be
        await new Promise((resolve) => setImmediate(resolve));
      } else {
        const account = random.pick(accounts);
        expect(await guard.available(account.id)).toBe(account.balance - reservedOf(account.id));
        tally.checks++;
      }
    }
    while (inFlight.length > 0) finish(inFlight.length - 1);
    await guard.drain();
    expect(guard.pendingCount).toBe(0);

    // the run exercised every branch: refusals, overruns, flushes, checks
    expect(tally.admitted).toBeGreaterThan(1_000);
    expect(tally.refused).toBeGreaterThan(100);
    expect(tally.overruns).toBeGreaterThan(50);
    expect(tally.flushes).toBeGreaterThan(50);
    expect(tally.checks).toBeGreaterThan(20);

    for (const account of accounts) {
      expect(await store.ledger.balance(account.id)).toBe(account.balance);
      expect(await store.ledger.sum(account.id)).toBe(account.balance);
      // nothing is left reserved: what may be spent is exactly the balance
      expect(await guard.available(account.id)).toBe(account.balance);
      const debits = (await store.ledger.recent(account.id, 1_000_000)).filter((entry) => entry.kind === "debit");
      expect(debits).toHaveLength(account.debits.size);
      expect(debits.reduce((sum, entry) => sum - entry.amountMicros, 0)).toBe(account.settledCosts);
      for (const entry of debits) expect(-entry.amountMicros).toBe(account.debits.get(entry.requestId ?? ""));
    }
  });

  it("never lets 200 concurrent reservations on a cold account take more than its credit", async () => {
    const account = await store.createAccount({ name: "cold-burst" });
    await store.ledger.credit(account.id, 50 * 1_000, "top_up");
    // a fresh guard has not read the balance yet: every reservation starts by reading it
    const guard = new CreditGuard(store, silentLog, 60_000);
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () => reserving(guard, account.id, 1_000, 1_000)),
    );
    const admitted = results.filter((result) => result.status === "fulfilled");
    expect(admitted).toHaveLength(50);
    expect(await guard.available(account.id)).toBe(0);
    admitted.forEach((result, index) => {
      guard.settle(result.value, 1_000, mintedId<RequestId>(`req_coldburst${index}`));
    });
    await guard.drain();
    expect(await store.ledger.balance(account.id)).toBe(0);
    expect(await store.ledger.sum(account.id)).toBe(0);
  });

  it("refuses a free request only when the account is already overdrawn", async () => {
    const account = await store.createAccount({ name: "free-route" });
    const guard = new CreditGuard(store, silentLog, 60_000);
    await expect(reserving(guard, account.id, 0, 0)).resolves.toMatchObject({ amountMicros: 0 });
    await store.ledger.credit(account.id, -1, "adjustment");
    guard.forget(account.id);
    await expect(reserving(guard, account.id, 0, 0)).rejects.toMatchObject({ code: "LETHE_INSUFFICIENT_CREDIT" });
  });
});
