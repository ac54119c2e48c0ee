import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveConfig } from "../src/config/load-config.js";
import { fromAnthropicUsage, toAnthropicUsage } from "../src/metering/anthropic-usage.js";
import { costMicros } from "../src/metering/cost.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import {
  anthropicBehaviour,
  type FakeAnthropicSupplier,
  startFakeAnthropicSupplier,
} from "./support/fake-anthropic-supplier.js";
import { fakeSupplierEntries } from "./support/fake-supplier-entries.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

const TIMEOUTS = { first_byte_ms: 5000, idle_ms: 5000, connect_ms: 1000, total_ms: 10_000 };
// Anthropic's own ratios: a five-minute cache write at 1.25× the input price, a read at 0.1×
const PRICE = { input_per_mtok: 4, output_per_mtok: 20, cached_input_per_mtok: 0.4, cache_write_per_mtok: 5 };
const USAGE = { input: 500, output: 250, cacheRead: 400, cacheCreation: 100, thinking: 0 };
// 500 plain input at 4, 400 read at 0.4, 100 written at 5, 250 output at 20
const EXPECTED_MICROS = 500 * 4 + 400 * 0.4 + 100 * 5 + 250 * 20;

describe("prompt-cache writes priced apart (Anthropic's cache_creation_input_tokens)", () => {
  let fake: FakeAnthropicSupplier;
  let gateway: TestGateway;
  const canaries: string[] = [];

  beforeAll(async () => {
    fake = await startFakeAnthropicSupplier();
    gateway = await startTestGateway({
      config: {
        suppliers: fakeSupplierEntries({ openai: "http://127.0.0.1:9/v1", anthropic: fake.url }, TIMEOUTS),
        models: [{ id: "cached-claude", routes: [{ supplier: "fake-anthropic", model: "claude-x", price: PRICE }] }],
      },
      env: { FAKE_ANTHROPIC_KEY: "sk-ant-fake", FAKE_OPENAI_KEY: "sk-fake" },
    });
  });

  afterAll(async () => {
    await gateway.close();
    await fake.close();
    expect(await findCanaries(canaries, { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  });

  it("reads cache writes apart from plain input and prices them at cache_write_per_mtok", () => {
    const usage = fromAnthropicUsage({
      input_tokens: 500,
      output_tokens: 250,
      cache_read_input_tokens: 400,
      cache_creation_input_tokens: 100,
    });
    expect(usage).toEqual({ input: 1000, output: 250, cachedInput: 400, cacheWrite: 100, reasoning: 0 });
    if (usage === null) throw new Error("no usage");
    const price = { inputPerMtok: 4, outputPerMtok: 20, cachedInputPerMtok: 0.4, cacheWritePerMtok: 5 };
    expect(costMicros(usage, price)).toBe(EXPECTED_MICROS);
    // and back to Anthropic's shape unchanged, for a client of a translated route
    expect(toAnthropicUsage(usage)).toEqual({
      input_tokens: 500,
      output_tokens: 250,
      cache_read_input_tokens: 400,
      cache_creation_input_tokens: 100,
    });
  });

  it("defaults the cache-write price to the input price", () => {
    const config = resolveConfig(
      {
        suppliers: [{ id: "a", type: "anthropic", base_url: "http://127.0.0.1:9", zdr: true }],
        models: [
          { id: "m", routes: [{ supplier: "a", model: "x", price: { input_per_mtok: 3, output_per_mtok: 15 } }] },
        ],
      },
      {},
      null,
    );
    expect(config.models.get("m")?.routes[0]?.price.cacheWritePerMtok).toBe(3);
  });

  it("bills a request through the gateway, JSON and streamed, at those prices", async () => {
    const anthropic = new Anthropic({ apiKey: gateway.key, baseURL: gateway.url, maxRetries: 0 });
    const openai = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
    const content = makeCanary("cachewrite");
    canaries.push(content);
    fake.setBehaviour(anthropicBehaviour.ok({ usage: USAGE }));
    const message = await anthropic.messages.create({
      model: "cached-claude",
      max_tokens: 300,
      messages: [{ role: "user", content }],
    });
    expect(message.usage).toMatchObject({ cache_creation_input_tokens: 100, cache_read_input_tokens: 400 });
    const stream = await anthropic.messages.create({
      model: "cached-claude",
      max_tokens: 300,
      stream: true,
      messages: [{ role: "user", content }],
    });
    for await (const _event of stream) {
      // read to the end
    }
    const translated = await openai.chat.completions.create({
      model: "cached-claude",
      max_tokens: 300,
      messages: [{ role: "user", content }],
    });
    expect(translated.usage?.prompt_tokens).toBe(1000);
    const records = await gateway.records();
    expect(records.map((record) => record.cost_micros)).toEqual([EXPECTED_MICROS, EXPECTED_MICROS, EXPECTED_MICROS]);
  });
});
