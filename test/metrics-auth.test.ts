import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CONFIG_FILE } from "../src/config/load-config.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import { runCli } from "./support/run-cli.js";

/** `server.metrics_auth: operator`: /metrics (supplier ids, model names, volumes) only for operator tokens. */
describe("GET /metrics behind an operator token", () => {
  let gateway: TestGateway;
  let token: string;

  beforeAll(async () => {
    gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), server: { metrics_auth: "operator" } },
    });
    const created = await runCli(["operators", "create", "prometheus"], { LETHE_DATA_DIR: gateway.dataDir });
    expect(created.code).toBe(0);
    token = /token:\s+(\S+)/.exec(created.out)?.[1] ?? "";
  });

  afterAll(async () => {
    await gateway.close();
    await removeDataDir(gateway);
  });

  const scrape = async (authorization?: string) => {
    const response = await fetch(`${gateway.url}/metrics`, {
      headers: authorization === undefined ? {} : { authorization },
    });
    return { status: response.status, text: await response.text(), type: response.headers.get("content-type") };
  };

  it("refuses a scrape without a token, or with a customer's API key, with 401 and a code", async () => {
    for (const authorization of [undefined, `Bearer ${gateway.key}`, "Bearer sk-lethe-op-not-a-real-token"]) {
      const refused = await scrape(authorization);
      expect(refused.status).toBe(401);
      expect(JSON.parse(refused.text).error.code).toBe("LETHE_INVALID_OPERATOR_TOKEN");
      expect(refused.text).not.toContain("lethe_requests_total");
    }
  });

  it("serves the metrics to an operator token, and stops once it is revoked", async () => {
    const served = await scrape(`Bearer ${token}`);
    expect(served.status).toBe(200);
    expect(served.type).toMatch(/^text\/plain/);
    expect(served.text).toContain("# TYPE lethe_requests_total counter");
    expect((await runCli(["operators", "revoke", "prometheus"], { LETHE_DATA_DIR: gateway.dataDir })).code).toBe(0);
    expect((await scrape(`Bearer ${token}`)).status).toBe(401);
    // rotating brings the operator back under a new token; the old one stays refused
    const rotated = await runCli(["operators", "rotate", "prometheus"], { LETHE_DATA_DIR: gateway.dataDir });
    const fresh = /token:\s+(\S+)/.exec(rotated.out)?.[1] ?? "";
    expect((await scrape(`Bearer ${fresh}`)).status).toBe(200);
    expect((await scrape(`Bearer ${token}`)).status).toBe(401);
  });

  it("lets `lethe routes` read the route table with LETHE_OPERATOR_TOKEN, and says what is missing without it", async () => {
    const rotated = await runCli(["operators", "rotate", "prometheus"], { LETHE_DATA_DIR: gateway.dataDir });
    const current = /token:\s+(\S+)/.exec(rotated.out)?.[1] ?? "";
    const without = await runCli(["routes", "--url", gateway.url], {});
    expect(without.code).toBe(2);
    expect(without.err).toBe(
      `lethe: ${gateway.url}/metrics needs an operator token: set LETHE_OPERATOR_TOKEN (server.metrics_auth is operator)`,
    );
    const routes = await runCli(["routes", "--url", gateway.url], { LETHE_OPERATOR_TOKEN: current });
    expect(routes.code).toBe(0);
    expect(routes.out.split("\n")[0]).toBe("ROUTE\tSTATE\tERROR RATE\tTTFT P50");
  });

  it("lets `lethe audit --target` scan the metrics with LETHE_OPERATOR_TOKEN, and names what it lacks without it", async () => {
    const rotated = await runCli(["operators", "rotate", "prometheus"], { LETHE_DATA_DIR: gateway.dataDir });
    const current = /token:\s+(\S+)/.exec(rotated.out)?.[1] ?? "";
    const audit = async (env: Record<string, string>) => {
      const result = await runCli(["audit", "--target", gateway.url, "--key", gateway.key, "--json"], {
        LETHE_DATA_DIR: gateway.dataDir,
        ...env,
      });
      const report = JSON.parse(result.out) as { stores: { store: string; scanned: boolean; detail: string }[] };
      return report.stores.find((store) => store.store === "metrics");
    };
    expect(await audit({})).toMatchObject({
      scanned: false,
      detail: "GET /metrics needs an operator token (set LETHE_OPERATOR_TOKEN)",
    });
    expect((await audit({ LETHE_OPERATOR_TOKEN: current }))?.scanned).toBe(true);
  }, 60_000);

  it("leaves /healthz and /readyz open for probes", async () => {
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
  });
});
