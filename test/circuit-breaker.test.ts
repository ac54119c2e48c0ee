import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { resolveConfig } from "../src/config/load-config.js";
import { LetheError } from "../src/errors/lethe-error.js";
import { anthropicMessagesSurface } from "../src/formats/anthropic/anthropic-surface.js";
import { CircuitBreaker } from "../src/routing/circuit-breaker.js";
import { findModel, routesOf } from "../src/routing/plan-routes.js";
import { type AnswerTimings, RouteStats } from "../src/routing/route-stats.js";
import { Router } from "../src/routing/router.js";
import { behaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
  messagesBody,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  recordOf,
  startFakes,
} from "./support/routing-rig.js";

/**
 * The circuit breaker, with a clock the tests move by hand: opening after N failures
 * in a window, half-opening after the cooldown with exactly one probe, closing or
 * opening again on the probe's outcome; then the same through a running gateway.
 */

const SETTINGS = { failureThreshold: 3, windowMs: 1000, cooldownMs: 5000 };

describe("CircuitBreaker", () => {
  let breaker: CircuitBreaker;

  beforeEach(() => {
    breaker = new CircuitBreaker(SETTINGS);
  });

  /** Fails the breaker at each of `times`. */
  function failAt(...times: number[]): void {
    for (const time of times) breaker.onFailure(time);
  }

  it("starts closed and lets every request through", () => {
    expect(breaker.state(0)).toBe("closed");
    expect(breaker.tryAcquire(0)).toBe(true);
    expect(breaker.tryAcquire(0)).toBe(true);
    expect(breaker.isAvailable(0)).toBe(true);
  });

  it("opens on the Nth failure within the window", () => {
    failAt(0, 100);
    expect(breaker.state(100)).toBe("closed");
    failAt(200);
    expect(breaker.state(200)).toBe("open");
    expect(breaker.tryAcquire(200)).toBe(false);
    expect(breaker.isAvailable(200)).toBe(false);
  });

  it("forgets failures that left the window", () => {
    // the failure at 0 is a full window old at 1000
    failAt(0, 500, 1000);
    expect(breaker.state(1000)).toBe("closed");
    failAt(1200);
    expect(breaker.state(1200)).toBe("open");
  });

  it("starts counting again after a success", () => {
    failAt(0, 1);
    breaker.onSuccess();
    failAt(2, 3);
    expect(breaker.state(3)).toBe("closed");
  });

  it("stays open for the whole cooldown, then half-opens", () => {
    failAt(0, 1, 2);
    expect(breaker.state(2 + 4999)).toBe("open");
    expect(breaker.tryAcquire(2 + 4999)).toBe(false);
    expect(breaker.state(2 + 5000)).toBe("half-open");
    expect(breaker.isAvailable(2 + 5000)).toBe(true);
  });

  it("lets exactly one probe through while half-open", () => {
    failAt(0, 1, 2);
    expect(breaker.tryAcquire(6000)).toBe(true);
    expect(breaker.tryAcquire(6000)).toBe(false);
    expect(breaker.isAvailable(6001)).toBe(false);
    expect(breaker.state(6001)).toBe("half-open");
    // later still, the probe is still out: nobody else gets through
    expect(breaker.tryAcquire(60_000)).toBe(false);
  });

  it("closes when the probe succeeds", () => {
    failAt(0, 1, 2);
    expect(breaker.tryAcquire(6000)).toBe(true);
    breaker.onSuccess();
    expect(breaker.state(6000)).toBe("closed");
    expect(breaker.tryAcquire(6000)).toBe(true);
    expect(breaker.tryAcquire(6000)).toBe(true);
    // and it needs N fresh failures to open again
    failAt(6001, 6002);
    expect(breaker.state(6002)).toBe("closed");
  });

  it("opens again, for a fresh cooldown, on a single failed probe", () => {
    failAt(0, 1, 2);
    expect(breaker.tryAcquire(6000)).toBe(true);
    failAt(6100);
    expect(breaker.state(6100)).toBe("open");
    expect(breaker.tryAcquire(6100 + 4999)).toBe(false);
    expect(breaker.state(6100 + 5000)).toBe("half-open");
    expect(breaker.tryAcquire(6100 + 5000)).toBe(true);
  });

  it("hands the probe to the next request when the first ends without a verdict", () => {
    failAt(0, 1, 2);
    expect(breaker.tryAcquire(6000)).toBe(true);
    breaker.release();
    expect(breaker.state(6000)).toBe("half-open");
    expect(breaker.tryAcquire(6000)).toBe(true);
    expect(breaker.tryAcquire(6000)).toBe(false);
  });
});

/** A successful answer that came whole (no stream), after `latencyMs`, with no output tokens. */
function json(latencyMs: number): AnswerTimings {
  return { latency_ms: latencyMs, ttft_ms: null, output_tokens: 0 };
}

describe("RouteStats", () => {
  it("reports the recent error rate and the median TTFT", () => {
    const stats = new RouteStats({ failureThreshold: 1000, windowMs: 1000, cooldownMs: 1000 });
    expect(stats.errorRate()).toBe(0);
    expect(stats.ttftP50Ms()).toBeNull();
    for (const ttft of [30, 10, 20])
      stats.recordSuccess(0, { latency_ms: ttft + 100, ttft_ms: ttft, output_tokens: 5 });
    stats.recordFailure(0);
    expect(stats.errorRate()).toBe(0.25);
    expect(stats.ttftP50Ms()).toBe(20);
  });

  it("forgets outcomes beyond the last hundred", () => {
    const stats = new RouteStats({ failureThreshold: 1000, windowMs: 1000, cooldownMs: 1000 });
    for (let index = 0; index < 100; index++) stats.recordFailure(index);
    for (let index = 0; index < 50; index++) stats.recordSuccess(0, json(5));
    expect(stats.errorRate()).toBe(0.5);
    for (let index = 0; index < 100; index++) stats.recordSuccess(0, json(5));
    expect(stats.errorRate()).toBe(0);
    stats.recordFailure(0);
    expect(stats.errorRate()).toBe(0.01);
  });

  it("takes the median TTFT over the last hundred samples only", () => {
    const stats = new RouteStats({ failureThreshold: 1000, windowMs: 1000, cooldownMs: 1000 });
    for (let index = 0; index < 100; index++) stats.recordSuccess(0, json(1000 + index));
    expect(stats.ttftP50Ms()).toBe(1049);
    for (let index = 0; index < 60; index++) stats.recordSuccess(0, json(5));
    expect(stats.ttftP50Ms()).toBe(5);
    // a JSON answer's first token arrives with the whole of it: its latency is its TTFT here
    stats.recordSuccess(0, json(1));
    expect(stats.ttftP50Ms()).toBe(5);
  });
});

describe("Router with a clock under test control", () => {
  function twoRoutePlan() {
    const config = resolveConfig(
      {
        suppliers: ["a", "b"].map((id) => ({ id, type: "openai", base_url: "http://127.0.0.1:9/v1", zdr: true })),
        models: [
          {
            id: "m",
            routes: [
              { supplier: "a", model: "x" },
              { supplier: "b", model: "x" },
            ],
          },
        ],
        routing: { breaker: { failure_threshold: 3, window_ms: 1000, cooldown_ms: 5000 } },
      },
      {},
      null,
    );
    return { config, plan: routesOf(findModel(config, "m"), true) };
  }

  it("drops an open route from the order, offers it again after the cooldown, and restores it on success", () => {
    let clock = 1_000_000;
    const { config, plan } = twoRoutePlan();
    const router = new Router(config.routing, () => clock);
    const [first] = plan.routes;
    if (first === undefined) throw new Error("no route");
    const keys = () => router.order(plan, { input: 0, output: 0 }).map((route) => route.key);

    expect(keys()).toEqual(["a/x", "b/x"]);
    for (let failure = 0; failure < 3; failure++) router.statsFor(first).recordFailure(clock);
    expect(keys()).toEqual(["b/x"]);
    clock += 4999;
    expect(keys()).toEqual(["b/x"]);
    clock += 1;
    expect(keys()).toEqual(["a/x", "b/x"]);
    // one request takes the probe: the others see the route as unavailable until it reports
    expect(router.statsFor(first).breaker.tryAcquire(clock)).toBe(true);
    expect(keys()).toEqual(["b/x"]);
    router.statsFor(first).recordSuccess(clock, json(12));
    expect(keys()).toEqual(["a/x", "b/x"]);
    expect(router.statsFor(first).breaker.state(clock)).toBe("closed");
  });
});

describe("the breaker in a running gateway", () => {
  let fakes: Record<"primary" | "secondary", FakeOpenAISupplier>;
  let gateway: TestGateway;
  let clock = 1_000_000;
  const canaries: string[] = [];
  const COOLDOWN = 5000;

  beforeAll(async () => {
    fakes = await startFakes(["primary", "secondary"]);
    gateway = await startTestGateway({
      config: {
        suppliers: [
          openAISupplier("primary", fakes.primary.url, { timeouts: { first_byte_ms: 5000 } }),
          openAISupplier("secondary", fakes.secondary.url),
          {
            id: "claude",
            type: "anthropic",
            base_url: "http://127.0.0.1:9/v1",
            api_key_env: "ROUTING_SUPPLIER_KEY",
            zdr: true,
          },
        ],
        models: [
          {
            id: "duo",
            routes: [
              { supplier: "primary", model: "model-a" },
              { supplier: "secondary", model: "model-b" },
            ],
          },
          { id: "solo", routes: [{ supplier: "primary", model: "model-s" }] },
          // only its OpenAI route can carry n > 1; the Anthropic one is never reached here
          {
            id: "mixed",
            max_attempts: 1,
            routes: [
              { supplier: "primary", model: "model-m" },
              { supplier: "claude", model: "model-c" },
            ],
          },
        ],
        routing: {
          backoff_base_ms: 10,
          backoff_max_ms: 20,
          breaker: { failure_threshold: 2, window_ms: 60_000, cooldown_ms: COOLDOWN },
          allow_route_header: true,
        },
      },
      env: ROUTING_ENV,
    });
    // the gateway's router reads time through `now`: the test moves it by hand instead of sleeping
    (gateway.running.gateway.router as { now: () => number }).now = () => clock;
  });

  afterAll(async () => {
    expect(await closeAndFindCanaries([gateway], Object.values(fakes), canaries)).toEqual([]);
  });

  /** A chat request to `model`; returns what the client saw and how many requests each supplier got. */
  async function ask(model: string, surface: "openai" | "anthropic" = "openai") {
    const { content } = canaryPrompt(canaries, "breaker");
    const before = [fakes.primary.requests.length, fakes.secondary.requests.length];
    const result =
      surface === "openai"
        ? await postRaw(gateway, "/v1/chat/completions", chatBody(model, content))
        : await postRaw(gateway, "/v1/messages", messagesBody(model, content));
    return {
      result,
      supplier: result.headers.get("x-lethe-supplier"),
      attempts: result.headers.get("x-lethe-attempts"),
      sent: [fakes.primary.requests.length - (before[0] ?? 0), fakes.secondary.requests.length - (before[1] ?? 0)],
    };
  }

  /** The `lethe_route_state` gauge of one route: 0 closed, 1 half-open, 2 open. */
  async function stateGauge(route: string): Promise<number | null> {
    const text = await fetch(`${gateway.url}/metrics`).then((response) => response.text());
    const line = text.split("\n").find((candidate) => candidate.startsWith(`lethe_route_state{route="${route}"}`));
    return line === undefined ? null : Number(line.split(" ").at(-1));
  }

  /** Makes the primary route of `duo` fail twice, opening its breaker. */
  async function openPrimary(): Promise<void> {
    fakes.primary.enqueue(behaviour.status(500), behaviour.status(500));
    for (let index = 0; index < 2; index++) {
      const answer = await ask("duo");
      expect(answer).toMatchObject({ supplier: "secondary", attempts: "2", sent: [1, 1] });
    }
  }

  it("opens after two failures, then skips the route without trying it", async () => {
    expect((await ask("duo")).supplier).toBe("primary");
    expect(await stateGauge("primary/model-a")).toBe(0);
    await openPrimary();
    expect(await stateGauge("primary/model-a")).toBe(2);

    const skipped = await ask("duo");
    expect(skipped).toMatchObject({ supplier: "secondary", attempts: "1", sent: [0, 1] });
    expect(await recordOf(gateway, skipped.result.headers.get("x-request-id"))).toMatchObject({
      supplier: "secondary",
      attempts: 1,
    });
    // each route has its own breaker: the same supplier under another model name still serves
    expect((await ask("solo")).supplier).toBe("primary");
  });

  it("half-opens after the cooldown and sends exactly one probe; its success closes the breaker", async () => {
    clock += COOLDOWN - 1;
    expect((await ask("duo")).sent).toEqual([0, 1]);
    clock += 1;
    expect(await stateGauge("primary/model-a")).toBe(1);

    // the probe is slow, so a second request arrives while it is out
    fakes.primary.enqueue(behaviour.slowFirstByte(150));
    const arrived = fakes.primary.nextRequest();
    const probe = ask("duo");
    await arrived;
    const meanwhile = await ask("duo");
    expect(meanwhile).toMatchObject({ supplier: "secondary", attempts: "1", sent: [0, 1] });
    expect(await probe).toMatchObject({ supplier: "primary", attempts: "1" });
    expect(await stateGauge("primary/model-a")).toBe(0);
    expect((await ask("duo")).supplier).toBe("primary");
  });

  it("opens again when the probe fails, for a whole new cooldown", async () => {
    await openPrimary();
    clock += COOLDOWN;
    fakes.primary.enqueue(behaviour.status(503));
    // the failed probe falls over to the next route, as any failure does
    expect(await ask("duo")).toMatchObject({ supplier: "secondary", attempts: "2", sent: [1, 1] });
    expect(await stateGauge("primary/model-a")).toBe(2);
    clock += COOLDOWN - 1;
    expect((await ask("duo")).sent).toEqual([0, 1]);
    clock += 1;
    expect(await ask("duo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
  });

  it("answers 503 LETHE_NO_HEALTHY_ROUTE in the caller's format when every route is open", async () => {
    fakes.primary.enqueue(behaviour.status(500), behaviour.status(500), behaviour.status(500));
    // solo allows 3 attempts; the breaker opens on the second failure and stops the third
    const failing = await ask("solo");
    expect(failing.result.status).toBe(502);
    expect(failing.sent).toEqual([2, 0]);
    expect(fakes.primary.clearQueue()).toBe(1);

    const openAIAnswer = await ask("solo");
    expect(openAIAnswer.result.status).toBe(503);
    expect(JSON.parse(openAIAnswer.result.text)).toMatchObject({
      error: { type: "server_error", code: "LETHE_NO_HEALTHY_ROUTE" },
    });
    expect(openAIAnswer.sent).toEqual([0, 0]);
    // clients' retries are told to wait out the cooldown, not spend themselves on it
    expect(openAIAnswer.result.headers.get("retry-after")).toBe(String(Math.ceil(COOLDOWN / 1000)));
    expect(await recordOf(gateway, openAIAnswer.result.headers.get("x-request-id"))).toMatchObject({
      status: 503,
      error_code: "LETHE_NO_HEALTHY_ROUTE",
      attempts: 0,
    });
    const anthropicAnswer = await ask("solo", "anthropic");
    expect(anthropicAnswer.result.status).toBe(529);
    expect(JSON.parse(anthropicAnswer.result.text)).toMatchObject({
      type: "error",
      error: { type: "overloaded_error", code: "LETHE_NO_HEALTHY_ROUTE" },
    });
    clock += COOLDOWN - 1_500;
    expect((await ask("solo", "anthropic")).result.headers.get("retry-after")).toBe("2");
    clock += 1_500;
    expect((await ask("solo")).sent).toEqual([1, 0]);
  });

  it("closes the breaker once a probe's stream starts, while that stream still runs", async () => {
    await openPrimary();
    clock += COOLDOWN;
    fakes.primary.enqueue(behaviour.hangMidStream());
    const { content } = canaryPrompt(canaries, "probe-stream");
    const controller = new AbortController();
    const probe = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
      body: JSON.stringify({ ...chatBody("duo", content), stream: true }),
      signal: controller.signal,
    });
    expect(probe.headers.get("x-lethe-supplier")).toBe("primary");
    try {
      // the probe's stream is still open, and the route serves everyone else already
      expect(await ask("duo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
      expect(await stateGauge("primary/model-a")).toBe(0);
    } finally {
      controller.abort();
      await probe.body?.cancel().catch(() => {});
    }
  });

  it("keeps the probe with its request when another request, admitted earlier, ends without a verdict", async () => {
    const post = (label: string, signal: AbortSignal) =>
      fetch(`${gateway.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
        body: JSON.stringify(chatBody("duo", canaryPrompt(canaries, label).content)),
        signal,
      }).catch(() => null);
    // an earlier request, let through while the breaker was closed, waits on the primary
    const early = new AbortController();
    fakes.primary.enqueue(behaviour.slowFirstByte(10_000));
    let arrived = fakes.primary.nextRequest();
    const earlyAnswer = post("early", early.signal);
    await arrived;
    await openPrimary();
    clock += COOLDOWN;
    // the probe goes out and waits too
    const probe = new AbortController();
    fakes.primary.enqueue(behaviour.slowFirstByte(10_000));
    arrived = fakes.primary.nextRequest();
    const probeAnswer = post("probe", probe.signal);
    await arrived;
    try {
      // the earlier request's client leaves: no verdict, and not its probe to hand back
      const abandoned = fakes.primary.nextAbort();
      early.abort();
      await abandoned;
      await earlyAnswer;
      expect(await ask("duo")).toMatchObject({ supplier: "secondary", sent: [0, 1] });
    } finally {
      const abandoned = fakes.primary.nextAbort();
      probe.abort();
      await abandoned;
      await probeAnswer;
    }
    // the probe's own client left: it goes back, and the next request probes and closes the breaker
    expect(await ask("duo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
    expect(await stateGauge("primary/model-a")).toBe(0);
  });

  it("does not lose the probe when Lethe fails to relay the probe's answer", async () => {
    await openPrimary();
    clock += COOLDOWN;
    // Lethe's own rendering of the answer fails once (injected; a TypeError there would be the
    // supplier's odd JSON, a bad response of the route: routing-fallback.test.ts)
    const relay = vi.spyOn(anthropicMessagesSurface, "jsonResponse").mockImplementationOnce(() => {
      throw new LetheError("LETHE_INTERNAL", "relay failed");
    });
    const broken = await ask("duo", "anthropic");
    relay.mockRestore();
    expect(broken.sent).toEqual([1, 0]);
    expect(broken.result.status).toBeGreaterThanOrEqual(500);
    // the failure's answer names the supplier once
    expect(broken.result.headers.get("x-lethe-supplier")).toBe("primary");
    expect(broken.result.headers.get("x-lethe-attempts")).toBe("1");

    // however that request ended, the route is probed again once a cooldown passed
    clock += COOLDOWN;
    expect(await ask("duo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
  });

  it("answers 503 rather than 400 when the only route that could carry the request is kept out by its breaker", async () => {
    const { content } = canaryPrompt(canaries, "carry");
    const twoChoices = { ...chatBody("mixed", content), n: 2 };
    expect((await postRaw(gateway, "/v1/chat/completions", twoChoices)).status).toBe(200);
    fakes.primary.enqueue(behaviour.status(500), behaviour.status(500));
    for (let index = 0; index < 2; index++) {
      expect((await postRaw(gateway, "/v1/chat/completions", chatBody("mixed", content))).status).toBe(502);
    }
    expect(await stateGauge("primary/model-m")).toBe(2);
    // the Anthropic route cannot give two choices; the OpenAI one could, once healthy: retry later
    const refused = await postRaw(gateway, "/v1/chat/completions", twoChoices);
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.text).error.code).toBe("LETHE_NO_HEALTHY_ROUTE");
    // pinned to the route that cannot carry it, the request itself is what cannot be served
    const pinned = await postRaw(gateway, "/v1/chat/completions", twoChoices, { "x-lethe-route": "claude/model-c" });
    expect(pinned.status).toBe(400);
    expect(JSON.parse(pinned.text).error).toMatchObject({ code: "LETHE_INVALID_REQUEST", param: "n" });
  });

  it("rests a route on a 429's retry-after: the next requests go straight to the other route, and its breaker stays closed", async () => {
    clock += 120_000;
    expect((await ask("duo")).supplier).toBe("primary");
    fakes.primary.enqueue(
      behaviour.status(429, undefined, { "retry-after": "30" }),
      behaviour.status(429, undefined, { "retry-after": "30" }),
    );
    expect(await ask("duo")).toMatchObject({ supplier: "secondary", attempts: "2", sent: [1, 1] });
    // the supplier said when to come back: nobody asks it before then
    expect(await ask("duo")).toMatchObject({ supplier: "secondary", attempts: "1", sent: [0, 1] });
    clock += 29_999;
    expect((await ask("duo")).sent).toEqual([0, 1]);
    clock += 1;
    expect(await ask("duo")).toMatchObject({ supplier: "secondary", attempts: "2", sent: [1, 1] });
    // two 429s within the breaker's window (threshold 2): a rate limit is not a failure of the route
    expect(await stateGauge("primary/model-a")).toBe(0);
    clock += 30_000;
    expect(await ask("duo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
  });

  it("answers 429 with the time left when every route rests on a supplier's rate limit", async () => {
    clock += 120_000;
    fakes.primary.enqueue(behaviour.status(429, undefined, { "retry-after": "30" }));
    const limited = await ask("solo");
    expect(limited.result.status).toBe(429);
    expect(limited.result.headers.get("retry-after")).toBe("30");
    expect(limited.sent).toEqual([1, 0]);

    const resting = await ask("solo");
    expect(resting.sent).toEqual([0, 0]);
    expect(resting.result.status).toBe(429);
    expect(resting.result.headers.get("retry-after")).toBe("30");
    expect(JSON.parse(resting.result.text)).toMatchObject({
      error: { type: "rate_limit_error", code: "LETHE_UPSTREAM_RATE_LIMITED" },
    });
    expect(await recordOf(gateway, resting.result.headers.get("x-request-id"))).toMatchObject({
      status: 429,
      error_code: "LETHE_UPSTREAM_RATE_LIMITED",
      attempts: 0,
    });
    clock += 20_000;
    const anthropicAnswer = await ask("solo", "anthropic");
    expect(anthropicAnswer.result.status).toBe(429);
    expect(anthropicAnswer.result.headers.get("retry-after")).toBe("10");
    expect(JSON.parse(anthropicAnswer.result.text)).toMatchObject({
      type: "error",
      error: { type: "rate_limit_error" },
    });
    clock += 10_000;
    expect(await ask("solo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
  });

  it("rests a route on a failure's retry-after too, at most a minute, and counts the failure", async () => {
    clock += 120_000;
    fakes.primary.enqueue(behaviour.status(503, undefined, { "retry-after": "3600" }));
    const failed = await ask("solo");
    expect(failed.result.status).toBe(503);
    // the client is told the wait the route rests, not the supplier's hour
    expect(failed.result.headers.get("retry-after")).toBe("60");
    const resting = await ask("solo");
    expect(resting.sent).toEqual([0, 0]);
    expect(resting.result.status).toBe(503);
    expect(JSON.parse(resting.result.text).error.code).toBe("LETHE_NO_HEALTHY_ROUTE");
    // an hour asked, a minute given: a supplier's word is not allowed to take the route away for long
    expect(resting.result.headers.get("retry-after")).toBe("60");
    clock += 60_000;
    expect(await ask("solo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
  });

  it("hands a half-open route's probe on when the probe meets a rate limit, to the first request after the rest", async () => {
    clock += 120_000;
    await openPrimary();
    clock += COOLDOWN;
    fakes.primary.enqueue(behaviour.status(429, undefined, { "retry-after": "10" }));
    expect(await ask("duo")).toMatchObject({ supplier: "secondary", sent: [1, 1] });
    expect((await ask("duo")).sent).toEqual([0, 1]);
    clock += 10_000;
    expect(await ask("duo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
    expect(await stateGauge("primary/model-a")).toBe(0);
  });

  it("counts a 429 that asks for less than a second towards the breaker: on every request, it is a route that fails", async () => {
    clock += 120_000;
    fakes.primary.enqueue(
      behaviour.status(429, undefined, { "retry-after": "0.001" }),
      behaviour.status(429, undefined, { "retry-after": "0.001" }),
    );
    const limited = await ask("solo");
    expect(limited.result.status).toBe(429);
    // the second 429 opened the breaker (threshold 2): no third attempt
    expect(limited.sent).toEqual([2, 0]);
    expect(await stateGauge("primary/model-s")).toBe(2);
    clock += COOLDOWN;
    expect(await ask("solo")).toMatchObject({ supplier: "primary", sent: [1, 0] });
  });
});
