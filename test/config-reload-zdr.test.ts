import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load-config.js";
import { reloadGateway } from "../src/server/reload-config.js";
import { behaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  recordOf,
  startFakes,
} from "./support/routing-rig.js";

/**
 * A request planned before a reload falls back after it: a supplier the reload no longer
 * qualifies for ZDR must not get it when the caller's account requires ZDR, even though
 * the plan, made before, listed it.
 */

let fakes: Record<"primary" | "fallback", FakeOpenAISupplier>;
let gateway: TestGateway;
const canaries: string[] = [];

const ROUTING = { max_attempts: 2, deadline_ms: 10_000, backoff_base_ms: 10, backoff_max_ms: 20 };

function document(fallbackZdr: boolean, primaryZdr = true): Record<string, unknown> {
  return {
    suppliers: [
      // long enough a first-byte wait for the reload to land while the primary holds the request
      openAISupplier("primary", fakes.primary.url, { zdr: primaryZdr, timeouts: { first_byte_ms: 1_500 } }),
      openAISupplier("fallback", fakes.fallback.url, { zdr: fallbackZdr }),
    ],
    models: [
      {
        id: "chat",
        strategy: "priority",
        max_attempts: 3,
        routes: [
          { supplier: "primary", model: "primary-1" },
          { supplier: "fallback", model: "fallback-1" },
        ],
      },
    ],
    routing: ROUTING,
  };
}

beforeAll(async () => {
  fakes = await startFakes(["primary", "fallback"]);
  gateway = await startTestGateway({ config: document(true), env: ROUTING_ENV });
});

// a supplier's retry-after rests its route for the requests that follow (router.ts)
afterEach(() => gateway.passRouteRests());

afterAll(async () => {
  expect(await closeAndFindCanaries([gateway], Object.values(fakes), canaries)).toEqual([]);
});

function reload(fallbackZdr: boolean, primaryZdr = true) {
  const config = resolveConfig(
    document(fallbackZdr, primaryZdr),
    { ...ROUTING_ENV, LETHE_DATA_DIR: gateway.dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1" },
    null,
  );
  return reloadGateway(gateway.running.gateway, config);
}

/** The gateway's upstream_error events so far. */
function upstreamErrors(): number {
  return gateway.logText().split("upstream_error").length - 1;
}

describe("a reload that takes a supplier's ZDR qualification away", () => {
  it("keeps a request in flight that requires ZDR from falling back to it", async () => {
    fakes.primary.enqueue(behaviour.slowFirstByte(60_000));
    const arrived = fakes.primary.nextRequest();
    const { content, canary } = canaryPrompt(canaries, "zdr-reload");
    const inFlight = postRaw(gateway, "/v1/chat/completions", chatBody("chat", content));
    await arrived;

    await reload(false);

    const answered = await inFlight;
    // the primary timed out; the fallback, no longer ZDR, was passed over, so the primary had
    // the second attempt too (and answered it)
    expect(answered.status).toBe(200);
    expect(fakes.fallback.requests.some((request) => request.rawBody.includes(canary))).toBe(false);
    expect(answered.headers.get("x-lethe-supplier")).toBe("primary");
    expect(await recordOf(gateway, answered.headers.get("x-request-id"))).toMatchObject({
      supplier: "primary",
      attempts: 2,
    });

    // a request made after the reload is planned without it, and says so
    const after = await postRaw(
      gateway,
      "/v1/chat/completions",
      chatBody("chat", canaryPrompt(canaries, "zdr-after").content),
    );
    expect(after.status).toBe(200);
    expect(after.headers.get("x-lethe-supplier")).toBe("primary");
    expect(fakes.fallback.requests).toHaveLength(0);
  });
  it("keeps it from a retry that waited out a backoff across the reload", async () => {
    await reload(true);
    // primary: 429 asking for two seconds; fallback: 500; the retry of primary waits them
    fakes.primary.enqueue(behaviour.status(429, undefined, { "retry-after": "2" }));
    fakes.fallback.enqueue(behaviour.status(500));
    const errorsBefore = upstreamErrors();
    const primaryBefore = fakes.primary.requests.length;
    const { content, canary } = canaryPrompt(canaries, "zdr-backoff");
    const inFlight = postRaw(gateway, "/v1/chat/completions", chatBody("chat", content));
    // both failures seen: the request is now in its backoff before primary's second try
    while (upstreamErrors() < errorsBefore + 2) await new Promise((resolve) => setTimeout(resolve, 5));
    await reload(true, false);

    // primary's second try is passed over; the third attempt goes to the fallback, still qualified
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    expect(answered.headers.get("x-lethe-supplier")).toBe("fallback");
    expect(fakes.primary.requests.length).toBe(primaryBefore + 1);
    expect(fakes.primary.requests.filter((request) => request.rawBody.includes(canary))).toHaveLength(1);
    expect(await recordOf(gateway, answered.headers.get("x-request-id"))).toMatchObject({ attempts: 3 });
    await reload(true);
  });
  it("refuses a request in flight as ZDR-unavailable once the reload left its model no qualified route", async () => {
    await reload(true);
    fakes.primary.enqueue(behaviour.slowFirstByte(60_000));
    const arrived = fakes.primary.nextRequest();
    const fallbackBefore = fakes.fallback.requests.length;
    const { content } = canaryPrompt(canaries, "zdr-none-left");
    const inFlight = postRaw(gateway, "/v1/chat/completions", chatBody("chat", content));
    await arrived;
    await reload(false, false);

    // the primary timed out; neither route may have the retry: refused as the next request
    // would be, 403 LETHE_ZDR_UNAVAILABLE, not the primary's timeout nor a retryable 503
    const answered = await inFlight;
    expect(answered.status).toBe(403);
    expect(JSON.parse(answered.text).error.code).toBe("LETHE_ZDR_UNAVAILABLE");
    expect(fakes.fallback.requests.length).toBe(fallbackBefore);
    expect(await recordOf(gateway, answered.headers.get("x-request-id"))).toMatchObject({
      status: 403,
      error_code: "LETHE_ZDR_UNAVAILABLE",
      attempts: 1,
    });
    await reload(true);
  });
});
