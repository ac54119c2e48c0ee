import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CONFIG_FILE, resolveConfig } from "../src/config/load-config.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

/**
 * Browser apps: an origin listed in `server.cors_origins` gets its preflights answered and
 * Lethe's answers readable; any other origin, and every origin by default, gets no CORS
 * header at all (the browser then refuses the page the answer).
 */

const APP = "https://app.example.test";
const CHAT = { model: "lethe-demo", messages: [{ role: "user", content: "" }] };
let listed: TestGateway;
let wildcard: TestGateway;
let closed: TestGateway;
const canaries: string[] = [];

function gatewayWith(corsOrigins: string[] | undefined): Promise<TestGateway> {
  const server = corsOrigins === undefined ? {} : { server: { cors_origins: corsOrigins } };
  return startTestGateway({ config: { ...(DEFAULT_CONFIG_FILE as object), ...server } });
}

beforeAll(async () => {
  [listed, wildcard, closed] = await Promise.all([gatewayWith([APP]), gatewayWith(["*"]), gatewayWith(undefined)]);
});

afterAll(async () => {
  for (const gateway of [listed, wildcard, closed]) {
    await gateway.close();
    expect(await findCanaries(canaries, { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  }
});

function preflight(gateway: TestGateway, path: string, origin: string): Promise<Response> {
  return fetch(`${gateway.url}${path}`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, content-type, x-stainless-os",
    },
  });
}

function chat(gateway: TestGateway, origin: string): Promise<Response> {
  const canary = makeCanary("cors");
  canaries.push(canary);
  return fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { origin, authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
    body: JSON.stringify({ ...CHAT, messages: [{ role: "user", content: canary }] }),
  });
}

describe("server.cors_origins", () => {
  it("answers a listed origin's preflight on every /v1 route with what the page asked for", async () => {
    for (const path of ["/v1/chat/completions", "/v1/messages", "/v1/models"]) {
      const response = await preflight(listed, path, APP);
      expect(response.status).toBe(204);
      expect(response.headers.get("access-control-allow-origin")).toBe(APP);
      expect(response.headers.get("access-control-allow-methods")).toBe("GET, POST");
      expect(response.headers.get("access-control-allow-headers")).toBe("authorization, content-type, x-stainless-os");
      expect(response.headers.get("vary")).toBe("origin");
    }
  });

  it("lets a listed origin read answers and failures, metered and not", async () => {
    const answer = await chat(listed, APP);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("access-control-allow-origin")).toBe(APP);
    expect(answer.headers.get("access-control-expose-headers")).toBe("*");
    await answer.text();
    const refused = await fetch(`${listed.url}/v1/chat/completions`, {
      method: "POST",
      headers: { origin: APP, authorization: "Bearer sk-lethe-wrong" },
      body: "{}",
    });
    expect(refused.status).toBe(401);
    expect(refused.headers.get("access-control-allow-origin")).toBe(APP);
    const models = await fetch(`${listed.url}/v1/models`, {
      headers: { origin: APP, authorization: `Bearer ${listed.key}` },
    });
    expect(models.status).toBe(200);
    expect(models.headers.get("access-control-allow-origin")).toBe(APP);
  });

  it("gives any other origin no CORS header, and its preflight the route's own refusal", async () => {
    const other = "https://elsewhere.example.test";
    const response = await preflight(listed, "/v1/chat/completions", other);
    expect(response.status).toBe(405);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    const answer = await chat(listed, other);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("access-control-allow-origin")).toBeNull();
    await answer.text();
  });

  it("allows any origin with *, without varying on it", async () => {
    const response = await preflight(wildcard, "/v1/chat/completions", "https://any.example.test");
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe("*");
    expect(response.headers.get("vary")).toBeNull();
    const answer = await chat(wildcard, "https://any.example.test");
    expect(answer.headers.get("access-control-allow-origin")).toBe("*");
    await answer.text();
  });

  it("adds nothing by default", async () => {
    const response = await preflight(closed, "/v1/chat/completions", APP);
    expect(response.status).toBe(405);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    const answer = await chat(closed, APP);
    expect(answer.headers.get("access-control-allow-origin")).toBeNull();
    await answer.text();
  });

  it("serves the openai SDK as a browser page uses it", async () => {
    const client = new OpenAI({
      apiKey: listed.key,
      baseURL: listed.baseURL,
      dangerouslyAllowBrowser: true,
      defaultHeaders: { origin: APP },
    });
    const { response } = await client.chat.completions
      .create({ ...CHAT, messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(response.headers.get("access-control-allow-origin")).toBe(APP);
  });

  it("refuses a config entry that is no origin, naming the field", () => {
    for (const entry of [
      "https://app.example.test/",
      "app.example.test",
      "https://app.example.test/path",
      "ftp://x.test",
    ]) {
      expect(() =>
        resolveConfig(
          { ...(DEFAULT_CONFIG_FILE as object), server: { cors_origins: [entry] } },
          { LETHE_DATA_DIR: "/tmp/unused" },
          null,
        ),
      ).toThrow(/server\.cors_origins/);
    }
  });
});
