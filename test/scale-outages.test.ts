import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../src/config/load-config.js";
import { openPostgresStore } from "../src/store/postgres/open-postgres-store.js";
import type { Store } from "../src/store/store.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { GATED_USAGE, type GatedOpenAISupplier, startGatedOpenAISupplier } from "./support/gated-openai-supplier.js";
import { metadataRecord } from "./support/metadata-records.js";
import {
  chat,
  deleteRedisKeys,
  dropSchema,
  dumpRedis,
  dumpSchema,
  POSTGRES_URL,
  type PrivateRedis,
  parseMetrics,
  querySchema,
  REDIS_URL,
  type Replica,
  schemaUrl,
  startPrivateRedis,
  startReplica,
  startTcpProxy,
  type TcpProxy,
  uniqueName,
  waitUntil,
  withPort,
} from "./support/scale-rig.js";

// Outages of each dependency during traffic, with the documented policy checked:
// Redis away → per-replica limits (with a warning event) and revocation through the
// database; PostgreSQL away → metadata buffered up to the bound, 503 past it, every
// buffered record written once it returns. Neither shared server is stopped: Redis
// is a private redis-server, PostgreSQL is reached through a proxy the test cuts.

const PRICE = { input_per_mtok: 2, output_per_mtok: 8 };
const COST = GATED_USAGE.prompt * PRICE.input_per_mtok + GATED_USAGE.completion * PRICE.output_per_mtok;

function config(supplierUrl: string, metering: Record<string, number> = {}) {
  return {
    suppliers: [
      { id: "gated", type: "openai", base_url: supplierUrl, api_key_env: "GATED_KEY", zdr: true },
      { id: "demo", type: "demo", zdr: true },
    ],
    models: [
      { id: "priced-chat", routes: [{ supplier: "gated", model: "gated-upstream", price: PRICE }] },
      { id: "lethe-demo", routes: [{ supplier: "demo", model: "lethe-demo" }] },
    ],
    routing: { max_attempts: 1 },
    limits: { rpm: 1_000_000, tpm: 1_000_000_000_000, auth_failures_per_minute: 1_000 },
    metering,
  };
}

async function readyz(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/readyz`);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

async function dependencyUp(url: string, dependency: string): Promise<number | undefined> {
  const text = await fetch(`${url}/metrics`).then((response) => response.text());
  return parseMetrics(text).find(
    (sample) => sample.name === "lethe_dependency_up" && sample.labels.dependency === dependency,
  )?.value;
}

async function metric(url: string, name: string): Promise<number | undefined> {
  const text = await fetch(`${url}/metrics`).then((response) => response.text());
  return parseMetrics(text).find((sample) => sample.name === name)?.value;
}

describe("Redis goes away and comes back", () => {
  const schema = uniqueName("redis_outage");
  const prefix = `${uniqueName("redis_outage")}:`;
  const canaries: string[] = [];
  let redis: PrivateRedis;
  let supplier: GatedOpenAISupplier;
  let first: Replica;
  let second: Replica;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    supplier = await startGatedOpenAISupplier();
    const env = {
      LETHE_DATABASE_URL: schemaUrl(schema),
      LETHE_REDIS_URL: redis.url,
      LETHE_REDIS_PREFIX: prefix,
      GATED_KEY: "sk-gated-0123456789",
    };
    first = await startReplica(config(supplier.url), env);
    second = await startReplica(config(supplier.url), env);
  });

  afterAll(async () => {
    await first?.close();
    await second?.close();
    await supplier?.close();
    await redis?.stop();
    await dropSchema(schema);
  });

  const body = (label: string) => {
    const canary = makeCanary(label);
    canaries.push(canary);
    return { model: "lethe-demo", messages: [{ role: "user", content: canary }] };
  };
  const statuses = async (url: string, key: string, count: number, label: string) => {
    const seen: number[] = [];
    for (let index = 0; index < count; index++) seen.push((await chat(url, key, body(label))).status);
    return seen;
  };

  it("falls back to per-replica limits with a warning, stays ready, and still refuses revoked keys", async () => {
    const limited = await first.key("limited-before", { rpm: 4 });
    // shared while Redis is up: 4 in all across both replicas
    const before = [
      ...(await statuses(first.url, limited.key, 3, "before")),
      ...(await statuses(second.url, limited.key, 3, "before")),
    ];
    expect(before.filter((status) => status === 200)).toHaveLength(4);
    const doomed = await first.key("doomed");
    expect((await chat(second.url, doomed.key, body("doomed"))).status).toBe(200);

    await redis.kill();
    for (const replica of [first, second]) {
      await waitUntil("readyz to report Redis down", async () => {
        const ready = await readyz(replica.url);
        return (ready.body.dependencies as { redis: string }).redis === "down" ? ready : undefined;
      });
      // degraded, not unready: the replica keeps serving with its own limits
      expect((await readyz(replica.url)).status).toBe(200);
      expect(await dependencyUp(replica.url, "redis")).toBe(0);
    }

    const during = await first.key("limited-during", { rpm: 4 });
    const onFirst = await statuses(first.url, during.key, 6, "during");
    const onSecond = await statuses(second.url, during.key, 6, "during");
    // each replica now counts on its own: 4 each, so 8 in all
    expect(onFirst).toEqual([200, 200, 200, 200, 429, 429]);
    expect(onSecond).toEqual([200, 200, 200, 200, 429, 429]);
    expect(first.logText()).toContain('"event":"rate_limit_degraded"');
    expect(second.logText()).toContain('"event":"rate_limit_degraded"');

    // revocation reaches the other replica through the database alone
    expect(await first.running.gateway.store.revokeKey(doomed.keyId as never)).toBe(true);
    const revokedAt = Date.now();
    await waitUntil(
      "the revoked key to be refused",
      async () => (await chat(second.url, doomed.key, body("doomed"))).status === 401,
      1_000,
      10,
    );
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
  });

  it("shares limits again once Redis is back", async () => {
    await redis.start();
    for (const replica of [first, second]) {
      await waitUntil(
        "readyz to report Redis up",
        async () => ((await readyz(replica.url)).body.dependencies as { redis: string }).redis === "up",
      );
      expect(await dependencyUp(replica.url, "redis")).toBe(1);
    }
    const after = await first.key("limited-after", { rpm: 3 });
    const seen = [
      ...(await statuses(first.url, after.key, 2, "after")),
      ...(await statuses(second.url, after.key, 2, "after")),
    ];
    expect(seen).toEqual([200, 200, 200, 429]);
  });

  it("falls back at once when Redis stops answering without closing its connections, and says so", async () => {
    const limited = await first.key("limited-frozen", { rpm: 2 });
    redis.pause();
    try {
      // the first command to wait out its timeout drops the connection: Redis reads as down
      await waitUntil("readyz to report the frozen Redis down", async () => {
        const ready = await readyz(first.url);
        return (ready.body.dependencies as { redis: string }).redis === "down" ? ready : undefined;
      });
      // served with the replica's own limits, rather than held until Redis answers
      expect(await statuses(first.url, limited.key, 3, "frozen")).toEqual([200, 200, 429]);
    } finally {
      redis.resume();
    }
    await waitUntil(
      "readyz to report Redis up again",
      async () => ((await readyz(first.url)).body.dependencies as { redis: string }).redis === "up",
    );
  });

  it("leaves no canary in PostgreSQL or Redis", async () => {
    await first.close();
    await second.close();
    const keys = await dumpRedis(prefix, redis.url);
    expect(Object.keys(keys).length).toBeGreaterThan(0);
    const hits = await findCanaries(canaries, {
      texts: { ...(await dumpSchema(schema)), ...keys, first: first.logText(), second: second.logText() },
    });
    expect(hits).toEqual([]);
  });
});

describe("PostgreSQL goes away and comes back", () => {
  const schema = uniqueName("pg_outage");
  const prefix = `${uniqueName("pg_outage")}:`;
  const maxBuffered = 20;
  const canaries: string[] = [];
  let proxy: TcpProxy;
  let supplier: GatedOpenAISupplier;
  let replica: Replica;
  let key: string;
  let accountId: string;
  const credits = 1_000 * COST;
  /** Request ids of every answer the client saw served (200). */
  const served: string[] = [];

  const priced = (label: string) => {
    const canary = makeCanary(label);
    canaries.push(canary);
    return {
      model: "priced-chat",
      max_tokens: GATED_USAGE.completion,
      messages: [{ role: "user", content: `${canary} give the fixed answer please` }],
    };
  };

  beforeAll(async () => {
    const url = new URL(POSTGRES_URL);
    proxy = await startTcpProxy(url.hostname, Number(url.port || 5432));
    supplier = await startGatedOpenAISupplier();
    replica = await startReplica(config(supplier.url, { max_buffered: maxBuffered, flush_interval_ms: 50 }), {
      LETHE_DATABASE_URL: schemaUrl(schema, withPort(POSTGRES_URL, proxy.port)),
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: prefix,
      GATED_KEY: "sk-gated-0123456789",
    });
    const made = await replica.key("outage", { credits });
    key = made.key;
    accountId = (await replica.running.gateway.store.findAccountByName("outage"))?.id as string;
  });

  afterAll(async () => {
    await replica?.close();
    await supplier?.close();
    await proxy?.close();
    await dropSchema(schema);
    await deleteRedisKeys(prefix);
  });

  it("buffers metadata up to the bound while PostgreSQL is away, then refuses with 503", async () => {
    // seen once while the database is up: the key and the balance are cached
    const warm = await chat(replica.url, key, priced("warm"));
    expect(warm.status).toBe(200);
    served.push(warm.requestId as string);
    const stranger = await replica.key("stranger");

    await proxy.cut();
    await waitUntil("readyz to report the database down", async () => {
      const ready = await readyz(replica.url);
      return ready.status === 503 && (ready.body.dependencies as { database: string }).database === "down";
    });
    expect(await dependencyUp(replica.url, "database")).toBe(0);

    // a burst at once: every request admitted below the bound must be metered, none served unmetered
    const burst = await Promise.all(Array.from({ length: 30 }, () => chat(replica.url, key, priced("burst"))));
    const refused = burst.filter((answer) => answer.status === 503);
    for (const answer of burst) {
      expect([200, 503]).toContain(answer.status);
      if (answer.status === 200) served.push(answer.requestId as string);
    }
    for (const answer of refused) expect(answer.text).toContain("LETHE_METERING_UNAVAILABLE");

    // one at a time until the bound refuses
    await waitUntil(
      "the metering bound to refuse a request",
      async () => {
        const answer = await chat(replica.url, key, priced("serial"));
        if (answer.status === 200) served.push(answer.requestId as string);
        return answer.status === 503 ? answer : undefined;
      },
      10_000,
      0,
    );
    const buffered = replica.running.gateway.meter.pending;
    expect(buffered).toBeGreaterThanOrEqual(maxBuffered);
    expect(await metric(replica.url, "lethe_meter_buffered_records")).toBe(buffered);
    expect(await metric(replica.url, "lethe_ledger_pending_charges")).toBeGreaterThan(0);
    const refusal = await chat(replica.url, key, priced("refused"));
    expect(refusal.status).toBe(503);
    expect(refusal.text).toContain("LETHE_METERING_UNAVAILABLE");
    // a key never seen before cannot be checked: refused, not served
    const unknown = await chat(replica.url, stranger.key, priced("stranger"));
    expect(unknown.status).toBe(503);
    // the bound was reached by served requests' records (refusals past it are not kept)
    expect(served.length).toBeGreaterThanOrEqual(maxBuffered);
  });

  it("writes every buffered record and charge once PostgreSQL is back", async () => {
    await proxy.restore();
    await waitUntil("readyz to be ready again", async () => (await readyz(replica.url)).status === 200);
    await waitUntil(
      "the meter and the ledger to empty",
      () => replica.running.gateway.meter.pending === 0 && replica.running.gateway.credits.pendingCount === 0,
    );
    expect(await dependencyUp(replica.url, "database")).toBe(1);
    const rows = await querySchema<{ request_id: string }>(
      schema,
      "SELECT request_id FROM request_metadata WHERE status = 200 AND account = $1",
      [accountId],
    );
    expect(new Set(rows.map((row) => row.request_id))).toEqual(new Set(served));
    const debits = await querySchema<{ request_id: string; amount_micros: number }>(
      schema,
      "SELECT request_id, amount_micros FROM ledger_entries WHERE kind = 'debit' AND account_id = $1",
      [accountId],
    );
    expect(new Set(debits.map((row) => row.request_id))).toEqual(new Set(served));
    expect(debits.every((row) => Number(row.amount_micros) === -COST)).toBe(true);
    const [balance] = await querySchema<{ balance_micros: number }>(
      schema,
      "SELECT balance_micros FROM accounts WHERE id = $1",
      [accountId],
    );
    expect(Number(balance?.balance_micros)).toBe(credits - served.length * COST);
    console.info(`PostgreSQL outage: ${served.length - 1} requests served while away, every one written after`);

    // and the gateway serves normally again
    expect((await chat(replica.url, key, priced("after"))).status).toBe(200);
  });

  it("leaves no canary in PostgreSQL, Redis or the log", async () => {
    await replica.close();
    const hits = await findCanaries(canaries, {
      texts: { ...(await dumpSchema(schema)), ...(await dumpRedis(prefix)), log: replica.logText() },
    });
    expect(hits).toEqual([]);
  });
});

describe("credit while PostgreSQL cannot take a hold", () => {
  const schema = uniqueName("pg_holds");
  const prefix = `${uniqueName("pg_holds")}:`;
  // input is free and the gated fake writes exactly max_tokens: each request holds, and costs, 20 × 8
  const perRequest = GATED_USAGE.completion * 8;
  let proxy: TcpProxy;
  let supplier: GatedOpenAISupplier;
  let replica: Replica;
  let replicaConfig: Record<string, unknown>;

  beforeAll(async () => {
    const url = new URL(POSTGRES_URL);
    proxy = await startTcpProxy(url.hostname, Number(url.port || 5432));
    supplier = await startGatedOpenAISupplier();
    replicaConfig = {
      ...config(supplier.url),
      models: [
        {
          id: "output-priced",
          routes: [{ supplier: "gated", model: "gated-upstream", price: { input_per_mtok: 0, output_per_mtok: 8 } }],
        },
      ],
    };
    replica = await startReplica(replicaConfig, replicaEnv(withPort(POSTGRES_URL, proxy.port)));
  });

  /** A replica's environment, on PostgreSQL at `postgresUrl` (the proxy's, or the server's own). */
  const replicaEnv = (postgresUrl: string) => ({
    LETHE_DATABASE_URL: schemaUrl(schema, postgresUrl),
    LETHE_REDIS_URL: REDIS_URL,
    LETHE_REDIS_PREFIX: prefix,
    GATED_KEY: "sk-gated-0123456789",
  });

  /** One output-priced request: it holds, and costs, `perRequest`. */
  const askFor = (key: string, stream = false) =>
    chat(replica.url, key, {
      model: "output-priced",
      max_tokens: GATED_USAGE.completion,
      stream,
      messages: [{ role: "user", content: "the fixed answer" }],
    });

  /** The account's balance in PostgreSQL once every charge this replica settled is written. */
  const writtenBalance = async (name: string) => {
    await waitUntil("the charges to be written", async () => {
      await replica.running.gateway.credits.drain();
      return replica.running.gateway.credits.pendingCount === 0;
    });
    const [account] = await querySchema<{ balance_micros: string }>(
      schema,
      "SELECT balance_micros FROM accounts WHERE name = $1",
      [name],
    );
    return Number(account?.balance_micros);
  };

  afterAll(async () => {
    supplier?.openGate();
    await replica?.close();
    await supplier?.close();
    await proxy?.close();
    await dropSchema(schema);
    await deleteRedisKeys(prefix);
  });

  it("spends in memory only what the database said was left after every hold in flight", async () => {
    const { key } = await replica.key("five-answers", { credits: 5 * perRequest });
    const ask = (stream: boolean) => askFor(key, stream);
    // five streams, all at once, hold the whole balance in the database and wait at the gate
    supplier.closeGate();
    const streams = Array.from({ length: 5 }, () => ask(true));
    await supplier.whenHeld(5);
    expect(await metric(replica.url, "lethe_open_requests")).toBe(5);
    expect((await ask(false)).status).toBe(402);

    await proxy.cut();
    try {
      // the database cannot take a hold now: the replica falls back on its memory, which must
      // know those five holds (it used to hold against the balance read before them)
      const during = await Promise.all(Array.from({ length: 5 }, () => ask(false)));
      expect(during.map((answer) => answer.status)).toEqual([402, 402, 402, 402, 402]);
    } finally {
      supplier.openGate();
      await proxy.restore();
    }
    expect((await Promise.all(streams)).map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200]);
    expect(await writtenBalance("five-answers")).toBe(0);
    expect(await metric(replica.url, "lethe_open_requests")).toBe(0);
  });

  it("falls back on what the database said after every replica's spending, not on its own last hold's answer", async () => {
    const { key } = await replica.key("spent-elsewhere", { credits: 10 * perRequest });
    // this replica's one hold: the database said 9 requests' worth was left
    expect((await askFor(key)).status).toBe(200);
    const other = await startReplica(replicaConfig, replicaEnv(POSTGRES_URL));
    try {
      for (let index = 0; index < 7; index++) {
        const answer = await chat(other.url, key, {
          model: "output-priced",
          max_tokens: GATED_USAGE.completion,
          messages: [{ role: "user", content: "the fixed answer" }],
        });
        expect(answer.status).toBe(200);
      }
      await other.running.gateway.credits.drain();
    } finally {
      await other.close();
    }
    // the other replica's charges are announced: this one reads what is left again
    const [account] = await querySchema<{ id: string }>(schema, "SELECT id FROM accounts WHERE name = $1", [
      "spent-elsewhere",
    ]);
    const credits = replica.running.gateway.credits as unknown as {
      accounts: Map<string, { sharedAvailable: number | null }>;
    };
    await waitUntil(
      "the fallback figure to count the other replica's charges",
      () => credits.accounts.get(account?.id ?? "")?.sharedAvailable === 2 * perRequest,
    );

    await proxy.cut();
    try {
      // two requests' worth left: two served from memory, the rest refused (it served all five)
      const during: number[] = [];
      for (let index = 0; index < 5; index++) during.push((await askFor(key)).status);
      expect(during).toEqual([200, 200, 402, 402, 402]);
    } finally {
      await proxy.restore();
    }
    expect(await writtenBalance("spent-elsewhere")).toBe(0);
  });

  it("falls back within its bounds when PostgreSQL stops answering without closing its connections", async () => {
    const { key } = await replica.key("frozen-database", { credits: 10 * perRequest });
    const ask = () => askFor(key);
    expect((await ask()).status).toBe(200);
    proxy.freeze();
    try {
      // the key's re-check and the credit hold wait their bounds (2 s, 5 s), then use what this
      // replica knows: served, rather than held until the database answers again
      expect((await ask()).status).toBe(200);
      // and the requests right after it do not wait again for a database that did not answer
      for (let index = 0; index < 3; index++) {
        const started = Date.now();
        expect((await ask()).status).toBe(200);
        expect(Date.now() - started).toBeLessThan(1_500);
      }
      // readiness probes answer within their own bound, one query between them, rather than hang
      const probed = Date.now();
      const probes = await Promise.all([readyz(replica.url), readyz(replica.url)]);
      expect(Date.now() - probed).toBeLessThan(3_000);
      expect(probes.map((probe) => probe.status)).toEqual([503, 503]);
    } finally {
      proxy.thaw();
    }
    expect(await writtenBalance("frozen-database")).toBe(5 * perRequest);
  });

  it("counts what it spent in memory against the database's next holds, until those charges are written", async () => {
    const { key } = await replica.key("spent-in-memory", { credits: 3 * perRequest });
    const ask = () => askFor(key);
    expect((await ask()).status).toBe(200);
    await proxy.cut();
    let restored = false;
    try {
      // two more fit what the database said was left: served from memory, charges queued
      expect([(await ask()).status, (await ask()).status]).toEqual([200, 200]);
      await proxy.restore();
      restored = true;
      // the database knows nothing of those two until their charges are written: no third
      expect((await ask()).status).toBe(402);
    } finally {
      if (!restored) await proxy.restore();
    }
    expect(await writtenBalance("spent-in-memory")).toBe(0);
    expect((await ask()).status).toBe(402);
  });
});

describe("a shutdown while PostgreSQL stops answering", () => {
  const schema = uniqueName("pg_stop");
  const prefix = `${uniqueName("pg_stop")}:`;
  let proxy: TcpProxy;
  let supplier: GatedOpenAISupplier;

  beforeAll(async () => {
    const url = new URL(POSTGRES_URL);
    proxy = await startTcpProxy(url.hostname, Number(url.port || 5432));
    supplier = await startGatedOpenAISupplier();
  });

  afterAll(async () => {
    proxy?.thaw();
    await supplier?.close();
    await proxy?.close();
    await dropSchema(schema);
    await deleteRedisKeys(prefix);
  });

  it("ends within its deadlines, saying which steps did not finish, not at the query timeout", async () => {
    const deadlineMs = 1_000;
    const replica = await startReplica(
      { ...config(supplier.url, { flush_interval_ms: 50 }), shutdown: { drain_delay_ms: 0, deadline_ms: deadlineMs } },
      {
        LETHE_DATABASE_URL: schemaUrl(schema, withPort(POSTGRES_URL, proxy.port)),
        LETHE_REDIS_URL: REDIS_URL,
        LETHE_REDIS_PREFIX: prefix,
        GATED_KEY: "sk-gated-0123456789",
      },
    );
    const { key } = await replica.key("stopping", { credits: 1_000_000_000 });
    const ask = () =>
      chat(replica.url, key, { model: "priced-chat", max_tokens: 20, messages: [{ role: "user", content: "hi" }] });
    expect((await ask()).status).toBe(200);
    // the database goes silent with a connection checked out: its query waits for the
    // silence bound (database.query_timeout_ms, 60 s) while records and charges queue
    proxy.freeze();
    const served = await ask();
    expect(served.status).toBe(200);
    const started = Date.now();
    const outcome = await replica.close().then(
      () => "closed",
      () => "failed",
    );
    // the flush gets as long again as the deadline, the store at least a second more; it took
    // the query timeout before, as the write retries and the pool's close waited on the silence
    expect(Date.now() - started).toBeLessThan(3 * deadlineMs + 2_500);
    expect(outcome).toBe("failed");
    expect(replica.logText()).toMatch(/"step":"(ledger|metadata)","event":"server_stop_failed"/);
  });
});

describe("an account row locked by something else", () => {
  const schema = uniqueName("pg_locked");
  const prefix = `${uniqueName("pg_locked")}:`;
  let supplier: GatedOpenAISupplier;
  let replica: Replica;
  let locker: pg.Client | null = null;

  beforeAll(async () => {
    supplier = await startGatedOpenAISupplier();
    replica = await startReplica(config(supplier.url, { flush_interval_ms: 50 }), {
      LETHE_DATABASE_URL: schemaUrl(schema),
      LETHE_REDIS_URL: REDIS_URL,
      LETHE_REDIS_PREFIX: prefix,
      GATED_KEY: "sk-gated-0123456789",
    });
  });

  afterAll(async () => {
    await locker?.end().catch(() => {});
    await replica?.close();
    await supplier?.close();
    await dropSchema(schema);
    await deleteRedisKeys(prefix);
  });

  const balanceOf = async (name: string) => {
    const [row] = await querySchema<{ balance_micros: string }>(
      schema,
      "SELECT balance_micros FROM accounts WHERE name = $1",
      [name],
    );
    return Number(row?.balance_micros);
  };

  it("stalls neither the other accounts' debits nor its own requests for each hold's lock wait", async () => {
    const credits = 1_000 * COST;
    const locked = await replica.key("z-locked", { credits });
    const free = await replica.key("a-free", { credits });
    const ask = (key: string) =>
      chat(replica.url, key, {
        model: "priced-chat",
        max_tokens: GATED_USAGE.completion,
        messages: [{ role: "user", content: "hi" }],
      });
    expect((await ask(locked.key)).status).toBe(200);
    expect((await ask(free.key)).status).toBe(200);
    await waitUntil("the first charges to be written", async () => (await balanceOf("a-free")) === credits - COST);

    // an operator's session (or one orphaned by a network partition) holds the row
    locker = new pg.Client({ connectionString: POSTGRES_URL });
    await locker.connect();
    await locker.query(`SET search_path TO ${schema}`);
    await locker.query("BEGIN");
    await locker.query("SELECT id FROM accounts WHERE name = 'z-locked' FOR UPDATE");
    try {
      // the first hold waits out its lock bound and falls back on memory; the next do not wait again
      expect((await ask(locked.key)).status).toBe(200);
      const started = Date.now();
      expect((await ask(locked.key)).status).toBe(200);
      expect(Date.now() - started).toBeLessThan(1_500);
      // the free account's charges, batched with the locked one's, are written all the same
      for (let index = 0; index < 3; index++) expect((await ask(free.key)).status).toBe(200);
      await waitUntil(
        "the free account's charges to be written",
        async () => (await balanceOf("a-free")) === credits - 4 * COST,
        15_000,
      );
      expect(await balanceOf("z-locked")).toBe(credits - COST);
    } finally {
      await locker.query("ROLLBACK");
    }
    // once the row is free, the locked account's charges follow, each once
    await waitUntil(
      "the locked account's charges to be written",
      async () => (await balanceOf("z-locked")) === credits - 3 * COST,
      15_000,
    );
    expect(await balanceOf("a-free")).toBe(credits - 4 * COST);
  });
});

describe("a PostgreSQL connection that goes silent under a write", () => {
  const schema = uniqueName("pg_silent");
  let proxy: TcpProxy;
  let store: Store;

  beforeAll(async () => {
    const url = new URL(POSTGRES_URL);
    proxy = await startTcpProxy(url.hostname, Number(url.port || 5432));
    store = await openPostgresStore(schemaUrl(schema, withPort(POSTGRES_URL, proxy.port)), 500);
  });

  afterAll(async () => {
    proxy?.thaw();
    await store?.close();
    await proxy?.close();
    await dropSchema(schema);
  });

  it("adds no listener per query to a pooled connection", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on("warning", onWarning);
    try {
      for (let index = 0; index < 30; index++) await store.insertMetadata([metadataRecord({ account: null })]);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", onWarning);
    }
    // Node warns past ten listeners of one kind on one socket
    expect(warnings).not.toContain("MaxListenersExceededWarning");
  });

  it("is given up after database.query_timeout_ms, and the next write goes through on a new connection", async () => {
    await store.insertMetadata([metadataRecord({ account: null, ts: Date.now() })]);
    // the connection open now goes silent, as behind a dropped firewall entry; new ones pass
    proxy.freeze({ existingOnly: true });
    const stuck = new Promise<string>((resolve) => setTimeout(() => resolve("stuck"), 5_000).unref());
    const outcome = await Promise.race([
      store.insertMetadata([metadataRecord({ account: null, ts: Date.now() })]).then(
        () => "written",
        () => "failed",
      ),
      stuck,
    ]);
    // it waited on the silent socket for good before: the meter's only flush with it
    expect(outcome).toBe("failed");
    await store.insertMetadata([metadataRecord({ account: null, ts: Date.now() })]);
    const [rows] = await querySchema<{ count: string }>(schema, "SELECT count(*) FROM request_metadata");
    expect(Number(rows?.count)).toBe(32);
  });
});

describe("PostgreSQL that accepts connections and never answers, at start", () => {
  it("is refused with a message that says so, not a bare error", async () => {
    const silent = createServer(() => {});
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    const port = (silent.address() as AddressInfo).port;
    try {
      const failure = await openPostgresStore(`postgres://postgres@127.0.0.1:${port}/test`).catch(
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(ConfigError);
      expect((failure as Error).message).toMatch(/did not answer at LETHE_DATABASE_URL/);
    } finally {
      silent.close();
    }
  });
});
