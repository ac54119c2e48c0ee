import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseRouteMetrics } from "../src/cli/commands/routes-command.js";
import { findCanaries } from "./support/canary.js";
import { behaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closedPortUrl,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  startFakes,
} from "./support/routing-rig.js";
import { runCli } from "./support/run-cli.js";

/**
 * Route health where an operator sees it: the route gauges of /metrics and the
 * `lethe routes` table (route, state, recent error rate, TTFT p50), read from a
 * running gateway whose breaker clock the test moves by hand.
 */

let fakes: Record<"a" | "b" | "c", FakeOpenAISupplier>;
let gateway: TestGateway;
let clock = 1_000_000;
const canaries: string[] = [];
/** Everything the CLI printed, scanned for canaries at the end. */
const printed: string[] = [];
const COOLDOWN = 5000;
/** A supplier model name with the characters Prometheus escapes in a label value. */
const ODD_MODEL = 'odd "quoted" \\ name';

beforeAll(async () => {
  fakes = await startFakes(["a", "b", "c"]);
  gateway = await startTestGateway({
    config: {
      suppliers: [openAISupplier("a", fakes.a.url), openAISupplier("b", fakes.b.url), openAISupplier("c", fakes.c.url)],
      models: [
        {
          id: "duo",
          routes: [
            { supplier: "a", model: "model-a" },
            { supplier: "b", model: "model-b" },
          ],
        },
        { id: "odd", routes: [{ supplier: "c", model: ODD_MODEL }] },
      ],
      routing: { breaker: { failure_threshold: 2, window_ms: 60_000, cooldown_ms: COOLDOWN } },
    },
    env: ROUTING_ENV,
  });
  (gateway.running.gateway.router as { now: () => number }).now = () => clock;
});

afterAll(async () => {
  const metrics = await fetch(`${gateway.url}/metrics`).then((response) => response.text());
  await gateway.close();
  await Promise.all(Object.values(fakes).map((fake) => fake.close()));
  const hits = await findCanaries(canaries, {
    dataDir: gateway.dataDir,
    texts: { log: gateway.logText(), metrics, cli: printed.join("\n") },
  });
  expect(hits).toEqual([]);
});

/** Runs `lethe routes` in this process and splits its table into cells. */
async function routesTable(args: string[] = ["--url", gateway.url], env: Record<string, string> = {}) {
  const result = await runCli(["routes", ...args], env);
  printed.push(result.out, result.err);
  return { ...result, rows: result.out.split("\n").map((line) => line.split("\t")) };
}

async function stream(model: string): Promise<void> {
  const { content } = canaryPrompt(canaries, "cli");
  const result = await postRaw(gateway, "/v1/chat/completions", chatBody(model, content, true));
  expect(result.status).toBe(200);
}

async function metricLine(name: string, route: string): Promise<number | null> {
  const text = await fetch(`${gateway.url}/metrics`).then((response) => response.text());
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${name}{route="${route}"}`));
  return line === undefined ? null : Number(line.split(" ").at(-1));
}

describe("lethe routes", () => {
  it("says so when no route has served yet", async () => {
    const { code, rows } = await routesTable();
    expect(code).toBe(0);
    expect(rows).toEqual([
      ["ROUTE", "STATE", "ERROR RATE", "TTFT P50"],
      ["(no route has served a request since the gateway started)"],
    ]);
  });

  it("shows each route's breaker state, recent error rate and TTFT p50", async () => {
    await stream("duo");
    await stream("duo");
    // two failures open route a's breaker; b serves both requests
    fakes.a.enqueue(behaviour.status(500), behaviour.status(500));
    await stream("duo");
    await stream("duo");

    const { code, rows } = await routesTable();
    expect(code).toBe(0);
    expect(rows[0]).toEqual(["ROUTE", "STATE", "ERROR RATE", "TTFT P50"]);
    const byRoute = new Map(rows.slice(1).map((row) => [row[0], row.slice(1)]));
    expect(byRoute.get("a/model-a")?.slice(0, 2)).toEqual(["open", "50.0%"]);
    expect(byRoute.get("b/model-b")?.slice(0, 2)).toEqual(["closed", "0.0%"]);
    for (const route of ["a/model-a", "b/model-b"]) {
      expect(byRoute.get(route)?.[2]).toMatch(/^\d+\.\d ms$/);
      // the table's figure is the gauge's, in milliseconds
      const gauge = await metricLine("lethe_route_ttft_p50_seconds", route);
      expect(byRoute.get(route)?.[2]).toBe(`${((gauge ?? Number.NaN) * 1000).toFixed(1)} ms`);
    }
  });

  it("follows the breaker to half-open after the cooldown, and to closed after a good probe", async () => {
    expect(await metricLine("lethe_route_state", "a/model-a")).toBe(2);
    clock += COOLDOWN;
    expect(await metricLine("lethe_route_state", "a/model-a")).toBe(1);
    expect((await routesTable()).rows.find((row) => row[0] === "a/model-a")?.[1]).toBe("half-open");

    await stream("duo");
    expect(await metricLine("lethe_route_state", "a/model-a")).toBe(0);
    expect(await metricLine("lethe_route_error_rate", "a/model-a")).toBe(0.4);
    expect((await routesTable()).rows.find((row) => row[0] === "a/model-a")?.slice(1, 3)).toEqual(["closed", "40.0%"]);
  });

  it("shows the rest a supplier's retry-after asked for, counting down with the clock", async () => {
    fakes.b.enqueue(behaviour.status(429, undefined, { "retry-after": "20" }));
    fakes.a.enqueue(behaviour.status(429, undefined, { "retry-after": "20" }));
    await postRaw(gateway, "/v1/chat/completions", chatBody("duo", canaryPrompt(canaries, "rest").content));
    expect(await metricLine("lethe_route_rest_seconds", "a/model-a")).toBe(20);
    clock += 12_500;
    expect(await metricLine("lethe_route_rest_seconds", "b/model-b")).toBe(8);
    const rows = (await routesTable()).rows;
    expect(rows.find((row) => row[0] === "a/model-a")?.[1]).toBe("closed, resting 8 s");
    clock += 7_500;
    expect(await metricLine("lethe_route_rest_seconds", "a/model-a")).toBeNull();
    expect((await routesTable()).rows.find((row) => row[0] === "a/model-a")?.[1]).toBe("closed");
  });

  it("shows a route whose supplier model name has quotes and backslashes as configured", async () => {
    await stream("odd");
    const { rows } = await routesTable();
    expect(rows.map((row) => row[0])).toContain(`c/${ODD_MODEL}`);
    expect(parseRouteMetrics('lethe_route_state{route="c/a\\"b\\\\c"} 2\n').get('c/a"b\\c')?.state).toBe("open");
  });

  it("finds the gateway from LETHE_HOST and LETHE_PORT, and accepts a URL with a trailing slash", async () => {
    const port = new URL(gateway.url).port;
    const fromEnvironment = await routesTable([], { LETHE_HOST: "127.0.0.1", LETHE_PORT: port });
    expect(fromEnvironment.code).toBe(0);
    expect(fromEnvironment.rows.map((row) => row[0])).toContain("a/model-a");
    expect((await routesTable(["--url", `${gateway.url}/`])).code).toBe(0);
  });

  it("exits 2 with a one-line reason when no gateway answers, or on a stray argument", async () => {
    const down = (await closedPortUrl()).replace(/\/v1$/, "");
    const unreachable = await routesTable(["--url", down]);
    expect(unreachable.code).toBe(2);
    expect(unreachable.out).toBe("");
    expect(unreachable.err).toBe(`lethe: cannot reach a running gateway at ${down} (pass --url)`);

    const stray = await routesTable(["extra"]);
    expect(stray.code).toBe(2);
    expect(stray.err).toBe("lethe: usage: lethe routes [--url URL]");
  });
});
