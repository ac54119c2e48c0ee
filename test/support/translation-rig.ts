import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import type { MetadataRecord } from "../../src/metering/metadata-record.js";
import { type CanaryHit, findCanaries, makeCanary } from "./canary.js";
import { type FakeAnthropicSupplier, startFakeAnthropicSupplier } from "./fake-anthropic-supplier.js";
import { type FakeOpenAISupplier, startFakeOpenAISupplier } from "./fake-openai-supplier.js";
import { fakeSupplierEntries } from "./fake-supplier-entries.js";
import { startTestGateway, type TestGateway } from "./gateway-harness.js";

/** The operator's key for the fake OpenAI supplier: it, never the caller's key, must go upstream. */
export const OPENAI_SUPPLIER_KEY = "sk-fake-openai-supplier-0123456789";
/** The operator's key for the fake Anthropic supplier, sent as `x-api-key`. */
export const ANTHROPIC_SUPPLIER_KEY = "sk-ant-fake-supplier-0123456789";

/** Configured model ids and the supplier each one routes to. */
export const MODELS = {
  /** fake-openai, an OpenAI-compatible supplier, as `upstream-gpt`. */
  gpt: "gpt-route",
  /** fake-anthropic, configured without `/v1`, as `upstream-claude`. */
  claude: "claude-route",
  /** fake-anthropic again, configured with a `/v1` base URL. */
  claudeV1: "claude-v1-route",
  /** An Anthropic supplier that is not ZDR-qualified: refused while ZDR is required. */
  retaining: "retaining-route",
  /** fake-openai again, under an id with a slash, as operators name hub models. */
  slashed: "org/slashed-route",
  /** The built-in demo supplier (OpenAI format). */
  demo: "lethe-demo",
  /** fake-anthropic first, fake-openai second: for what only one format can carry. */
  mixed: "mixed-route",
} as const;

/** Both fakes, a gateway routing to each of them and to the demo, and an official client of each format. */
export interface TranslationRig {
  openAIFake: FakeOpenAISupplier;
  anthropicFake: FakeAnthropicSupplier;
  gateway: TestGateway;
  anthropic: Anthropic;
  openai: OpenAI;
  /** Every canary made so far; none may be found in the gateway's stores, logs or metrics. */
  canaries: string[];
  /** A fresh canary, remembered for the final scan. */
  canary(label: string): string;
  /** The `request-id` of the last response either client received. */
  lastRequestId(): string;
  /** The metadata record of one request, by the id the gateway answered with. */
  recordOf(requestId: string | null): Promise<MetadataRecord>;
}

const TIMEOUTS = { first_byte_ms: 5000, idle_ms: 5000, connect_ms: 1000, total_ms: 10_000 };

/** Starts both fakes and a gateway on them; `maxBodyBytes` and `maxJsonValues` lower the body limits for 413 tests. */
export async function startTranslationRig(
  options: { maxBodyBytes?: number; maxJsonValues?: number } = {},
): Promise<TranslationRig> {
  const openAIFake = await startFakeOpenAISupplier();
  const anthropicFake = await startFakeAnthropicSupplier();
  const gateway = await startTestGateway({
    config: {
      suppliers: [
        ...fakeSupplierEntries({ openai: openAIFake.url, anthropic: anthropicFake.url }, TIMEOUTS),
        {
          id: "fake-anthropic-v1",
          type: "anthropic",
          base_url: `${anthropicFake.url}/v1`,
          api_key_env: "FAKE_ANTHROPIC_KEY",
          zdr: true,
          timeouts: TIMEOUTS,
        },
        {
          id: "retaining-anthropic",
          type: "anthropic",
          base_url: anthropicFake.url,
          api_key_env: "FAKE_ANTHROPIC_KEY",
          zdr: false,
        },
        { id: "demo", type: "demo", zdr: true },
      ],
      // unpriced routes: the demo account has no credit, and these tests are not about billing
      models: [
        { id: MODELS.gpt, routes: [{ supplier: "fake-openai", model: "upstream-gpt" }] },
        { id: MODELS.claude, routes: [{ supplier: "fake-anthropic", model: "upstream-claude" }] },
        { id: MODELS.claudeV1, routes: [{ supplier: "fake-anthropic-v1", model: "upstream-claude" }] },
        { id: MODELS.retaining, routes: [{ supplier: "retaining-anthropic", model: "upstream-claude" }] },
        { id: MODELS.slashed, routes: [{ supplier: "fake-openai", model: "upstream-gpt" }] },
        { id: MODELS.demo, description: "The demo model.", routes: [{ supplier: "demo", model: "lethe-demo" }] },
        {
          id: MODELS.mixed,
          routes: [
            { supplier: "fake-anthropic", model: "upstream-claude" },
            { supplier: "fake-openai", model: "upstream-gpt" },
          ],
        },
      ],
      // one attempt and a breaker that never opens: each test sees exactly what its fake did
      routing: { max_attempts: 1, breaker: { failure_threshold: 1_000_000 } },
      limits: {
        ...(options.maxBodyBytes !== undefined && { max_body_bytes: options.maxBodyBytes }),
        ...(options.maxJsonValues !== undefined && { max_json_values: options.maxJsonValues }),
      },
    },
    env: { FAKE_OPENAI_KEY: OPENAI_SUPPLIER_KEY, FAKE_ANTHROPIC_KEY: ANTHROPIC_SUPPLIER_KEY },
  });
  let lastRequestId: string | null = null;
  // both SDKs hide the response of their stream helpers: this fetch notes the id of every answer
  const capturingFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const response = await fetch(input, init);
    lastRequestId = response.headers.get("request-id");
    return response;
  };
  const canaries: string[] = [];
  return {
    openAIFake,
    anthropicFake,
    gateway,
    anthropic: new Anthropic({ apiKey: gateway.key, baseURL: gateway.url, maxRetries: 0, fetch: capturingFetch }),
    openai: new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0, fetch: capturingFetch }),
    canaries,
    canary(label) {
      const canary = makeCanary(label);
      canaries.push(canary);
      return canary;
    },
    lastRequestId() {
      if (lastRequestId === null) throw new Error("no response carried a request-id");
      return lastRequestId;
    },
    async recordOf(requestId) {
      const record = (await gateway.records()).find((candidate) => candidate.request_id === requestId);
      if (record === undefined) throw new Error(`no metadata record for request ${String(requestId)}`);
      return record;
    },
  };
}

/**
 * Reads `/metrics`, closes the gateway (flushing its metadata) and both fakes, then
 * looks for every canary in the data dir, the log and the metrics.
 */
export async function closeTranslationRig(rig: TranslationRig): Promise<CanaryHit[]> {
  const metrics = await fetch(`${rig.gateway.url}/metrics`).then((response) => response.text());
  await rig.gateway.close();
  await rig.openAIFake.close();
  await rig.anthropicFake.close();
  return findCanaries(rig.canaries, {
    dataDir: rig.gateway.dataDir,
    texts: { log: rig.gateway.logText(), metrics },
  });
}

/** What a raw `fetch` to the gateway got back. */
export interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
}

/** POSTs a raw body (a string is sent as is) to a gateway path with the demo key, for what the SDKs hide. */
export async function postRaw(
  rig: TranslationRig,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<RawResponse> {
  const response = await fetch(`${rig.gateway.url}${path}`, {
    method: "POST",
    headers: { "x-api-key": rig.gateway.key, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

/** One server-sent event: its `event:` name (null when absent) and parsed `data`. */
export interface SseEvent {
  event: string | null;
  data: Record<string, unknown> | "[DONE]";
}

/** Splits an SSE text into events; every `data` must be JSON or OpenAI's `[DONE]`. */
export function parseSse(text: string): SseEvent[] {
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      let event: string | null = null;
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice("event: ".length);
        else if (line.startsWith("data: ")) data += line.slice("data: ".length);
      }
      return { event, data: data === "[DONE]" ? "[DONE]" : (JSON.parse(data) as Record<string, unknown>) };
    });
}

/**
 * The rig's lifecycle as a test file's hooks: started before its tests, checked for stray
 * fake behaviours after each, closed (and scanned for canaries) after all. The rig only
 * exists once `beforeAll` ran, so what this returns forwards to it.
 */
export function useTranslationRig(): TranslationRig {
  let rig: TranslationRig | undefined;
  beforeAll(async () => {
    rig = await startTranslationRig();
  });
  afterEach(() => {
    expect(rig?.openAIFake.clearQueue()).toBe(0);
    expect(rig?.anthropicFake.clearQueue()).toBe(0);
  });
  afterAll(async () => {
    if (rig !== undefined) expect(await closeTranslationRig(rig)).toEqual([]);
  });
  return new Proxy({} as TranslationRig, { get: (_, key) => Reflect.get(rig as TranslationRig, key) });
}
