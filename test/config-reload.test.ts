import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
 * A config reload (SIGHUP) applied to a running gateway: new suppliers, models, routes and
 * prices serve from the next request, requests in flight finish where they were sent,
 * unchanged suppliers keep their connections, and routes keep their health. Every prompt
 * carries a canary; none may be retained anywhere.
 */

let fakes: Record<"alpha" | "beta" | "gamma", FakeOpenAISupplier>;
let gateway: TestGateway;
let openai: OpenAI;
const canaries: string[] = [];

const ROUTING = { max_attempts: 1, deadline_ms: 10_000, backoff_base_ms: 10, backoff_max_ms: 20 };

/** The config document of each generation; `limits` here are the harness's own, so a change to them is one to a fixed section. */
function document(generation: 1 | 2 | 3): Record<string, unknown> {
  const alpha = openAISupplier("alpha", fakes.alpha.url);
  const beta = openAISupplier("beta", fakes.beta.url);
  const gamma = openAISupplier("gamma", fakes.gamma.url);
  const limits = { rpm: 1_000_000, tpm: 1_000_000_000_000 };
  if (generation === 1) {
    return {
      limits,
      suppliers: [alpha, beta],
      models: [
        { id: "one", routes: [{ supplier: "alpha", model: "alpha-1" }] },
        { id: "two", routes: [{ supplier: "beta", model: "beta-1" }] },
      ],
      routing: ROUTING,
    };
  }
  if (generation === 2) {
    return {
      // a fixed section changed too: it waits for a restart
      limits: { ...limits, rpm: 7 },
      // alpha's settings change (it is rebuilt); beta's do not (it keeps its pool); gamma is new
      suppliers: [{ ...alpha, headers: { "x-generation": "2" } }, beta, gamma],
      models: [
        { id: "one", routes: [{ supplier: "alpha", model: "alpha-2" }] },
        { id: "two", routes: [{ supplier: "beta", model: "beta-1" }] },
        { id: "three", routes: [{ supplier: "gamma", model: "gamma-1" }] },
      ],
      routing: ROUTING,
    };
  }
  return {
    limits,
    suppliers: [beta],
    models: [{ id: "two", routes: [{ supplier: "beta", model: "beta-1" }] }],
    routing: { ...ROUTING, max_attempts: 2 },
  };
}

function reload(generation: 1 | 2 | 3) {
  const config = resolveConfig(
    document(generation),
    { ...ROUTING_ENV, LETHE_DATA_DIR: gateway.dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1" },
    null,
  );
  return reloadGateway(gateway.running.gateway, config);
}

beforeAll(async () => {
  fakes = await startFakes(["alpha", "beta", "gamma"]);
  gateway = await startTestGateway({ config: document(1), env: ROUTING_ENV });
  openai = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
});

afterAll(async () => {
  expect(await closeAndFindCanaries([gateway], Object.values(fakes), canaries)).toEqual([]);
});

async function ask(model: string): Promise<{ status: number; upstreamModel: unknown; requestId: string | null }> {
  const { content } = canaryPrompt(canaries, "reload");
  const result = await postRaw(gateway, "/v1/chat/completions", chatBody(model, content));
  const fake = Object.values(fakes).find((candidate) => candidate.requests.at(-1)?.rawBody.includes(content));
  const upstream = fake?.requests.at(-1)?.body as { model?: unknown } | undefined;
  return { status: result.status, upstreamModel: upstream?.model, requestId: result.headers.get("x-request-id") };
}

describe("reloading the config of a running gateway", () => {
  it("serves the new routing from the next request, finishing what was in flight where it was sent", async () => {
    expect(await ask("one")).toMatchObject({ status: 200, upstreamModel: "alpha-1" });
    expect(await ask("two")).toMatchObject({ status: 200, upstreamModel: "beta-1" });
    const betaConnection = fakes.beta.requests.at(-1)?.connectionId;
    const zdrBefore = await (await fetch(`${gateway.url}/v1/zdr`)).json();

    // a request on its way to alpha, whose supplier the reload replaces
    fakes.alpha.enqueue(behaviour.slowFirstByte(400));
    const arrived = fakes.alpha.nextRequest();
    const { content } = canaryPrompt(canaries, "inflight");
    const inFlight = postRaw(gateway, "/v1/chat/completions", chatBody("one", content));
    await arrived;

    const outcome = await reload(2);
    expect(outcome).toEqual({ models: 3, suppliers: 3, needRestart: ["limits"] });

    // the request sent before the reload is answered by the supplier it went to
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    expect(await recordOf(gateway, answered.headers.get("x-request-id"))).toMatchObject({
      model: "one",
      supplier: "alpha",
      status: 200,
    });

    // new model and new route; the rebuilt supplier sends its new headers
    expect(await ask("three")).toMatchObject({ status: 200, upstreamModel: "gamma-1" });
    expect(await ask("one")).toMatchObject({ status: 200, upstreamModel: "alpha-2" });
    expect(fakes.alpha.requests.at(-1)?.headers["x-generation"]).toBe("2");
    // the unchanged supplier kept its kept-alive connection
    expect(await ask("two")).toMatchObject({ status: 200, upstreamModel: "beta-1" });
    expect(fakes.beta.requests.at(-1)?.connectionId).toBe(betaConnection);

    // the listing, the signed statement (it names the suppliers) and the running config follow
    expect((await openai.models.list()).data.map((model) => model.id)).toEqual(["one", "two", "three"]);
    const zdrAfter = (await (await fetch(`${gateway.url}/v1/zdr`)).json()) as { statement: { suppliers: unknown[] } };
    expect(zdrAfter).not.toEqual(zdrBefore);
    expect(zdrAfter.statement.suppliers).toContainEqual({ id: "gamma", type: "openai", zdr: true });
    // the fixed section stayed as the process runs it
    expect(gateway.running.gateway.config.limits.rpm).toBe(1_000_000);
  });

  it("drops removed models and routes, keeping the health of the routes still configured", async () => {
    const router = gateway.running.gateway.router;
    const betaStats = router.statsFor(gateway.running.gateway.config.models.get("two")?.routes[0] as never);
    const outcome = await reload(3);
    expect(outcome).toEqual({ models: 1, suppliers: 1, needRestart: [] });
    const next = gateway.running.gateway.router;
    // routing settings changed: a new router, which took over beta's record
    expect(next).not.toBe(router);
    expect(next.settings.maxAttempts).toBe(2);
    expect([...next.allStats()].map(([key]) => key)).toEqual(["beta/beta-1"]);
    expect(next.statsFor(gateway.running.gateway.config.models.get("two")?.routes[0] as never)).toBe(betaStats);

    const gone = await postRaw(gateway, "/v1/chat/completions", chatBody("one", "hello"));
    expect(gone.status).toBe(404);
    expect(JSON.parse(gone.text).error.code).toBe("LETHE_UNKNOWN_MODEL");
    expect(await ask("two")).toMatchObject({ status: 200, upstreamModel: "beta-1" });
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text();
    expect(metrics).toContain('lethe_route_state{route="beta/beta-1"}');
    expect(metrics).not.toContain('route="alpha/');
  });
});
