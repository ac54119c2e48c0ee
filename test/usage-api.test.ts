import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UsageResponse } from "../src/usage/usage-query.js";
import { BILLED, type BillingRig, closeBillingRig, startBillingRig, type TestAccount } from "./support/billing-rig.js";
import { at, daysBefore, metadataRecord } from "./support/metadata-records.js";

describe("GET /v1/usage", () => {
  let rig: BillingRig;
  let own: TestAccount;
  let secondKey: { key: string; keyId: string };
  let other: TestAccount;
  const now = Date.now();
  const today = daysBefore(now, 0);
  const threeDaysAgo = daysBefore(now, 3);
  const twoDaysAgo = daysBefore(now, 2);
  const longAgo = daysBefore(now, 120);

  const usage = async (query: string, key = own.key, headers: Record<string, string> = {}) => {
    const response = await fetch(`${rig.gateway.baseURL}/usage${query}`, {
      headers: { authorization: `Bearer ${key}`, ...headers },
    });
    return { status: response.status, body: (await response.json()) as UsageResponse & { error?: never } };
  };
  const failure = async (query: string, headers: Record<string, string> = {}) => {
    const response = await fetch(`${rig.gateway.baseURL}/usage${query}`, {
      headers: { authorization: `Bearer ${own.key}`, ...headers },
    });
    return { status: response.status, text: await response.text() };
  };

  beforeAll(async () => {
    rig = await startBillingRig();
    own = await rig.account("usage-own", { credits: 1e9 });
    secondKey = await rig.key(own);
    other = await rig.account("usage-other", { credits: 1e9 });
    const store = rig.gateway.running.gateway.store;
    await store.insertMetadata([
      // three days ago, first key, the OpenAI route: three requests, one an upstream error
      metadataRecord({
        account: own.id,
        key_id: own.keyId,
        ts: at(threeDaysAgo, 1),
        latency_ms: 100,
        cost_micros: 1000,
      }),
      metadataRecord({
        account: own.id,
        key_id: own.keyId,
        ts: at(threeDaysAgo, 2),
        latency_ms: 300,
        cost_micros: 2000,
      }),
      metadataRecord({
        account: own.id,
        key_id: own.keyId,
        ts: at(threeDaysAgo, 3),
        latency_ms: 200,
        status: 502,
        error_code: "LETHE_UPSTREAM_ERROR",
        input_tokens: 0,
        output_tokens: 0,
        cost_micros: 0,
      }),
      // two days ago, second key, the Anthropic route
      metadataRecord({
        account: own.id,
        key_id: secondKey.keyId,
        model: BILLED.claude,
        supplier: "fake-anthropic",
        ts: at(twoDaysAgo),
        input_tokens: 1000,
        output_tokens: 500,
        cached_input_tokens: 400,
        reasoning_tokens: 20,
        latency_ms: 50,
        cost_micros: 5_200,
      }),
      // another account's usage on the same days: never shown to this one
      metadataRecord({ account: other.id, key_id: other.keyId, ts: at(threeDaysAgo), cost_micros: 99_999 }),
      metadataRecord({ account: other.id, key_id: other.keyId, ts: at(twoDaysAgo), cost_micros: 99_999 }),
      // a deleted account's anonymised rows belong to nobody
      metadataRecord({ account: null, key_id: null, ts: at(twoDaysAgo), cost_micros: 77_777 }),
    ]);
    // an older day already rolled up by retention, with the percentiles the roll-up computed
    await store.usage.storeAggregates([
      {
        day: longAgo,
        account: own.id,
        model: BILLED.gpt,
        supplier: "fake-openai",
        requests: 40,
        errors: 4,
        input_tokens: 4000,
        output_tokens: 2000,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        cost_micros: 24_000,
        latency_p50_ms: 80,
        latency_p95_ms: 150,
        latency_p99_ms: 190,
      },
    ]);
    // and two real requests today, through the gateway, with canaries in their content
    for (let index = 0; index < 2; index++) {
      const response = await rig.post("/v1/chat/completions", own.key, {
        model: BILLED.gpt,
        max_tokens: 300,
        messages: [{ role: "user", content: rig.canary("usagecontent") }],
      });
      expect(response.status).toBe(200);
    }
    await rig.gateway.running.gateway.meter.drain();
  });

  afterAll(async () => {
    expect(await closeBillingRig(rig)).toEqual([]);
  });

  it("groups by day (the default) over the last 30 days, from this account's metadata only", async () => {
    const { status, body } = await usage("");
    expect(status).toBe(200);
    expect(body).toMatchObject({ object: "usage", group_by: "day" });
    expect(Date.parse(body.to) - Date.parse(body.from)).toBe(30 * 86_400_000);
    expect(body.data.map((group) => group.group)).toEqual([threeDaysAgo, twoDaysAgo, today]);
    expect(body.data[0]).toEqual({
      group: threeDaysAgo,
      requests: 3,
      errors: 1,
      input_tokens: 200,
      output_tokens: 100,
      cached_input_tokens: 0,
      reasoning_tokens: 0,
      cost_micros: 3000,
      cost: "0.003000",
      latency_ms: { p50: 200, p95: 300, p99: 300 },
    });
    // today's two real requests: the fake's usage, 1000 in (400 cached) and 250 out, at 2/1/8 per million
    expect(body.data[2]).toMatchObject({
      requests: 2,
      errors: 0,
      input_tokens: 2000,
      output_tokens: 500,
      cached_input_tokens: 800,
      reasoning_tokens: 100,
      cost_micros: 2 * (600 * 2 + 400 * 1 + 250 * 8),
      cost: "0.007200",
    });
    expect(body.data[2]?.latency_ms.p50).toBeGreaterThan(0);
  });

  it("includes rolled-up days, and groups by model and by key", async () => {
    const range = `from=${longAgo}&to=${today}`;
    const byDay = await usage(`?${range}&group_by=day`);
    expect(byDay.body.data.map((group) => group.group)).toEqual([longAgo, threeDaysAgo, twoDaysAgo, today]);
    expect(byDay.body.data[0]).toMatchObject({ requests: 40, errors: 4, cost_micros: 24_000, cost: "0.024000" });
    // a group that is one rolled-up day of one model gives that day's percentiles
    expect(byDay.body.data[0]?.latency_ms).toEqual({ p50: 80, p95: 150, p99: 190 });
    // a bare `to` date includes that whole day
    expect(byDay.body.to).toBe(new Date(at(today, 24)).toISOString());

    const byModel = await usage(`?${range}&group_by=model`);
    expect(byModel.body.data.map((group) => [group.group, group.requests, group.cost_micros])).toEqual([
      [BILLED.claude, 1, 5_200],
      [BILLED.gpt, 40 + 3 + 2, 24_000 + 3000 + 7200],
    ]);
    expect(byModel.body.data[0]?.latency_ms).toEqual({ p50: 50, p95: 50, p99: 50 });
    // percentiles of a rolled-up day and of raw rows do not combine: none rather than a made-up one
    expect(byModel.body.data[1]?.latency_ms).toEqual({ p50: null, p95: null, p99: null });

    const byKey = await usage(`?${range}&group_by=key`);
    // per key; rolled-up days keep no key and come under `none`
    expect(byKey.body.data.map((group) => [group.group, group.requests]).sort()).toEqual(
      [
        [own.keyId, 3 + 2],
        [secondKey.keyId, 1],
        ["none", 40],
      ].sort(),
    );
    // the totals agree whatever the grouping
    const total = (groups: UsageResponse["data"]) => groups.reduce((sum, group) => sum + group.cost_micros, 0);
    expect(total(byDay.body.data)).toBe(total(byModel.body.data));
    expect(total(byKey.body.data)).toBe(total(byDay.body.data));
  });

  it("counts a rolled-up day at its start: windows that meet within it count it once", async () => {
    const noon = encodeURIComponent(new Date(at(longAgo, 12)).toISOString());
    const before = await usage(`?from=${daysBefore(Date.parse(`${longAgo}T00:00:00Z`), 1)}&to=${noon}`);
    const after = await usage(`?from=${noon}&to=${daysBefore(now, 110)}`);
    expect(before.body.data.map((group) => [group.group, group.requests])).toEqual([[longAgo, 40]]);
    expect(after.body.data).toEqual([]);
  });

  it("shows each account only its own usage", async () => {
    const { body } = await usage(`?from=${threeDaysAgo}&to=${today}&group_by=model`, other.key);
    expect(body.data).toHaveLength(1);
    expect(body.data[0]).toMatchObject({ group: BILLED.gpt, requests: 2, cost_micros: 2 * 99_999 });
  });

  it("accepts ISO 8601 times as bounds, half-open", async () => {
    const { body } = await usage(
      `?from=${encodeURIComponent(new Date(at(threeDaysAgo, 2)).toISOString())}&to=${encodeURIComponent(new Date(at(threeDaysAgo, 3)).toISOString())}`,
    );
    expect(body.data).toHaveLength(1);
    expect(body.data[0]).toMatchObject({ requests: 1, cost_micros: 2000 });
    // a time without an offset is UTC, whatever the server's time zone
    const bare = (ms: number) => new Date(ms).toISOString().slice(0, 19);
    const zone = process.env.TZ;
    process.env.TZ = "America/New_York";
    try {
      const { body: utc } = await usage(`?from=${bare(at(threeDaysAgo, 2))}&to=${bare(at(threeDaysAgo, 3))}`);
      expect(utc.data).toEqual(body.data);
    } finally {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    }
  });

  it.each([
    ["?from=yesterday-ish", "from"],
    ["?to=2024-13-45", "to"],
    // days Date.parse would roll over into the next month, and an hour it would take as the next day
    ["?from=2026-02-31&to=2026-03-10", "from"],
    ["?from=2026-03-01&to=2026-04-31", "to"],
    ["?from=2026-02-29T10:00Z&to=2026-03-10", "from"],
    ["?from=2026-03-01T24:00Z&to=2026-03-10", "from"],
    ["?from=1&to=2", "from"],
    ["?from=2026-11-23 10:00", "from"],
    ["?group_by=week", "group_by"],
    [`?from=${today}&to=${threeDaysAgo}`, "to"],
    [`?from=${daysBefore(now, 500)}&to=${today}`, "from"],
    ["?group_by=day&group_by=model", "group_by"],
  ])("refuses %s with a 400 naming %s", async (query, param) => {
    const { status, text } = await failure(query);
    expect(status).toBe(400);
    const error = (JSON.parse(text) as { error: { code: string; param: string; type: string } }).error;
    expect(error).toMatchObject({ code: "LETHE_INVALID_REQUEST", type: "invalid_request_error", param });
  });

  it("answers bad input in Anthropic's format to a caller that speaks it", async () => {
    const { status, text } = await failure("?group_by=week", { "anthropic-version": "2023-06-01" });
    expect(status).toBe(400);
    expect(JSON.parse(text)).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
  });

  it("keeps nothing of a query string: canaries in bad parameters are neither echoed nor stored", async () => {
    const canaries = [rig.canary("usagefrom"), rig.canary("usagegroup"), rig.canary("usageextra")];
    const { status, text } = await failure(`?from=${canaries[0]}&group_by=day`);
    expect(status).toBe(400);
    expect(text).not.toContain(canaries[0]);
    const grouped = await failure(`?group_by=${canaries[1]}`);
    expect(grouped.status).toBe(400);
    expect(grouped.text).not.toContain(canaries[1]);
    // unknown parameters are ignored
    const extra = await usage(`?${canaries[2]}=${canaries[2]}`);
    expect(extra.status).toBe(200);
  });

  it("requires the account's own key", async () => {
    const missing = await fetch(`${rig.gateway.baseURL}/usage`);
    expect(missing.status).toBe(401);
    const revoked = await rig.key(own);
    const gateway = rig.gateway.running.gateway;
    await gateway.store.revokeKey(revoked.keyId as never);
    gateway.authenticator.invalidate();
    const refused = await fetch(`${rig.gateway.baseURL}/usage`, {
      headers: { authorization: `Bearer ${revoked.key}` },
    });
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("LETHE_REVOKED_API_KEY");
  });
});
