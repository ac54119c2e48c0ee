import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

describe("chat completions against the built-in demo supplier", () => {
  let gateway: TestGateway;
  let client: OpenAI;
  const canaries: string[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway();
    client = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
  });

  afterAll(async () => {
    await gateway.close();
    expect(await findCanaries(canaries, { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  });

  it("answers non-streaming requests with the demo label, usage and Lethe headers", async () => {
    const secret = makeCanary("demo-json");
    canaries.push(secret);
    const { data, response } = await client.chat.completions
      .create({ model: "lethe-demo", messages: [{ role: "user", content: `remember ${secret}` }] })
      .withResponse();
    expect(data.object).toBe("chat.completion");
    expect(data.model).toBe("lethe-demo");
    expect(data.choices[0]?.message.content).toContain("Lethe demo model");
    expect(data.choices[0]?.message.content).toContain(secret);
    expect(data.usage?.prompt_tokens).toBeGreaterThan(0);
    expect(response.headers.get("x-lethe-supplier")).toBe("demo");
    expect(response.headers.get("x-lethe-zdr")).toBe("enforced");
    expect(response.headers.get("x-request-id")).toMatch(/^req_/);
  });

  it("streams word by word and adds the usage chunk only when asked", async () => {
    const secret = makeCanary("demo-stream");
    canaries.push(secret);
    const stream = await client.chat.completions.create({
      model: "lethe-demo",
      stream: true,
      stream_options: { include_usage: true },
      messages: [
        { role: "system", content: `sys ${secret}` },
        { role: "user", content: `say ${secret}` },
      ],
    });
    let text = "";
    let usageChunks = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usageChunks++;
    }
    expect(text).toContain(secret);
    expect(usageChunks).toBe(1);

    const plain = await client.chat.completions.create({
      model: "lethe-demo",
      stream: true,
      messages: [{ role: "user", content: "hi" }],
    });
    let plainUsage = 0;
    for await (const chunk of plain) if (chunk.usage) plainUsage++;
    expect(plainUsage).toBe(0);
  });

  it("cuts off at max_tokens and at stop sequences", async () => {
    const cut = await client.chat.completions.create({
      model: "lethe-demo",
      max_tokens: 3,
      messages: [{ role: "user", content: "a long question that makes a long answer" }],
    });
    expect(cut.choices[0]?.finish_reason).toBe("length");
    expect(cut.usage?.completion_tokens).toBe(3);
    const stopped = await client.chat.completions.create({
      model: "lethe-demo",
      stop: ["supplier"],
      messages: [{ role: "user", content: "hi" }],
    });
    expect(stopped.choices[0]?.message.content).toBe("Lethe demo model, no ");
    // named as vLLM names it, so an Anthropic client is told which sequence stopped the answer
    expect(stopped.choices[0]).toMatchObject({ finish_reason: "stop", stop_reason: "supplier" });
    const anthropic = new Anthropic({ apiKey: gateway.key, baseURL: gateway.url, maxRetries: 0 });
    const request = {
      model: "lethe-demo",
      max_tokens: 100,
      stop_sequences: ["never-said", "supplier"],
      messages: [{ role: "user" as const, content: "hi" }],
    };
    const message = await anthropic.messages.create(request);
    const streamed = await anthropic.messages.stream(request).finalMessage();
    for (const answer of [message, streamed]) {
      expect(answer).toMatchObject({ stop_reason: "stop_sequence", stop_sequence: "supplier" });
      expect(answer.content).toMatchObject([{ type: "text", text: "Lethe demo model, no " }]);
    }
    // the token limit before the sequence: max_tokens, no sequence
    const short = await anthropic.messages.create({ ...request, max_tokens: 2 });
    expect(short).toMatchObject({ stop_reason: "max_tokens", stop_sequence: null });
  });

  it("meters one record per request with token counts and TTFT for streams", async () => {
    const records = await gateway.records();
    expect(records.length).toBeGreaterThanOrEqual(5);
    const streamed = records.filter((record) => record.streamed);
    // the OpenAI client's two streams and the Anthropic client's one
    expect(streamed.length).toBe(3);
    for (const record of streamed) {
      expect(record.ttft_ms).toBeGreaterThan(0);
      expect(record.output_tokens).toBeGreaterThan(0);
      expect(record.tokens_estimated).toBe(false);
    }
    expect(records.every((record) => record.model === "lethe-demo" && record.supplier === "demo")).toBe(true);
  });
});
