import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ModelConfig, resolveConfig } from "../src/config/load-config.js";
import { findModel, type RoutePlan, routesOf } from "../src/routing/plan-routes.js";
import { type AnswerTimings, STALE_AFTER_MS } from "../src/routing/route-stats.js";
import { type ExpectedTokens, Router } from "../src/routing/router.js";
import { behaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  startFakes,
} from "./support/routing-rig.js";

/**
 * The four strategies: unit tests of Router with a seeded random source, then price
 * and latency routing through a running gateway.
 */

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence on every run. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

interface RouteSpec {
  supplier: string;
  weight?: number;
  price?: { input_per_mtok: number; output_per_mtok: number };
}

/** A plan for one model with the given strategy and routes (suppliers named after the routes). */
function planOf(
  strategy: ModelConfig["strategy"],
  routes: RouteSpec[],
  now: () => number = () => 0,
): { plan: RoutePlan; router: Router } {
  const config = resolveConfig(
    {
      suppliers: routes.map((route) => ({
        id: route.supplier,
        type: "openai",
        base_url: "http://127.0.0.1:9/v1",
        zdr: true,
      })),
      models: [{ id: "m", strategy, routes: routes.map((route) => ({ ...route, model: "x" })) }],
      routing: { breaker: { failure_threshold: 1, window_ms: 1000, cooldown_ms: 1000 } },
    },
    {},
    null,
  );
  return { plan: routesOf(findModel(config, "m"), true), router: new Router(config.routing, now, mulberry32(7)) };
}

const NO_TOKENS: ExpectedTokens = { input: 0, output: 0 };

function suppliersOf(order: { supplier: { id: string } }[]): string[] {
  return order.map((route) => route.supplier.id);
}

describe("priority", () => {
  it("keeps the listed order and drops a route whose breaker is open", () => {
    const { plan, router } = planOf("priority", [{ supplier: "a" }, { supplier: "b" }, { supplier: "c" }]);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["a", "b", "c"]);
    router.statsFor(plan.routes[0] as RoutePlan["routes"][number]).recordFailure(0);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["b", "c"]);
  });
});

describe("weighted", () => {
  const WEIGHTS = { a: 1, b: 3, c: 6 };
  const TOTAL = 10;
  const REQUESTS = 10_000;

  it("converges to the weights over 10,000 requests", () => {
    const { plan, router } = planOf(
      "weighted",
      Object.entries(WEIGHTS).map(([supplier, weight]) => ({ supplier, weight })),
    );
    const firsts: Record<string, number> = { a: 0, b: 0, c: 0 };
    let incomplete = 0;
    for (let index = 0; index < REQUESTS; index++) {
      const order = suppliersOf(router.order(plan, NO_TOKENS));
      // every route stays in the order, as a fallback
      if ([...order].sort().join() !== "a,b,c") incomplete++;
      firsts[order[0] as string] = (firsts[order[0] as string] ?? 0) + 1;
    }
    expect(incomplete).toBe(0);
    let chiSquare = 0;
    for (const [supplier, weight] of Object.entries(WEIGHTS)) {
      const expected = (REQUESTS * weight) / TOTAL;
      const observed = firsts[supplier] ?? 0;
      // within 1.5 points of its share (about 3 standard deviations at these counts)
      expect(Math.abs(observed / REQUESTS - weight / TOTAL)).toBeLessThan(0.015);
      chiSquare += (observed - expected) ** 2 / expected;
    }
    // two degrees of freedom: 13.8 is the 99.9th percentile
    expect(chiSquare).toBeLessThan(13.8);
  });

  it("draws the fallback order by weight too (without replacement)", () => {
    const { plan, router } = planOf("weighted", [
      { supplier: "a", weight: 1 },
      { supplier: "b", weight: 3 },
      { supplier: "c", weight: 6 },
    ]);
    let cSecondAfterB = 0;
    let bFirst = 0;
    for (let index = 0; index < REQUESTS; index++) {
      const order = suppliersOf(router.order(plan, NO_TOKENS));
      if (order[0] !== "b") continue;
      bFirst++;
      if (order[1] === "c") cSecondAfterB++;
    }
    // once b is drawn, c takes 6 of the remaining 7 parts
    expect(Math.abs(cSecondAfterB / bFirst - 6 / 7)).toBeLessThan(0.03);
  });

  it("puts a route of weight 0 last, as a fallback only", () => {
    const { plan, router } = planOf("weighted", [
      { supplier: "spare", weight: 0 },
      { supplier: "a", weight: 1 },
      { supplier: "b", weight: 1 },
    ]);
    for (let index = 0; index < 1000; index++) {
      expect(suppliersOf(router.order(plan, NO_TOKENS)).at(-1)).toBe("spare");
    }
  });

  it("repeats itself given the same seed", () => {
    const draw = () => {
      const { plan, router } = planOf("weighted", [
        { supplier: "a", weight: 1 },
        { supplier: "b", weight: 1 },
      ]);
      return Array.from({ length: 50 }, () => suppliersOf(router.order(plan, NO_TOKENS))[0]).join("");
    };
    expect(draw()).toBe(draw());
  });
});

describe("lowest-price", () => {
  const ROUTES: RouteSpec[] = [
    { supplier: "dear", price: { input_per_mtok: 3, output_per_mtok: 15 } },
    { supplier: "input-cheap", price: { input_per_mtok: 0.1, output_per_mtok: 10 } },
    { supplier: "output-cheap", price: { input_per_mtok: 5, output_per_mtok: 0.2 } },
  ];

  it("puts the route that is cheapest for the request's expected tokens first", () => {
    const { plan, router } = planOf("lowest-price", ROUTES);
    // a long prompt and a short answer: input prices dominate
    expect(suppliersOf(router.order(plan, { input: 10_000, output: 1 }))).toEqual([
      "input-cheap",
      "dear",
      "output-cheap",
    ]);
    // a short prompt and a long answer: output prices dominate
    expect(suppliersOf(router.order(plan, { input: 10, output: 1000 }))[0]).toBe("output-cheap");
  });

  it("keeps the listed order between routes of equal price", () => {
    const { plan, router } = planOf("lowest-price", [
      { supplier: "first", price: { input_per_mtok: 1, output_per_mtok: 1 } },
      { supplier: "second", price: { input_per_mtok: 1, output_per_mtok: 1 } },
    ]);
    expect(suppliersOf(router.order(plan, { input: 100, output: 100 }))).toEqual(["first", "second"]);
  });
});

/** A stream's timings: first token after `ttftMs`, then `tokens` tokens at `msPerToken` each. */
function streamed(ttftMs: number, tokens: number, msPerToken: number): AnswerTimings {
  return { latency_ms: ttftMs + tokens * msPerToken, ttft_ms: ttftMs, output_tokens: tokens };
}

/** An answer that came whole (JSON) after `latencyMs`. */
function whole(latencyMs: number, tokens = 0): AnswerTimings {
  return { latency_ms: latencyMs, ttft_ms: null, output_tokens: tokens };
}

describe("lowest-latency", () => {
  it("tries unmeasured routes first, then prefers the lower TTFT plus generation time", () => {
    const { plan, router } = planOf("lowest-latency", [{ supplier: "a" }, { supplier: "b" }]);
    const [a, b] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    const expected = { input: 100, output: 100 };
    expect(suppliersOf(router.order(plan, expected))).toEqual(["a", "b"]);
    router.statsFor(a).recordSuccess(0, streamed(50, 100, 10));
    expect(suppliersOf(router.order(plan, expected))).toEqual(["b", "a"]);
    // b answers sooner but generates far slower: 100 tokens at 10/s is a whole 10 s
    router.statsFor(b).recordSuccess(0, streamed(20, 100, 100));
    expect(suppliersOf(router.order(plan, expected))).toEqual(["a", "b"]);
  });

  it("moves away from a route whose moving average grows", () => {
    const { plan, router } = planOf("lowest-latency", [{ supplier: "a" }, { supplier: "b" }]);
    const [a, b] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    for (let index = 0; index < 10; index++) {
      router.statsFor(a).recordSuccess(0, whole(10));
      router.statsFor(b).recordSuccess(0, whole(30));
    }
    expect(suppliersOf(router.order(plan, NO_TOKENS))[0]).toBe("a");
    let slowAnswers = 0;
    while (suppliersOf(router.order(plan, NO_TOKENS))[0] === "a" && slowAnswers < 100) {
      router.statsFor(a).recordSuccess(0, whole(200));
      slowAnswers++;
    }
    // a moving average: one slow answer is enough here, and it takes more than none
    expect(slowAnswers).toBe(1);
  });

  it("compares a route measured by whole answers with one measured by streams like with like", () => {
    const { plan, router } = planOf("lowest-latency", [{ supplier: "json" }, { supplier: "streams" }]);
    const [json, streams] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    const expected = { input: 100, output: 100 };
    // 100 tokens whole after 1,000 ms, against a stream of them done after 300 + 800 ms
    router.statsFor(json).recordSuccess(0, whole(1000, 100));
    router.statsFor(streams).recordSuccess(0, streamed(300, 100, 8));
    // a whole answer's wait is not counted twice (as TTFT, then again spread over its tokens)
    expect(suppliersOf(router.order(plan, expected))).toEqual(["json", "streams"]);
    // a whole answer from a route that also streams: its latency less the generation its streams showed
    router.statsFor(streams).recordSuccess(0, whole(1100, 100));
    expect(router.statsFor(streams).ttftEwmaMs).toBe(300);
    expect(router.statsFor(streams).msPerTokenEwma).toBe(8);
  });

  /** Orders the plan's routes for one request and sends it on the first, as attemptRoutes does. */
  function orderAndSend(router: Router, plan: RoutePlan): string[] {
    const ordered = router.order(plan, NO_TOKENS);
    if (ordered[0] !== undefined) router.sending(plan, ordered[0]);
    return suppliersOf(ordered);
  }

  it("sends one request at a time to measure a route that never answered", () => {
    const { plan, router } = planOf("lowest-latency", [{ supplier: "a" }, { supplier: "b" }]);
    const [a] = plan.routes as [RoutePlan["routes"][number]];
    router.statsFor(a).recordSuccess(0, whole(10));
    expect(orderAndSend(router, plan)).toEqual(["b", "a"]);
    // b's measuring request is out: the requests beside it go to the measured route
    expect(orderAndSend(router, plan)).toEqual(["a", "b"]);
    expect(orderAndSend(router, plan)).toEqual(["a", "b"]);
  });

  it("keeps measuring a route first that was ordered first but passed over (its breaker, a format it cannot carry)", () => {
    const { plan, router } = planOf("lowest-latency", [{ supplier: "a" }, { supplier: "b" }]);
    const [a, b] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    router.statsFor(a).recordSuccess(0, whole(10));
    // b comes first, but the request goes to a: b measured nothing and stays first
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["b", "a"]);
    router.sending(plan, a);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["b", "a"]);
    router.sending(plan, b);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["a", "b"]);
  });

  it("measures a stale route again while the model has traffic, and its answer replaces the old figures", () => {
    let clock = 0;
    const { plan, router } = planOf("lowest-latency", [{ supplier: "fast" }, { supplier: "slow" }], () => clock);
    const [fast, slow] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    router.statsFor(fast).recordSuccess(clock, whole(10));
    router.statsFor(slow).recordSuccess(clock, whole(500));
    clock = STALE_AFTER_MS - 1;
    router.statsFor(fast).recordSuccess(clock, whole(10));
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["fast", "slow"]);
    clock = STALE_AFTER_MS;
    // slow's figures are a minute old: one request measures it, the others stay on fast
    expect(orderAndSend(router, plan)).toEqual(["slow", "fast"]);
    expect(orderAndSend(router, plan)).toEqual(["fast", "slow"]);
    // it recovered: the new answer replaces its stale average rather than nudging it
    router.statsFor(slow).recordSuccess(clock, whole(5));
    expect(router.statsFor(slow).ttftEwmaMs).toBe(5);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["slow", "fast"]);
  });

  it("does not measure a route again right after its measuring request failed", () => {
    let clock = 0;
    const { plan, router } = planOf("lowest-latency", [{ supplier: "fast" }, { supplier: "down" }], () => clock);
    const [fast, down] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    router.statsFor(fast).recordSuccess(clock, whole(10));
    router.statsFor(down).recordSuccess(clock, whole(20));
    clock = STALE_AFTER_MS;
    router.statsFor(fast).recordSuccess(clock, whole(10));
    expect(orderAndSend(router, plan)).toEqual(["down", "fast"]);
    router.statsFor(down).recordFailure(clock);
    // still counted as being measured: with a breaker slower to open than this plan's (one
    // failure), every request would otherwise try it first again until it opened
    expect(router.statsFor(down).isProbing(clock + 1)).toBe(true);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["fast"]);
  });

  it("keeps stale figures when the model has had no traffic, rather than spend its rare requests measuring", () => {
    let clock = 0;
    const { plan, router } = planOf("lowest-latency", [{ supplier: "fast" }, { supplier: "slow" }], () => clock);
    const [fast, slow] = plan.routes as [RoutePlan["routes"][number], RoutePlan["routes"][number]];
    router.statsFor(slow).recordSuccess(clock, whole(500));
    router.statsFor(fast).recordSuccess(clock, whole(10));
    clock = 10 * STALE_AFTER_MS;
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["fast", "slow"]);
    expect(suppliersOf(router.order(plan, NO_TOKENS))).toEqual(["fast", "slow"]);
  });
});

describe("through a running gateway", () => {
  let fakes: Record<"a" | "b", FakeOpenAISupplier>;
  let gateway: TestGateway;
  const canaries: string[] = [];

  beforeAll(async () => {
    fakes = await startFakes(["a", "b"]);
    const patient = { timeouts: { first_byte_ms: 5000 } };
    gateway = await startTestGateway({
      config: {
        suppliers: [openAISupplier("a", fakes.a.url, patient), openAISupplier("b", fakes.b.url, patient)],
        models: [
          {
            id: "priced",
            strategy: "lowest-price",
            routes: [
              { supplier: "a", model: "input-cheap", price: { input_per_mtok: 0.1, output_per_mtok: 10 } },
              { supplier: "b", model: "output-cheap", price: { input_per_mtok: 5, output_per_mtok: 0.2 } },
            ],
          },
          {
            id: "quick",
            strategy: "lowest-latency",
            routes: [
              { supplier: "a", model: "quick-a" },
              { supplier: "b", model: "quick-b" },
            ],
          },
          // a first route that times out: its fallback's figures must not count the wait
          {
            id: "fallback",
            routes: [
              { supplier: "a", model: "fb-a", timeouts: { first_byte_ms: 400 } },
              { supplier: "b", model: "fb-b" },
            ],
          },
          // opens the connections to both suppliers, so no cold start weighs on `quick`'s averages
          {
            id: "warm-up",
            routes: [
              { supplier: "a", model: "warm-a" },
              { supplier: "b", model: "warm-b" },
            ],
          },
        ],
        // the latency test measures both routes through x-lethe-route
        routing: { allow_route_header: true },
      },
      env: ROUTING_ENV,
    });
  });

  afterAll(async () => {
    expect(await closeAndFindCanaries([gateway], Object.values(fakes), canaries)).toEqual([]);
  });

  async function servedBy(body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<string | null> {
    const result = await postRaw(gateway, "/v1/chat/completions", body, headers);
    expect(result.status).toBe(200);
    return result.headers.get("x-lethe-supplier");
  }

  it("lowest-price picks the route that is cheaper for this request", async () => {
    const { content } = canaryPrompt(canaries, "price");
    // a short prompt and max_tokens 1000: the output price decides
    expect(await servedBy({ ...chatBody("priced", content), max_tokens: 1000 })).toBe("b");
    expect(fakes.b.requests.at(-1)?.body).toMatchObject({ model: "output-cheap" });
    // a prompt of about 10,000 tokens and max_tokens 1: the input price decides
    expect(await servedBy({ ...chatBody("priced", `${content} ${"word ".repeat(8000)}`), max_tokens: 1 })).toBe("a");
    expect(fakes.a.requests.at(-1)?.body).toMatchObject({ model: "input-cheap" });
  });

  it("times a fallback route from when it was tried, not from the request's start", async () => {
    const { content } = canaryPrompt(canaries, "fallback");
    fakes.a.setBehaviour(behaviour.slowFirstByte(5_000));
    try {
      const json = await postRaw(gateway, "/v1/chat/completions", chatBody("fallback", content));
      expect(json.status).toBe(200);
      expect(json.headers.get("x-lethe-attempts")).toBe("2");
      const stream = await postRaw(gateway, "/v1/chat/completions", { ...chatBody("fallback", content), stream: true });
      expect(stream.status).toBe(200);
      expect(stream.headers.get("x-lethe-attempts")).toBe("2");
    } finally {
      fakes.a.setBehaviour(behaviour.ok());
    }
    const records = (await gateway.records()).slice(-2);
    // the client waited out a's first-byte timeout both times; b itself answered at once
    for (const record of records) expect(record.latency_ms).toBeGreaterThanOrEqual(400);
    const stats = new Map(gateway.running.gateway.router.allStats()).get("b/fb-b");
    expect(stats?.ttftEwmaMs).toBeLessThan(200);
  });

  it("lowest-latency moves traffic away from a supplier that becomes slow", async () => {
    const { content } = canaryPrompt(canaries, "latency");
    const ask = (headers: Record<string, string> = {}) => servedBy(chatBody("quick", content), headers);
    for (const route of ["a/warm-a", "b/warm-b", "a/warm-a", "b/warm-b"]) {
      await servedBy(chatBody("warm-up", content), { "x-lethe-route": route });
    }
    // b starts out 100 ms slower; both routes are measured through x-lethe-route (pinned
    // requests feed the averages too), a few times so that one outlier fades
    fakes.b.setBehaviour(behaviour.slowFirstByte(100));
    for (let index = 0; index < 4; index++) await ask({ "x-lethe-route": "b/quick-b" });
    fakes.b.setBehaviour(behaviour.ok());
    for (let index = 0; index < 6; index++) await ask({ "x-lethe-route": "a/quick-a" });
    expect([await ask(), await ask()]).toEqual(["a", "a"]);

    // now a becomes slow
    fakes.a.setBehaviour(behaviour.slowFirstByte(500));
    const after: (string | null)[] = [];
    for (let index = 0; index < 8; index++) after.push(await ask());
    fakes.a.setBehaviour(behaviour.ok());

    // a slow answer or two raise a's moving average above b's; then b gets all of the traffic
    const averages = JSON.stringify(
      [...gateway.running.gateway.router.allStats()].map(([route, stats]) => [route, stats.ttftEwmaMs]),
    );
    expect(after.filter((supplier) => supplier === "a").length, averages).toBeLessThanOrEqual(2);
    expect(after.slice(2), averages).toEqual(Array(6).fill("b"));
  });
});
