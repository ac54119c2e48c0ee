import { randomBytes } from "node:crypto";
import Anthropic from "@anthropic-ai/sdk";
import { Redis } from "ioredis";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { anthropicResetTime } from "../src/billing/rate-limit-headers.js";
import { type LimitState, RateLimitedError, RateLimits, type TokenHold } from "../src/billing/rate-limits.js";
import type { AccountId, KeyId } from "../src/config/ids.js";
import { DEFAULT_CONFIG_FILE } from "../src/config/load-config.js";
import { AuthThrottle } from "../src/keys/auth-throttle.js";
import type { AuthContext } from "../src/keys/authenticator.js";
import { silentLog } from "../src/logging/event-log.js";
import { BILLED, type BillingRig, closeBillingRig, startBillingRig } from "./support/billing-rig.js";
import { findCanaries } from "./support/canary.js";
import { behaviour } from "./support/fake-openai-supplier.js";
import { removeDataDir, startTestGateway } from "./support/gateway-harness.js";

const CHAT = { model: BILLED.gpt, max_tokens: 1000, messages: [{ role: "user" as const, content: "hi" }] };
/** What the fake OpenAI supplier reports by default: 1000 input + 250 output tokens. */
const FAKE_TOKENS = 1250;
const OPENAI_RESET = /^(\d+ms|\d+s|\d+m\d+s)$/;

function auth(account: string, key: string, limits: Partial<AuthContext> = {}): AuthContext {
  return {
    accountId: account as AccountId,
    keyId: key as KeyId,
    zdrRequired: true,
    rpm: null,
    tpm: null,
    keyRpm: null,
    keyTpm: null,
    ...limits,
  };
}

/** What a limit call ends with, value or refusal: they answer synchronously in memory, by promise with Redis. */
function outcome(call: () => unknown): Promise<unknown> {
  return Promise.resolve()
    .then(call)
    .catch((error: unknown) => error);
}

function openAIHeaders(headers: Headers, kind: "requests" | "tokens") {
  return {
    limit: headers.get(`x-ratelimit-limit-${kind}`),
    remaining: Number(headers.get(`x-ratelimit-remaining-${kind}`)),
    reset: headers.get(`x-ratelimit-reset-${kind}`),
  };
}

describe("rate limits through the gateway", () => {
  let rig: BillingRig;
  let openai: (key: string) => OpenAI;
  let anthropic: (key: string) => Anthropic;

  beforeAll(async () => {
    rig = await startBillingRig({ limits: { rpm: 1000, tpm: 1_000_000 } });
    openai = (key) => new OpenAI({ apiKey: key, baseURL: rig.gateway.baseURL, maxRetries: 0 });
    anthropic = (key) => new Anthropic({ apiKey: key, baseURL: rig.gateway.url, maxRetries: 0 });
  });

  afterAll(async () => {
    expect(await closeBillingRig(rig)).toEqual([]);
    await removeDataDir(rig.gateway);
  });

  it("sends OpenAI's six headers on the OpenAI surface, read through the SDK's raw response", async () => {
    const account = await rig.account("openai-headers", { credits: 1e9 });
    const first = await openai(account.key).chat.completions.create(CHAT).withResponse();
    const requests = openAIHeaders(first.response.headers, "requests");
    expect(requests).toMatchObject({ limit: "1000", remaining: 999 });
    expect(requests.reset).toMatch(OPENAI_RESET);
    const tokens = openAIHeaders(first.response.headers, "tokens");
    expect(tokens.limit).toBe("1000000");
    expect(tokens.reset).toMatch(OPENAI_RESET);
    // the request's estimate (its input plus max_tokens) is held before it is forwarded
    const held = 1_000_000 - tokens.remaining;
    expect(held).toBeGreaterThan(1000);
    expect(held).toBeLessThan(1100);
    expect(first.response.headers.get("anthropic-ratelimit-requests-limit")).toBeNull();

    // the first request was settled to what it used, not what it held: an identical second one shows it
    const second = await openai(account.key).chat.completions.create(CHAT).withResponse();
    expect(openAIHeaders(second.response.headers, "requests").remaining).toBe(998);
    expect(tokens.remaining - openAIHeaders(second.response.headers, "tokens").remaining).toBe(FAKE_TOKENS);

    // streams carry the headers too
    const stream = await openai(account.key)
      .chat.completions.create({ ...CHAT, stream: true })
      .withResponse();
    for await (const _chunk of stream.data) {
      // drain
    }
    expect(openAIHeaders(stream.response.headers, "requests").remaining).toBe(997);
    expect(openAIHeaders(stream.response.headers, "tokens").limit).toBe("1000000");
  });

  it("sends anthropic-ratelimit-* headers on the Anthropic surface, reset as an RFC 3339 time", async () => {
    const account = await rig.account("anthropic-headers", { credits: 1e9, rpm: 40, tpm: 90_000 });
    const before = Date.now();
    const { response } = await anthropic(account.key)
      .messages.create({ model: BILLED.gpt, max_tokens: 1000, messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    const header = (name: string) => response.headers.get(`anthropic-ratelimit-${name}`);
    expect(header("requests-limit")).toBe("40");
    expect(header("requests-remaining")).toBe("39");
    expect(header("tokens-limit")).toBe("90000");
    expect(Number(header("tokens-remaining"))).toBeLessThan(89_000);
    for (const reset of [header("requests-reset"), header("tokens-reset")]) {
      expect(reset).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
      const at = Date.parse(reset as string);
      expect(at).toBeGreaterThanOrEqual(before);
      // rounded up to the second, so never before the real reset
      expect(at).toBeLessThanOrEqual(Date.now() + 61_000);
    }
    expect(response.headers.get("x-ratelimit-limit-requests")).toBeNull();
  });

  it("refuses a request whose own max_tokens is over the TPM limit, and admits one that set none", async () => {
    const account = await rig.account("small-tpm", { credits: 1e9, tpm: 1000 });
    const suppliedBefore = rig.openAIFake.requests.length;
    const tooLarge = await rig.post("/v1/chat/completions", account.key, { ...CHAT, max_tokens: 5000 });
    expect(tooLarge.status).toBe(429);
    expect(await tooLarge.json()).toMatchObject({ error: { code: "LETHE_RATE_LIMITED", param: "max_tokens" } });
    // waiting would not help: both SDKs are told not to retry it (a 429 invites them to)
    expect(tooLarge.headers.get("x-should-retry")).toBe("false");
    expect(rig.openAIFake.requests.length).toBe(suppliedBefore);
    // the refusal held nothing: the whole minute is still there (and the answers below use little of it)
    const small = { prompt: 5, completion: 5, cached: 0, reasoning: 0 };
    rig.openAIFake.enqueue(behaviour.ok({ usage: small }), behaviour.ok({ usage: small }));
    const fits = await rig.post("/v1/chat/completions", account.key, { ...CHAT, max_tokens: 100 });
    expect(fits.status).toBe(200);
    // without max_tokens the estimate's default allowance (4096) is Lethe's guess, not the client's ask:
    // it holds the whole minute of a fresh window rather than being refused
    const fresh = await rig.account("small-tpm-unset", { credits: 1e9, tpm: 1000 });
    const { max_tokens: _unset, ...withoutLimit } = CHAT as { max_tokens?: number };
    const admitted = await rig.post("/v1/chat/completions", fresh.key, withoutLimit);
    expect(admitted.status).toBe(200);
  });

  it("sends the headers on error responses after authentication too (400, 402)", async () => {
    const account = await rig.account("error-headers", { credits: 0 });
    const invalid = await rig.post("/v1/chat/completions", account.key, { model: BILLED.gpt });
    expect(invalid.status).toBe(400);
    expect(invalid.headers.get("x-ratelimit-remaining-requests")).toBe("999");
    const broke = await rig.post("/v1/messages", account.key, { ...CHAT, model: BILLED.claude });
    expect(broke.status).toBe(402);
    expect(broke.headers.get("anthropic-ratelimit-requests-remaining")).toBe("998");
    // the 402 released its token hold: the full limit is left
    expect(broke.headers.get("anthropic-ratelimit-tokens-limit")).toBe("1000000");
    const again = await rig.post("/v1/messages", account.key, { ...CHAT, model: BILLED.claude });
    const heldOnce = 1_000_000 - Number(broke.headers.get("anthropic-ratelimit-tokens-remaining"));
    expect(1_000_000 - Number(again.headers.get("anthropic-ratelimit-tokens-remaining"))).toBe(heldOnce);
  });

  it("answers 429 with retry-after in each format once an account's requests per minute are used up", async () => {
    const account = await rig.account("rpm-two", { credits: 1e9, rpm: 2 });
    await openai(account.key).chat.completions.create(CHAT);
    await openai(account.key).chat.completions.create(CHAT);
    const suppliedBefore = rig.openAIFake.requests.length;
    // the refused requests carry canaries: nothing of a refused request may be kept
    const openAIError = await openai(account.key)
      .chat.completions.create({ ...CHAT, messages: [{ role: "user", content: rig.canary("rpmrefused") }] })
      .catch((error: unknown) => error);
    expect(openAIError).toBeInstanceOf(OpenAI.RateLimitError);
    const refused = openAIError as InstanceType<typeof OpenAI.RateLimitError>;
    expect(refused).toMatchObject({ status: 429, type: "rate_limit_error", code: "LETHE_RATE_LIMITED" });
    expect(Number(refused.headers?.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers?.get("retry-after"))).toBeLessThanOrEqual(60);
    expect(refused.headers?.get("x-ratelimit-remaining-requests")).toBe("0");
    expect(refused.headers?.get("x-ratelimit-limit-requests")).toBe("2");

    const anthropicError = await anthropic(account.key)
      .messages.create({
        model: BILLED.gpt,
        max_tokens: 10,
        messages: [{ role: "user", content: rig.canary("rpmclaude") }],
      })
      .catch((error: unknown) => error);
    expect(anthropicError).toBeInstanceOf(Anthropic.RateLimitError);
    const anthropicRefused = anthropicError as InstanceType<typeof Anthropic.RateLimitError>;
    expect(anthropicRefused.error).toMatchObject({ type: "error", error: { type: "rate_limit_error" } });
    expect(Number(anthropicRefused.headers?.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(anthropicRefused.headers?.get("anthropic-ratelimit-requests-remaining")).toBe("0");
    expect(rig.openAIFake.requests.length).toBe(suppliedBefore);
  });

  it("holds tokens before forwarding, settles them after, and refuses with 429 once tokens per minute run out", async () => {
    const account = await rig.account("tpm", { credits: 1e9, tpm: 3000 });
    const first = await rig.post("/v1/chat/completions", account.key, CHAT);
    const second = await rig.post("/v1/chat/completions", account.key, CHAT);
    const [firstTokens, secondTokens] = [first, second].map((response) => openAIHeaders(response.headers, "tokens"));
    expect(firstTokens?.limit).toBe("3000");
    // the second request sees the first one's real usage, plus its own hold
    expect((firstTokens?.remaining ?? 0) - (secondTokens?.remaining ?? 0)).toBe(FAKE_TOKENS);
    const third = await rig.post("/v1/chat/completions", account.key, {
      ...CHAT,
      messages: [{ role: "user", content: rig.canary("tpmrefused") }],
    });
    expect(third.status).toBe(429);
    expect(((await third.json()) as { error: { message: string } }).error.message).toMatch(/tokens per minute/);
    expect(third.headers.get("x-ratelimit-remaining-tokens")).toBe(String(3000 - 2 * FAKE_TOKENS));
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });

  it("applies a key's own limits under its account's, without charging the account for the key's refusals", async () => {
    const account = await rig.account("per-key", { credits: 1e9, rpm: 100, tpm: 100_000, keyRpm: 2, keyTpm: 1500 });
    // the other key has no limits of its own: its headers show the account's
    const other = await rig.key(account);
    const baseline = openAIHeaders((await rig.post("/v1/chat/completions", other.key, CHAT)).headers, "tokens");
    expect(baseline.limit).toBe("100000");
    const first = await rig.post("/v1/chat/completions", account.key, CHAT);
    expect(first.status).toBe(200);
    // a key's headers show whichever limit is tighter: here the key's own
    expect(first.headers.get("x-ratelimit-limit-tokens")).toBe("1500");
    expect(first.headers.get("x-ratelimit-limit-requests")).toBe("2");
    // the key's TPM: 1250 used of 1500, so the next estimate (~1000) does not fit
    const refusedByTokens = await rig.post("/v1/chat/completions", account.key, CHAT);
    expect(refusedByTokens.status).toBe(429);
    expect(((await refusedByTokens.json()) as { error: { message: string } }).error.message).toMatch(
      /this key's tokens/,
    );
    const refusedByRequests = await rig.post("/v1/chat/completions", account.key, CHAT);
    expect(refusedByRequests.status).toBe(429);
    expect(((await refusedByRequests.json()) as { error: { message: string } }).error.message).toMatch(
      /this key's requests/,
    );
    // the other key is unaffected, and the account was charged only for what ran: two requests' real usage
    const fromOther = await rig.post("/v1/chat/completions", other.key, CHAT);
    expect(fromOther.status).toBe(200);
    expect(baseline.remaining - openAIHeaders(fromOther.headers, "tokens").remaining).toBe(2 * FAKE_TOKENS);
    // requests: the baseline, the first, the one refused for tokens (it passed RPM), and this one; not the key's RPM refusal
    expect(openAIHeaders(fromOther.headers, "requests").remaining).toBe(100 - 4);
  });

  it("reads account limits at authentication: a change through the admin store applies to the next request", async () => {
    const account = await rig.account("changed-limits", { credits: 1e9, rpm: 10 });
    const before = await rig.post("/v1/chat/completions", account.key, CHAT);
    expect(before.headers.get("x-ratelimit-limit-requests")).toBe("10");
    const gateway = rig.gateway.running.gateway;
    await gateway.store.accountAdmin.updateSettings(account.id, { rpm: 20, tpm: null });
    gateway.authenticator.invalidate();
    const after = await rig.post("/v1/chat/completions", account.key, CHAT);
    expect(after.headers.get("x-ratelimit-limit-requests")).toBe("20");
    expect(after.headers.get("x-ratelimit-limit-tokens")).toBe("1000000");
    rig.openAIFake.setBehaviour(behaviour.ok());
  });
});

describe("the auth-failure throttle", () => {
  it("refuses an address after repeated failures, before looking at its key, and keeps no address", async () => {
    const gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { auth_failures_per_minute: 3 } },
    });
    try {
      const call = (key: string) =>
        fetch(`${gateway.baseURL}/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
        });
      expect((await call(gateway.key)).status).toBe(200);
      for (let attempt = 0; attempt < 3; attempt++) expect((await call("sk-lethe-wrong")).status).toBe(401);
      const throttled = await call("sk-lethe-wrong");
      expect(throttled.status).toBe(429);
      expect(((await throttled.json()) as { error: { code: string } }).error.code).toBe("LETHE_AUTH_THROTTLED");
      expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      // the right key does not help once the address is throttled: keys cannot be probed
      expect((await call(gateway.key)).status).toBe(429);
      // usage and models are behind the same throttle
      const usage = await fetch(`${gateway.baseURL}/usage`, { headers: { authorization: `Bearer ${gateway.key}` } });
      expect(usage.status).toBe(429);
    } finally {
      await gateway.close();
    }
    // the client address is nowhere: not in the database, not in the log
    expect(await findCanaries(["127.0.0.1"], { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual(
      [],
    );
    await removeDataDir(gateway);
  });
});

describe("RateLimits and AuthThrottle on a controlled clock", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("admits again once the minute has passed, and the reset it reports counts down", async () => {
    vi.useFakeTimers({ now: Date.parse("2025-01-01T00:00:00Z") });
    const limits = new RateLimits({ rpm: 2, tpm: 100 }, silentLog);
    const caller = auth("acct_clock", "key_clock");
    expect((await limits.admitRequest(caller)).remaining).toBe(1);
    expect((await limits.admitRequest(caller)).remaining).toBe(0);
    const refused = await outcome(() => limits.admitRequest(caller));
    expect(refused).toBeInstanceOf(RateLimitedError);
    expect((refused as RateLimitedError).limit).toMatchObject({ limit: 2, remaining: 0, resetMs: 60_000 });
    expect((refused as RateLimitedError).retryAfterSeconds).toBe(60);
    vi.advanceTimersByTime(45_000);
    const later = await outcome(() => limits.admitRequest(caller));
    expect((later as RateLimitedError).limit.resetMs).toBe(15_000);
    expect((later as RateLimitedError).retryAfterSeconds).toBe(15);
    vi.advanceTimersByTime(15_001);
    expect(await limits.admitRequest(caller)).toMatchObject({ limit: 2, remaining: 1 });
  });

  it("does not give back tokens to a window the hold no longer belongs to", async () => {
    vi.useFakeTimers({ now: Date.parse("2025-01-01T00:00:00Z") });
    const limits = new RateLimits({ rpm: 100, tpm: 100 }, silentLog);
    const caller = auth("acct_long", "key_long");
    const { hold } = await limits.reserveTokens(caller, 80);
    // a long stream: its window ends before it does, and it used only 10 of the 80 held
    vi.advanceTimersByTime(61_000);
    await limits.settleTokens(hold, 10);
    const next = await limits.reserveTokens(caller, 10);
    expect(next.state.remaining).toBeLessThanOrEqual(100);
    expect(next.state.remaining).toBe(90);
  });

  it("answers in memory without a promise, and a key's refusal gives its account the tokens back", () => {
    const limits = new RateLimits({ rpm: 100, tpm: 1000 }, silentLog);
    const caller = auth("acct_sync", "key_sync", { keyTpm: 300 });
    const admitted = limits.admitRequest(caller);
    expect(admitted).not.toBeInstanceOf(Promise);
    expect(admitted).toMatchObject({ limit: 100, remaining: 99 });
    const held = limits.reserveTokens(caller, 200);
    expect(held).not.toBeInstanceOf(Promise);
    expect((held as { state: LimitState }).state).toMatchObject({ limit: 300, remaining: 100 });
    // 200 more fit the account (400 of 1000) but not the key (400 of 300): refused at once
    expect(() => limits.reserveTokens(caller, 200)).toThrow(/this key's tokens/);
    const other = limits.reserveTokens(auth("acct_sync", "key_sync_two"), 1) as { state: LimitState };
    expect(other.state.remaining).toBe(1000 - 200 - 1);
    // the first request used 50 of its 200: both windows get 150 back, synchronously
    expect(limits.settleTokens((held as { hold: TokenHold }).hold, 50)).toBeUndefined();
    const after = limits.reserveTokens(caller, 10) as { state: LimitState };
    expect(after.state).toMatchObject({ limit: 300, remaining: 300 - 50 - 10 });
  });

  it("forgets an address's failures after the throttle window", async () => {
    vi.useFakeTimers({ now: Date.parse("2025-01-01T00:00:00Z") });
    const throttle = new AuthThrottle("a-server-secret-of-enough-length", 2);
    await throttle.recordFailure("198.51.100.7");
    await throttle.recordFailure("198.51.100.7");
    await expect(throttle.check("198.51.100.7")).rejects.toMatchObject({
      code: "LETHE_AUTH_THROTTLED",
      retryAfterSeconds: 60,
    });
    // another address goes on at once, without a promise
    expect(throttle.check("198.51.100.8")).toBeUndefined();
    vi.advanceTimersByTime(45_000);
    await expect(throttle.check("198.51.100.7")).rejects.toMatchObject({ retryAfterSeconds: 15 });
    vi.advanceTimersByTime(15_001);
    expect(throttle.check("198.51.100.7")).toBeUndefined();
    // a new failure opens a new window: one failure is under the limit of two
    await throttle.recordFailure("198.51.100.7");
    expect(throttle.check("198.51.100.7")).toBeUndefined();
  });

  it("counts at most 100,000 addresses at once: a spray of new ones does not grow it further", async () => {
    const throttle = new AuthThrottle("a-server-secret-of-enough-length", 2);
    const failures = (throttle as unknown as { failures: { size: number } }).failures;
    // one address counted before the spray, at its limit
    await throttle.recordFailure("2001:db8::1");
    await throttle.recordFailure("2001:db8::1");
    for (let index = 0; index < 100_100; index++) await throttle.recordFailure(`2001:db8:1::${index.toString(16)}`);
    expect(failures.size).toBe(100_000);
    // a new address past the bound is not counted; one counted before is still refused
    await throttle.recordFailure("2001:db8:2::1");
    await throttle.recordFailure("2001:db8:2::1");
    expect(throttle.check("2001:db8:2::1")).toBeUndefined();
    await expect(throttle.check("2001:db8::1")).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
    expect(failures.size).toBe(100_000);
  });

  it("hashes a connection's address once, and judges each connection by its own address", async () => {
    const throttle = new AuthThrottle("a-server-secret-of-enough-length", 2);
    const hmacs = vi.spyOn(throttle as unknown as { hash(address: string): string }, "hash");
    const scanner = {};
    const caller = {};
    await throttle.recordFailure("192.0.2.66", scanner);
    await throttle.recordFailure("192.0.2.66", scanner);
    await expect(throttle.check("192.0.2.66", scanner)).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
    for (let request = 0; request < 5; request++) expect(throttle.check("192.0.2.10", caller)).toBeUndefined();
    // one hash per connection, however many requests it sends
    expect(hmacs).toHaveBeenCalledTimes(2);
    // a new connection from the scanner's address is refused too
    await expect(throttle.check("192.0.2.66", {})).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
  });

  it("judges each client a proxy's connection carries by its own address, rehashing only on a change", async () => {
    const throttle = new AuthThrottle("a-server-secret-of-enough-length", 2);
    expect(throttle.idle).toBe(true);
    const hmacs = vi.spyOn(throttle as unknown as { hash(address: string): string }, "hash");
    const proxy = {};
    await throttle.recordFailure("192.0.2.66", proxy);
    expect(throttle.idle).toBe(false);
    await throttle.recordFailure("192.0.2.66", proxy);
    expect(hmacs).toHaveBeenCalledTimes(1);
    for (let request = 0; request < 3; request++) expect(throttle.check("192.0.2.10", proxy)).toBeUndefined();
    await expect(throttle.check("192.0.2.66", proxy)).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
    expect(throttle.check("192.0.2.10", proxy)).toBeUndefined();
    // 192.0.2.66, then 192.0.2.10 (once for three requests), 192.0.2.66, 192.0.2.10
    expect(hmacs).toHaveBeenCalledTimes(4);
  });
});

describe("Anthropic's reset time", () => {
  it("is the reset rounded up to the second, formatted once per second", () => {
    const now = Date.parse("2026-01-01T00:00:00.250Z");
    expect(anthropicResetTime(now, 0)).toBe("2026-01-01T00:00:01Z");
    expect(anthropicResetTime(now, 750)).toBe("2026-01-01T00:00:01Z");
    expect(anthropicResetTime(now, 751)).toBe("2026-01-01T00:00:02Z");
    expect(anthropicResetTime(now, 59_750)).toBe("2026-01-01T00:01:00Z");
    // back to an earlier second: the cached text is not reused for it
    expect(anthropicResetTime(now, 10)).toBe("2026-01-01T00:00:01Z");
  });
});

describe("limits shared through Redis by two gateway processes", () => {
  const prefix = `lethe-test-${randomBytes(6).toString("hex")}:`;
  let first: Redis;
  let second: Redis;

  beforeAll(async () => {
    // two connections, as two Lethe processes would hold
    first = new Redis("redis://127.0.0.1:6379", { maxRetriesPerRequest: 1 });
    second = new Redis("redis://127.0.0.1:6379", { maxRetriesPerRequest: 1 });
    await Promise.all([first.ping(), second.ping()]);
  });

  afterAll(async () => {
    const keys = await first.keys(`${prefix}*`);
    if (keys.length > 0) await first.del(...keys);
    await first.quit();
    await second.quit();
  });

  it("counts requests per minute once across both processes", async () => {
    const one = new RateLimits({ rpm: 4, tpm: 1000 }, silentLog, { client: first, prefix });
    const two = new RateLimits({ rpm: 4, tpm: 1000 }, silentLog, { client: second, prefix });
    const caller = auth("acct_shared", "key_shared");
    expect((await one.admitRequest(caller)).remaining).toBe(3);
    expect((await two.admitRequest(caller)).remaining).toBe(2);
    expect((await one.admitRequest(caller)).remaining).toBe(1);
    expect((await two.admitRequest(caller)).remaining).toBe(0);
    await expect(one.admitRequest(caller)).rejects.toBeInstanceOf(RateLimitedError);
    const refused = (await outcome(() => two.admitRequest(caller))) as RateLimitedError;
    expect(refused).toBeInstanceOf(RateLimitedError);
    expect(refused.limit.resetMs).toBeGreaterThan(0);
    expect(refused.limit.resetMs).toBeLessThanOrEqual(60_000);
    // another account is counted apart
    expect((await one.admitRequest(auth("acct_other", "key_other"))).remaining).toBe(3);
  });

  it("holds and settles tokens per minute across both processes", async () => {
    const one = new RateLimits({ rpm: 100, tpm: 1000 }, silentLog, { client: first, prefix });
    const two = new RateLimits({ rpm: 100, tpm: 1000 }, silentLog, { client: second, prefix });
    const caller = auth("acct_tokens", "key_tokens", { keyTpm: 900 });
    const held = await one.reserveTokens(caller, 400);
    expect(held.state.remaining).toBe(500);
    // the second process sees the first one's hold
    const other = await two.reserveTokens(caller, 100);
    expect(other.state.remaining).toBe(400);
    // the first request used only 150 of its 400: the difference comes back, for both processes
    await one.settleTokens(held.hold, 150);
    const third = await two.reserveTokens(caller, 100);
    expect(third.state.remaining).toBe(900 - 150 - 100 - 100);
    // 600 more fit the account (950 of 1000) but not the key (950 of 900)
    const refused = (await outcome(() => one.reserveTokens(caller, 600))) as RateLimitedError;
    expect(refused).toBeInstanceOf(RateLimitedError);
    expect(refused.message).toMatch(/this key's tokens/);
    expect(refused.limit).toMatchObject({ limit: 900, remaining: 900 - 350 });
    // the key's refusal gave the account its tokens back
    const accountOnly = await two.reserveTokens(auth("acct_tokens", "key_tokens_two"), 1);
    expect(accountOnly.state.remaining).toBe(1000 - 350 - 1);
  });

  it("gives tokens back only to a window Redis still has, and never below zero", async () => {
    const limits = new RateLimits({ rpm: 100, tpm: 10_000 }, silentLog, { client: first, prefix });
    const caller = auth("acct_lost", "key_lost");
    const held = await limits.reserveTokens(caller, 8_000);
    // Redis restarted (or evicted the window) while the request ran
    const windows = await first.keys(`${prefix}rl:tpm:*lost*`);
    expect(windows.length).toBeGreaterThan(0);
    await first.del(...windows);
    // the request used 20 of its 8,000: the 7,980 left over have no window to go back to
    await limits.settleTokens(held.hold, 20);
    for (const window of windows) expect(await first.get(window)).toBe(null);
    // so the next minute admits the limit, not the limit plus what was given back
    expect((await limits.reserveTokens(caller, 10_000)).state.remaining).toBe(0);
    await expect(limits.reserveTokens(caller, 1)).rejects.toBeInstanceOf(RateLimitedError);
  });

  it("keeps only a keyed hash of a failing address in Redis, expiring with the throttle window", async () => {
    const one = new AuthThrottle("a-server-secret-of-enough-length", 2, { client: first, prefix });
    const two = new AuthThrottle("a-server-secret-of-enough-length", 2, { client: second, prefix });
    await one.recordFailure("203.0.113.77");
    await two.recordFailure("203.0.113.77");
    await expect(one.check("203.0.113.77")).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
    const keys = await first.keys(`${prefix}auth*`);
    expect(keys).toHaveLength(1);
    expect(keys[0]).not.toContain("203.0.113.77");
    const dump = `${keys.join("")}${await first.get(keys[0] as string)}`;
    expect(await findCanaries(["203.0.113.77"], { texts: { redis: dump } })).toEqual([]);
    const ttl = await first.pttl(keys[0] as string);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it("asks Redis once a second for a connection that does not fail, and on every request after a failure", async () => {
    const one = new AuthThrottle("a-server-secret-of-enough-length", 2, { client: first, prefix });
    const two = new AuthThrottle("a-server-secret-of-enough-length", 2, { client: second, prefix });
    const asked = vi.spyOn((one as unknown as { shared: { get(key: string): Promise<unknown> } }).shared, "get");
    const client = {};
    await one.check("198.51.100.20", client);
    // a good key's connection: cleared for a second, no round trip per request
    for (let request = 0; request < 5; request++) expect(one.check("198.51.100.20", client)).toBeUndefined();
    expect(asked).toHaveBeenCalledTimes(1);
    // the other replica sees the address fail twice, then this connection fails once:
    // from then on every request of it asks Redis, and is refused
    await two.recordFailure("198.51.100.20");
    await two.recordFailure("198.51.100.20");
    await one.recordFailure("198.51.100.20", client);
    await expect(one.check("198.51.100.20", client)).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
    await expect(one.check("198.51.100.20", client)).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
    // a new connection from the address asks at once
    await expect(one.check("198.51.100.20", {})).rejects.toMatchObject({ code: "LETHE_AUTH_THROTTLED" });
  });

  it("ends every connection's pause at the first failure: many primed connections get one unchecked guess, not one each", async () => {
    const throttle = new AuthThrottle("a-server-secret-of-enough-length", 3, { client: first, prefix });
    const connections = Array.from({ length: 20 }, () => ({}));
    // each connection first sends a good key: Redis finds the address clear
    for (const connection of connections) await throttle.check("198.51.100.30", connection);
    let unchecked = 0;
    let refused = 0;
    for (const connection of connections) {
      const check = throttle.check("198.51.100.30", connection);
      if (check === undefined) unchecked++;
      else if (
        await check.then(
          () => false,
          () => true,
        )
      ) {
        refused++;
        continue;
      }
      // the guess itself fails
      await throttle.recordFailure("198.51.100.30", connection);
    }
    expect(unchecked).toBe(1);
    // three failures are the limit: the fourth guess on is refused before its key is looked at
    expect(refused).toBe(20 - 3);
  });
});

describe("token limits while Redis is away", () => {
  it("gives tokens back to the replica's own windows, where they were held", async () => {
    const { startPrivateRedis } = await import("./support/scale-rig.js");
    const redis = await startPrivateRedis();
    const client = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    client.on("error", () => {});
    try {
      if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
      const limits = new RateLimits({ rpm: 100, tpm: 10_000 }, silentLog, { client, prefix: "away:" });
      const closed = new Promise((resolve) => client.once("close", resolve));
      await redis.kill();
      await closed;
      const caller = auth("acct_away", "key_away");
      // held in the insurance limiter's memory window; the request used 20 of its 8,000
      const held = await limits.reserveTokens(caller, 8_000);
      await limits.settleTokens(held.hold, 20);
      // the 7,980 left over came back to that same window: 9,000 more fit
      expect((await limits.reserveTokens(caller, 9_000)).state.remaining).toBe(10_000 - 20 - 9_000);
    } finally {
      client.disconnect();
      await redis.stop();
    }
  });
});
