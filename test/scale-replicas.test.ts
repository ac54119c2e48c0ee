import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountId } from "../src/config/ids.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { GATED_USAGE, type GatedOpenAISupplier, startGatedOpenAISupplier } from "./support/gated-openai-supplier.js";
import {
  chat,
  deleteRedisKeys,
  dropSchema,
  dumpRedis,
  dumpSchema,
  parseMetrics,
  querySchema,
  REDIS_URL,
  type Replica,
  schemaUrl,
  startReplica,
  uniqueName,
  waitUntil,
  withPostgres,
} from "./support/scale-rig.js";

// Two replicas in this process sharing one PostgreSQL schema and one Redis prefix, as
// two Lethe hosts behind a load balancer would: revocation, rate limits and credit are
// shared, every answered request has its metadata row, and nothing of a body reaches
// PostgreSQL, Redis, the logs or /metrics.

/** Micro-units per token, as the config writes per-million prices. */
const PRICE = { input_per_mtok: 2, output_per_mtok: 8 };
/** What one answer of the gated fake costs: its fixed usage at PRICE. */
const COST = GATED_USAGE.prompt * PRICE.input_per_mtok + GATED_USAGE.completion * PRICE.output_per_mtok;

const CONFIG = {
  suppliers: [
    { id: "gated", type: "openai", base_url: "", api_key_env: "GATED_KEY", zdr: true },
    { id: "demo", type: "demo", zdr: true },
  ],
  models: [
    { id: "priced-chat", routes: [{ supplier: "gated", model: "gated-upstream", price: PRICE }] },
    { id: "lethe-demo", routes: [{ supplier: "demo", model: "lethe-demo" }] },
  ],
  routing: { max_attempts: 1 },
  limits: { rpm: 1_000_000, tpm: 1_000_000_000_000, auth_failures_per_minute: 1_000 },
};

/** A prompt long enough that its estimated input tokens cover the fake's reported prompt tokens. */
function prompt(canary: string): string {
  return `${canary} please give the fixed answer about the weather in the seaside town this afternoon`;
}

describe("two replicas sharing PostgreSQL and Redis", () => {
  const schema = uniqueName("replicas");
  const prefix = `${uniqueName("replicas")}:`;
  const canaries: string[] = [];
  const canary = (label: string) => {
    const made = makeCanary(label);
    canaries.push(made);
    return made;
  };
  let supplier: GatedOpenAISupplier;
  let first: Replica;
  let second: Replica;
  let metricsText = "";

  beforeAll(async () => {
    supplier = await startGatedOpenAISupplier();
    const config = { ...CONFIG, suppliers: [{ ...CONFIG.suppliers[0], base_url: supplier.url }, CONFIG.suppliers[1]] };
    const env = {
      LETHE_DATABASE_URL: schemaUrl(schema),
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: prefix,
      GATED_KEY: "sk-gated-0123456789",
    };
    first = await startReplica(config, env);
    second = await startReplica(config, env);
  });

  afterAll(async () => {
    await first?.close();
    await second?.close();
    await supplier?.close();
    await dropSchema(schema);
    await deleteRedisKeys(prefix);
  });

  it("refuses a key on the other replica within one second of its revocation", async () => {
    const { key, keyId } = await first.key("revocable", { credits: 1_000_000 });
    const body = { model: "lethe-demo", messages: [{ role: "user", content: canary("revoke") }] };
    // both replicas have now checked, and cached, the key
    expect((await chat(first.url, key, body)).status).toBe(200);
    expect((await chat(second.url, key, body)).status).toBe(200);
    expect(await first.running.gateway.store.revokeKey(keyId as never)).toBe(true);
    const revokedAt = Date.now();
    const refused = await waitUntil(
      "the second replica to refuse the revoked key",
      async () => {
        const answer = await chat(second.url, key, body);
        return answer.status === 401 ? answer : undefined;
      },
      1_000,
      10,
    );
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(refused.text).toContain("revoked");
    expect((await chat(first.url, key, body)).status).toBe(401);
  });

  it("shares an account's requests-per-minute limit between the replicas", async () => {
    const { key } = await first.key("limited", { credits: 1_000_000, rpm: 10 });
    const body = { model: "lethe-demo", messages: [{ role: "user", content: canary("rpm") }] };
    const statuses: number[] = [];
    // alternate replicas: per-replica limits would let all 16 through
    for (let index = 0; index < 16; index++) {
      statuses.push((await chat(index % 2 === 0 ? first.url : second.url, key, body)).status);
    }
    expect(statuses.filter((status) => status === 200)).toHaveLength(10);
    expect(statuses.filter((status) => status === 429)).toHaveLength(6);
    expect(first.logText()).not.toContain("rate_limit_degraded");
  });

  /** The account's balance after the burst below, read by the bound check after it. */
  let balanceAfterBurst: number | undefined;

  it("meters and bills every one of 500 concurrent requests split across both replicas", async () => {
    const paidFor = 100;
    const credits = paidFor * COST;
    const { key } = await first.key("bounded", { credits });
    const account = await first.running.gateway.store.findAccountByName("bounded");
    const accountId = account?.id as string;
    const body = {
      model: "priced-chat",
      // every answer's usage is within max_tokens and within the estimated input: the documented bound is zero
      max_tokens: GATED_USAGE.completion,
      messages: [{ role: "user", content: prompt(canary("credit")) }],
    };
    const answers = await Promise.all(
      Array.from({ length: 500 }, (_, index) => chat(index % 2 === 0 ? first.url : second.url, key, body)),
    );
    const statuses = new Map<number, number>();
    for (const answer of answers) statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
    const served = statuses.get(200) ?? 0;
    expect([...statuses.keys()].sort()).toEqual(served === 500 ? [200] : [200, 402]);

    // flush both replicas, then read what PostgreSQL holds
    await first.running.gateway.meter.drain();
    await second.running.gateway.meter.drain();
    await first.running.gateway.credits.drain();
    await second.running.gateway.credits.drain();
    const [balanceRow] = await querySchema<{ balance_micros: number }>(
      schema,
      "SELECT balance_micros FROM accounts WHERE id = $1",
      [accountId],
    );
    const [sumRow] = await querySchema<{ total: number; debits: number }>(
      schema,
      "SELECT sum(amount_micros)::bigint AS total, count(*) FILTER (WHERE kind = 'debit')::int AS debits FROM ledger_entries WHERE account_id = $1",
      [accountId],
    );
    const balance = Number(balanceRow?.balance_micros);
    const overdrawn = Math.max(0, -balance);
    // the figure the report quotes: how far concurrent replicas took the account below zero
    console.info(
      `credit bound: ${served} of 500 served against credit for ${paidFor}; balance ${balance} micros (overdrawn by ${overdrawn}, ${overdrawn / COST} requests)`,
    );
    expect(Number(sumRow?.total)).toBe(balance);
    expect(Number(sumRow?.debits)).toBe(served);
    expect(balance).toBe(credits - served * COST);
    // credit is held in PostgreSQL under the account's lock: the replicas together never
    // admit more than the credit covers
    expect(served).toBeLessThanOrEqual(paidFor);
    expect(balance).toBeGreaterThanOrEqual(0);
    balanceAfterBurst = balance;

    // every answer the clients saw has its metadata row, and there is no other
    const ids = answers.map((answer) => answer.requestId);
    const rows = await querySchema<{ request_id: string; status: number }>(
      schema,
      "SELECT request_id, status FROM request_metadata WHERE account = $1 AND model = 'priced-chat'",
      [accountId],
    );
    expect(rows).toHaveLength(500);
    expect(new Set(rows.map((row) => row.request_id))).toEqual(new Set(ids));
    expect(rows.filter((row) => row.status === 200)).toHaveLength(served);
  });

  // replicas share credit holds in PostgreSQL (docs/scale-out.md, "Credit across replicas")
  it("never takes the account below zero, the bound docs/billing.md documents", async () => {
    const [holds] = await querySchema<{ count: number }>(schema, "SELECT count(*)::int AS count FROM credit_holds");
    // every hold was replaced by its charge or released: none is left behind
    expect(holds?.count).toBe(0);
    expect(balanceAfterBurst).toBeTypeOf("number");
    expect(balanceAfterBurst).toBeGreaterThanOrEqual(0);
  });

  it("forwards nothing, and charges nothing, for a client that left while its credit hold waited on the database", async () => {
    const { key } = await first.key("hold-waits", { credits: 1_000_000 });
    const [account] = await querySchema<{ id: string }>(schema, "SELECT id FROM accounts WHERE name = $1", [
      "hold-waits",
    ]);
    const answeredBefore = supplier.answered;
    await withPostgres(async (locker) => {
      // another replica's hold on this account is in its transaction: the row stays locked
      await locker.query("BEGIN");
      await locker.query(`SELECT 1 FROM ${schema}.accounts WHERE id = $1 FOR UPDATE`, [account?.id]);
      const client = request(`${first.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      });
      client.on("error", () => {});
      client.end(JSON.stringify({ model: "priced-chat", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }));
      // the gateway's hold is queued behind the lock: the client gives up
      await waitUntil("the hold to wait on the row lock", async () => {
        const [waiting] = await querySchema<{ count: number }>(
          schema,
          "SELECT count(*)::int AS count FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        );
        return (waiting?.count ?? 0) > 0;
      });
      client.destroy();
      await new Promise((resolve) => setTimeout(resolve, 100));
      await locker.query("COMMIT");
    });
    const record = await waitUntil("the abandoned request's record", async () => {
      await first.running.gateway.meter.flush();
      const rows = await querySchema<{ status: number; cost_micros: string }>(
        schema,
        "SELECT status, cost_micros FROM request_metadata WHERE account = $1",
        [account?.id],
      );
      return rows[0];
    });
    expect(record.status).toBe(499);
    expect(Number(record.cost_micros)).toBe(0);
    expect(supplier.answered).toBe(answeredBefore);
    await first.running.gateway.credits.drain();
    expect(await first.running.gateway.store.ledger.balance(account?.id as AccountId)).toBe(1_000_000);
  });

  it("reports both dependencies up in readyz and /metrics, with no account, key or content in any label", async () => {
    const failed = await chat(first.url, canary("badkey"), { model: canary("model") });
    expect(failed.status).toBe(401);
    const unknownModel = await chat(first.url, (await first.key("metrics")).key, {
      model: canary("model"),
      messages: [{ role: "user", content: canary("model-body") }],
    });
    expect(unknownModel.status).toBeGreaterThanOrEqual(400);
    for (const replica of [first, second]) {
      const ready = await fetch(`${replica.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({
        status: "ready",
        dependencies: { database: "up", redis: "up" },
        metering: { bound: 100_000 },
      });
      const text = await fetch(`${replica.url}/metrics`).then((response) => response.text());
      metricsText += text;
      const samples = parseMetrics(text);
      const gauge = (name: string, labels: Record<string, string> = {}) =>
        samples.find(
          (sample) =>
            sample.name === name && Object.entries(labels).every(([label, value]) => sample.labels[label] === value),
        );
      expect(gauge("lethe_dependency_up", { dependency: "database" })?.value).toBe(1);
      expect(gauge("lethe_dependency_up", { dependency: "redis" })?.value).toBe(1);
      expect(gauge("lethe_meter_buffered_records")).toBeDefined();
      expect(gauge("lethe_ledger_pending_charges")).toBeDefined();
      expect(gauge("lethe_requests_total", { model: "priced-chat", supplier: "gated", status: "200" })).toBeDefined();
      const allowedLabels = new Set(["model", "supplier", "status", "format", "direction", "code", "dependency"]);
      allowedLabels.add("route").add("le");
      const accountIds = (await querySchema<{ id: string }>(schema, "SELECT id FROM accounts")).map((row) => row.id);
      for (const sample of samples) {
        for (const [label, value] of Object.entries(sample.labels)) {
          expect(allowedLabels, `${sample.name} label ${label}`).toContain(label);
          expect(value).not.toMatch(/acct_|key_|req_|sk-lethe|CANARY/);
          expect(accountIds).not.toContain(value);
        }
      }
    }
  });

  it("leaves no canary in any PostgreSQL table, Redis key, log line or metric", async () => {
    await first.close();
    await second.close();
    const tables = await dumpSchema(schema);
    const keys = await dumpRedis(prefix);
    // the dumps are not empty: the check reads what Lethe really wrote
    expect(Object.keys(tables)).toEqual(
      expect.arrayContaining([
        `postgres:${schema}.request_metadata`,
        `postgres:${schema}.ledger_entries`,
        `postgres:${schema}.accounts`,
        `postgres:${schema}.api_keys`,
      ]),
    );
    expect(tables[`postgres:${schema}.request_metadata`]?.split("\n").length).toBeGreaterThan(500);
    expect(Object.keys(keys).some((name) => name.startsWith(`redis:${prefix}rl:`))).toBe(true);
    expect(Object.keys(keys).some((name) => name.startsWith(`redis:${prefix}auth`))).toBe(true);
    expect(canaries.length).toBeGreaterThanOrEqual(6);
    const hits = await findCanaries(canaries, {
      texts: { ...tables, ...keys, firstLog: first.logText(), secondLog: second.logText(), metrics: metricsText },
    });
    expect(hits).toEqual([]);
  });
});

describe("replicas starting together", () => {
  it("start at the same moment on an empty database: one creates the demo account, none fails", async () => {
    const schema = uniqueName("together");
    const env = { LETHE_DATABASE_URL: schemaUrl(schema) };
    const config = { suppliers: [{ id: "demo", type: "demo", zdr: true }], models: [CONFIG.models[1]] };
    const started = await Promise.allSettled([startReplica(config, env), startReplica(config, env)]);
    try {
      expect(started.map((result) => result.status)).toEqual(["fulfilled", "fulfilled"]);
      const replicas = started.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
      const keys = replicas.map((replica) => replica.running.firstStartKey).filter((key) => key !== null);
      expect(keys).toHaveLength(1);
      const accounts = await querySchema<{ name: string }>(schema, "SELECT name FROM accounts");
      expect(accounts).toEqual([{ name: "demo" }]);
      // the one key works on both
      for (const replica of replicas) {
        const answer = await chat(replica.url, keys[0] as string, {
          model: "lethe-demo",
          messages: [{ role: "user", content: "hello" }],
        });
        expect(answer.status).toBe(200);
      }
    } finally {
      for (const result of started) if (result.status === "fulfilled") await result.value.close();
      await dropSchema(schema);
    }
  });
});

describe("credit holds of finished requests", () => {
  /** Two replicas behind the gated fake whose charges are written only at shutdown: every hold stands for its charge meanwhile. */
  async function startUnflushedReplicas(schema: string) {
    const supplier = await startGatedOpenAISupplier();
    const config = {
      ...CONFIG,
      suppliers: [{ ...CONFIG.suppliers[0], base_url: supplier.url }, CONFIG.suppliers[1]],
      metering: { flush_interval_ms: 600_000, batch_size: 100_000 },
    };
    const env = { LETHE_DATABASE_URL: schemaUrl(schema), GATED_KEY: "sk-gated-0123456789" };
    const replicas = [await startReplica(config, env), await startReplica(config, env)];
    return { supplier, replicas };
  }

  it("count at their charge, not their estimate, until the charge is written", async () => {
    const schema = uniqueName("holds");
    const { supplier, replicas } = await startUnflushedReplicas(schema);
    try {
      // credit for about five requests at their estimate (no max_tokens: 4,096 output tokens
      // reserved), and for several hundred at what each is charged
      const { key } = await (replicas[0] as Replica).key("quick-succession", { credits: 5 * 33_000 });
      const statuses: number[] = [];
      for (let index = 0; index < 30; index++) {
        const replica = replicas[index % 2] as Replica;
        const answer = await chat(replica.url, key, {
          model: "priced-chat",
          messages: [{ role: "user", content: `one of many quick questions, number ${index}` }],
        });
        statuses.push(answer.status);
      }
      expect(statuses.filter((status) => status !== 200)).toEqual([]);
      // unwritten, each charge is still a hold, lowered to what its request cost
      const holds = await querySchema<{ amount: string }>(
        schema,
        "SELECT amount_micros::text AS amount FROM credit_holds",
      );
      expect(holds.length).toBeGreaterThan(20);
      for (const hold of holds) expect(Number(hold.amount)).toBe(COST);
    } finally {
      for (const replica of replicas) await replica.close();
      await supplier.close();
    }
    // written at shutdown: every hold went with its charge
    const [left] = await querySchema<{ count: number }>(schema, "SELECT count(*)::int AS count FROM credit_holds");
    expect(left?.count).toBe(0);
    await dropSchema(schema);
  });

  it("count at their charge when a request cost more than it held, so the overdrawn account is refused", async () => {
    const schema = uniqueName("overrun");
    const { supplier, replicas } = await startUnflushedReplicas(schema);
    try {
      // max_tokens 1 holds a few dozen micro-units; the supplier answers 20 tokens all the same
      // (COST, 180): credit for two such holds, not for one charge and a hold
      const { key } = await (replicas[0] as Replica).key("overrun", { credits: 100 });
      const ask = (replica: Replica) =>
        chat(replica.url, key, { model: "priced-chat", max_tokens: 1, messages: [{ role: "user", content: "hi" }] });
      expect((await ask(replicas[0] as Replica)).status).toBe(200);
      // unwritten, the charge is a hold at its cost, on every replica
      await waitUntil(
        "the hold at the charge",
        async () => {
          const holds = await querySchema<{ amount: string }>(
            schema,
            "SELECT amount_micros::text AS amount FROM credit_holds",
          );
          return holds.length === 1 && Number(holds[0]?.amount) === COST;
        },
        5_000,
      );
      expect((await ask(replicas[1] as Replica)).status).toBe(402);
      expect((await ask(replicas[0] as Replica)).status).toBe(402);
    } finally {
      for (const replica of replicas) await replica.close();
      await supplier.close();
    }
    await dropSchema(schema);
  });
});
