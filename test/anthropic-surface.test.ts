import Anthropic, { APIError } from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { estimateInputTokens } from "../src/metering/count-tokens.js";
import { IMAGE_INPUT_TOKENS_BOUND, PDF_TOKENS_PER_PAGE } from "../src/metering/media-tokens.js";
import { anthropicBehaviour, FAKE_COUNT_TOKENS } from "./support/fake-anthropic-supplier.js";
import { behaviour } from "./support/fake-openai-supplier.js";
import {
  ANTHROPIC_SUPPLIER_KEY,
  closeTranslationRig,
  MODELS,
  parseSse,
  postRaw,
  type SseEvent,
  startTranslationRig,
  type TranslationRig,
} from "./support/translation-rig.js";

/**
 * The Anthropic surface as a wire protocol: the exact SSE event sequence, headers
 * passed on, count_tokens, the models list in both shapes, supplier errors before
 * and after the 200, and what each of them leaves in the metadata.
 */

let rig: TranslationRig;

beforeAll(async () => {
  rig = await startTranslationRig();
});

afterAll(async () => {
  expect(await closeTranslationRig(rig)).toEqual([]);
});

afterEach(() => {
  // a supplier's retry-after rests its route for the requests that follow (router.ts)
  rig.gateway.passRouteRests();
  expect(rig.openAIFake.clearQueue()).toBe(0);
  expect(rig.anthropicFake.clearQueue()).toBe(0);
});

const ANTHROPIC_HEADERS = { "anthropic-version": "2023-06-01" };

function eventNames(events: SseEvent[]): (string | null)[] {
  return events.map((event) => event.event);
}

function dataOf(event: SseEvent | undefined): Record<string, unknown> {
  if (event === undefined || event.data === "[DONE]") throw new Error("expected a JSON event");
  return event.data;
}

/** Catches what an SDK call throws, so a test can look at it. */
async function thrownBy(promise: Promise<unknown>): Promise<APIError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof APIError) return error;
    throw error;
  }
  throw new Error("expected the call to fail");
}

describe("the SSE event sequence", () => {
  it("relays a native stream event for event, with `event:` naming each data's type", async () => {
    const response = await postRaw(
      rig,
      "/v1/messages",
      { model: MODELS.claude, max_tokens: 50, stream: true, messages: [{ role: "user", content: "hi there" }] },
      ANTHROPIC_HEADERS,
    );
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(response.headers.get("request-id")).toMatch(/^req_/);
    const events = parseSse(response.text);
    expect(eventNames(events)).toEqual([
      "message_start",
      "content_block_start",
      "ping",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    for (const event of events) expect(dataOf(event).type).toBe(event.event);
    expect(dataOf(events[0])).toMatchObject({ message: { model: MODELS.claude, usage: { input_tokens: 500 } } });
    expect(dataOf(events[7])).toMatchObject({
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { output_tokens: 250, cache_read_input_tokens: 400 },
    });
  });

  it("relays each event's data as the supplier wrote it, but the two it bills by, as it read them", async () => {
    const supplierEvents = [
      [
        "message_start",
        '{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"up-model","content":[],"stop_reason":null,"usage":{"input_tokens":7,"output_tokens":1}}}',
      ],
      ["content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'],
      [
        "content_block_delta",
        '{"type":"content_block_delta", "index":0,"delta":{"type":"text_delta","text":"Hi\\u00e9"},"score":1.0,"big":12345678901234567891}',
      ],
      // a type written twice: Lethe reads the last; a parser keeping the first would read a usage
      [
        "content_block_delta",
        '{"type":"message_delta","usage":{"output_tokens":999},"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}',
      ],
      ["content_block_stop", '{"type":"content_block_stop","index":0}'],
      // a count written twice: the client reads the one Lethe billed, whatever its parser keeps
      [
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":1},"usage":{"output_tokens":2}}',
      ],
      ["message_stop", '{"type":"message_stop"}'],
    ] as const;
    const stream = (events: (readonly [string, string])[]) =>
      events.map(([name, data]) => `event: ${name}\ndata: ${data}\n\n`).join("");
    rig.anthropicFake.enqueue(anthropicBehaviour.rawStream(stream([...supplierEvents])));
    const response = await postRaw(
      rig,
      "/v1/messages",
      { model: MODELS.claude, max_tokens: 50, stream: true, messages: [{ role: "user", content: "hi there" }] },
      ANTHROPIC_HEADERS,
    );
    expect(response.status).toBe(200);
    const billedBy = new Set(["message_start", "message_delta"]);
    const expected = supplierEvents.map(([name, data]): [string, string] => {
      if (!billedBy.has(name) && data.startsWith(`{"type":"${name}"`)) return [name, data];
      const parsed = JSON.parse(data.replace('"up-model"', JSON.stringify(MODELS.claude)));
      return [name, JSON.stringify(parsed)];
    });
    expect(response.text).toBe(stream(expected));
    expect(response.text).toContain('"usage":{"output_tokens":2}}');
  });

  it("builds Anthropic's sequence from an OpenAI supplier's chunks", async () => {
    const response = await postRaw(
      rig,
      "/v1/messages",
      { model: MODELS.gpt, max_tokens: 50, stream: true, messages: [{ role: "user", content: "hi there" }] },
      ANTHROPIC_HEADERS,
    );
    const events = parseSse(response.text);
    expect(eventNames(events)).toEqual([
      "message_start",
      "ping",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    for (const event of events) expect(dataOf(event).type).toBe(event.event);
    expect(dataOf(events[2])).toEqual({
      type: "content_block_start",
      index: 0,
      content_block: { type: "text", text: "" },
    });
    expect(events.slice(3, 6).map((event) => dataOf(event).delta)).toEqual([
      { type: "text_delta", text: "Echo: " },
      { type: "text_delta", text: "hi " },
      { type: "text_delta", text: "there" },
    ]);
    expect(dataOf(events[7])).toEqual({
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: {
        input_tokens: 600,
        output_tokens: 250,
        cache_read_input_tokens: 400,
        cache_creation_input_tokens: 0,
        output_tokens_details: { thinking_tokens: 50 },
      },
    });
  });

  it("gives an OpenAI client plain chunks from an Anthropic supplier, usage only when asked for", async () => {
    const body = { model: MODELS.claude, stream: true, messages: [{ role: "user", content: "hi there" }] };
    const plain = parseSse((await postRaw(rig, "/v1/chat/completions", body)).text);
    expect(plain.every((event) => event.event === null)).toBe(true);
    expect(plain.at(-1)?.data).toBe("[DONE]");
    const chunks = plain.slice(0, -1).map(dataOf);
    expect(chunks.map((chunk) => (chunk.choices as { delta: unknown }[])[0]?.delta)).toEqual([
      { role: "assistant", content: "" },
      { content: "Echo: " },
      { content: "hi " },
      { content: "there" },
      {},
    ]);
    expect(chunks.every((chunk) => chunk.object === "chat.completion.chunk" && !("usage" in chunk))).toBe(true);
    expect(chunks.at(-1)).toMatchObject({ choices: [{ finish_reason: "stop" }] });

    const withUsage = parseSse(
      (await postRaw(rig, "/v1/chat/completions", { ...body, stream_options: { include_usage: true } })).text,
    );
    const usageChunks = withUsage.slice(0, -1).map(dataOf);
    expect(usageChunks.slice(0, -1).every((chunk) => chunk.usage === null)).toBe(true);
    expect(usageChunks.at(-1)).toMatchObject({
      choices: [],
      usage: { prompt_tokens: 1000, completion_tokens: 250, prompt_tokens_details: { cached_tokens: 400 } },
    });
  });
});

describe("headers", () => {
  it("passes anthropic-version and anthropic-beta on, with the operator's key and nothing else of the client's", async () => {
    const header = rig.canary("header");
    const response = await postRaw(
      rig,
      "/v1/messages",
      { model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content: "hi" }] },
      { "anthropic-version": "2023-01-01", "anthropic-beta": "beta-one,beta-two", "x-canary-trace": header },
    );
    expect(response.status).toBe(200);
    const upstream = rig.anthropicFake.lastRequest();
    expect(upstream.headers["anthropic-version"]).toBe("2023-01-01");
    expect(upstream.headers["anthropic-beta"]).toBe("beta-one,beta-two");
    expect(upstream.headers["x-api-key"]).toBe(ANTHROPIC_SUPPLIER_KEY);
    // answers are read as they come: a supplier must not compress them
    expect(upstream.headers["accept-encoding"]).toBe("identity");
    expect(Object.keys(upstream.headers).sort()).toEqual([
      "accept",
      "accept-encoding",
      "anthropic-beta",
      "anthropic-version",
      "connection",
      "content-length",
      "content-type",
      "host",
      "x-api-key",
    ]);
  });

  it("keeps no anthropic-version value past its request unless it is a version date", async () => {
    const version = rig.canary("version");
    const body = { model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content: "hi" }] };
    expect((await postRaw(rig, "/v1/messages", body, ANTHROPIC_HEADERS)).status).toBe(200);
    const response = await postRaw(
      rig,
      "/v1/messages",
      { model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content: "hi" }] },
      { "anthropic-version": version },
    );
    expect(response.status).toBe(200);
    // passed on as sent (the supplier judges it), but not cached with the built header sets
    expect(rig.anthropicFake.lastRequest().headers["anthropic-version"]).toBe(version);
    const supplier = rig.gateway.running.gateway.suppliers.get("fake-anthropic" as never);
    const built = (supplier as unknown as { builtHeaders: Map<string, unknown> }).builtHeaders;
    expect([...built.keys()].some((key) => key.includes(version))).toBe(false);
    expect([...built.keys()].some((key) => key.endsWith("2023-06-01"))).toBe(true);
  });

  it("answers with Lethe's headers: the same request id twice, the supplier, and ZDR enforced", async () => {
    const { response } = await rig.anthropic.messages
      .create({ model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    const requestId = response.headers.get("request-id");
    expect(requestId).toMatch(/^req_/);
    expect(response.headers.get("x-request-id")).toBe(requestId);
    expect(response.headers.get("x-lethe-supplier")).toBe("fake-anthropic");
    expect(response.headers.get("x-lethe-zdr")).toBe("enforced");
  });

  it("accepts Authorization: Bearer as well as x-api-key", async () => {
    const bearer = new Anthropic({ apiKey: null, authToken: rig.gateway.key, baseURL: rig.gateway.url, maxRetries: 0 });
    const message = await bearer.messages.create({
      model: MODELS.claude,
      max_tokens: 50,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(message.content).toMatchObject([{ type: "text", text: "Echo: hi" }]);
    expect(rig.anthropicFake.lastRequest().headers.authorization).toBeUndefined();
  });

  it("finds the Messages API under a base URL configured with /v1", async () => {
    await rig.anthropic.messages.create({
      model: MODELS.claudeV1,
      max_tokens: 50,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(rig.anthropicFake.lastRequest().path).toBe("/v1/messages");
    await rig.anthropic.messages.countTokens({ model: MODELS.claudeV1, messages: [{ role: "user", content: "hi" }] });
    expect(rig.anthropicFake.lastRequest().path).toBe("/v1/messages/count_tokens");
  });
});

describe("count_tokens", () => {
  it("asks an Anthropic supplier's own count_tokens", async () => {
    const secret = rig.canary("count");
    const params: Anthropic.MessageCountTokensParams = {
      model: MODELS.claude,
      system: "Be brief.",
      messages: [{ role: "user", content: `count ${secret}` }],
      tools: [{ name: "lookup", input_schema: { type: "object" } }],
    };
    const { data, response } = await rig.anthropic.messages.countTokens(params).withResponse();
    expect(data).toEqual({ input_tokens: FAKE_COUNT_TOKENS });
    const upstream = rig.anthropicFake.lastRequest();
    expect(upstream.path).toBe("/v1/messages/count_tokens");
    expect(upstream.headers["x-api-key"]).toBe(ANTHROPIC_SUPPLIER_KEY);
    expect(upstream.body).toEqual({ ...params, model: "upstream-claude" });
    expect(await rig.recordOf(response.headers.get("request-id"))).toMatchObject({
      endpoint: "/v1/messages/count_tokens",
      client_format: "anthropic",
      model: MODELS.claude,
      supplier: "fake-anthropic",
      status: 200,
      tokens_estimated: false,
      // the supplier was asked once: a record that names a supplier says it was reached
      attempts: 1,
    });
  });

  it.each([MODELS.gpt, MODELS.demo])("estimates locally for %s, whose supplier cannot count", async (model) => {
    const before = rig.openAIFake.requests.length;
    const params: Anthropic.MessageCountTokensParams = {
      model,
      system: "Be brief.",
      messages: [{ role: "user", content: "How many tokens is this sentence?" }],
    };
    const { data, response } = await rig.anthropic.messages.countTokens(params).withResponse();
    expect(data.input_tokens).toBe(estimateInputTokens(params as unknown as Record<string, unknown>));
    expect(data.input_tokens).toBeGreaterThan(5);
    expect(rig.openAIFake.requests.length).toBe(before);
    expect(await rig.recordOf(response.headers.get("request-id"))).toMatchObject({
      endpoint: "/v1/messages/count_tokens",
      status: 200,
      tokens_estimated: true,
      attempts: 0,
    });
    // an image is no text to the tokenizer: it is counted at the most a supplier counts one, not 0
    const image = { type: "image" as const, source: { type: "url" as const, url: "https://example.test/cat.png" } };
    const withImage = await rig.anthropic.messages.countTokens({
      ...params,
      messages: [{ role: "user", content: [image, { type: "text", text: "How many tokens is this sentence?" }] }],
    });
    expect(withImage.input_tokens).toBe(data.input_tokens + IMAGE_INPUT_TOKENS_BOUND);
  });

  it("counts a document's text, its content blocks, and an inline PDF by its pages", async () => {
    const text = "The quick brown fox jumps over the lazy dog. ".repeat(400);
    const asText = await rig.anthropic.messages.countTokens({
      model: MODELS.gpt,
      messages: [{ role: "user", content: [{ type: "text", text }] }],
    });
    expect(asText.input_tokens).toBeGreaterThan(3_000);
    const asDocument = await rig.anthropic.messages.countTokens({
      model: MODELS.gpt,
      messages: [
        {
          role: "user",
          content: [{ type: "document", source: { type: "text", media_type: "text/plain", data: text } }],
        },
      ],
    });
    expect(asDocument.input_tokens).toBe(asText.input_tokens);
    const asContent = await rig.anthropic.messages.countTokens({
      model: MODELS.gpt,
      messages: [
        {
          role: "user",
          content: [{ type: "document", source: { type: "content", content: [{ type: "text", text }] } }],
        },
      ],
    });
    expect(asContent.input_tokens).toBe(asText.input_tokens);
    // three page objects (and the page tree, which is no page): three pages' worth
    const pdf = Buffer.from(
      "%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R 3 0 R 4 0 R] /Count 3 >> endobj\n" +
        "2 0 obj << /Type /Page >> endobj 3 0 obj << /Type/Page >> endobj 4 0 obj <</Type /Page/Parent 1 0 R>> endobj\n%%EOF",
    ).toString("base64");
    const empty = await rig.anthropic.messages.countTokens({
      model: MODELS.gpt,
      messages: [{ role: "user", content: [{ type: "text", text: "Summarise." }] }],
    });
    const asPdf = await rig.anthropic.messages.countTokens({
      model: MODELS.gpt,
      messages: [
        {
          role: "user",
          content: [
            { type: "document", source: { type: "base64", media_type: "application/pdf", data: pdf } },
            { type: "text", text: "Summarise." },
          ],
        },
      ],
    });
    expect(asPdf.input_tokens).toBe(empty.input_tokens + 3 * PDF_TOKENS_PER_PAGE);
  });

  it.each([404, 405])("counts locally when the Anthropic supplier has no count_tokens (%i)", async (status) => {
    const secret = rig.canary("count-missing");
    rig.anthropicFake.enqueue(anthropicBehaviour.status(status));
    const params = { model: MODELS.claude, messages: [{ role: "user" as const, content: `count ${secret}` }] };
    const { data, response } = await rig.anthropic.messages.countTokens(params).withResponse();
    expect(rig.anthropicFake.lastRequest().path).toBe("/v1/messages/count_tokens");
    expect(data.input_tokens).toBe(estimateInputTokens(params as unknown as Record<string, unknown>));
    expect(await rig.recordOf(response.headers.get("request-id"))).toMatchObject({
      endpoint: "/v1/messages/count_tokens",
      status: 200,
      tokens_estimated: true,
    });
    // the operator is told: the 404 could also be a model name the supplier does not know
    const events = rig.gateway
      .logText()
      .split("\n")
      .filter((line) => line.includes("upstream_error") && line.includes(`"status":${status}`));
    expect(events.length).toBeGreaterThan(0);
  });

  it("returns the supplier's rejection in Anthropic's shape", async () => {
    const secret = rig.canary("count-rejected");
    rig.anthropicFake.enqueue(anthropicBehaviour.status(400));
    const error = await thrownBy(
      rig.anthropic.messages.countTokens({ model: MODELS.claude, messages: [{ role: "user", content: secret }] }),
    );
    expect(error.status).toBe(400);
    expect(error.type).toBe("invalid_request_error");
    expect(error.apiMessage).toContain(secret);
    expect(error.requestID).toMatch(/^req_/);
  });

  it("refuses an unknown model with 404 not_found_error", async () => {
    const error = await thrownBy(
      rig.anthropic.messages.countTokens({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
    );
    expect(error.status).toBe(404);
    expect(error.type).toBe("not_found_error");
  });
});

describe("native pass-through", () => {
  it("forwards the client's own bytes to an Anthropic supplier but for the model", async () => {
    const secret = rig.canary("fidelity");
    const sent = (stream: boolean) =>
      `{ "max_tokens": 64, "temperature": 1.0, "metadata": {"user_id": "u-1", "n": 9007199254740993}, "top_k": 40,\n` +
      `  "messages": [{"role": "user", "content": "${secret} é"}], "model": "${MODELS.claude}"${stream ? ', "stream": true' : ""} }`;
    for (const stream of [false, true]) {
      const response = await postRaw(rig, "/v1/messages", sent(stream), ANTHROPIC_HEADERS);
      expect(response.status).toBe(200);
      const upstream = rig.anthropicFake.requests.at(-1);
      expect(upstream?.rawBody).toBe(sent(stream).replace(`"${MODELS.claude}"`, '"upstream-claude"'));
    }
  });
});

describe("GET /v1/models", () => {
  it("answers in Anthropic's shape for the Anthropic SDK", async () => {
    const models: Anthropic.ModelInfo[] = [];
    for await (const model of rig.anthropic.models.list()) models.push(model);
    expect(models.map((model) => model.id)).toEqual(Object.values(MODELS));
    for (const model of models) {
      expect(model.type).toBe("model");
      expect(new Date(model.created_at).toISOString()).toBe(model.created_at);
    }
    expect(models.find((model) => model.id === MODELS.demo)?.display_name).toBe("The demo model.");
    expect(models.find((model) => model.id === MODELS.gpt)?.display_name).toBe(MODELS.gpt);

    const raw = await fetch(`${rig.gateway.baseURL}/models`, {
      headers: { "x-api-key": rig.gateway.key, ...ANTHROPIC_HEADERS },
    });
    expect(raw.headers.get("request-id")).toMatch(/^req_/);
    expect(await raw.json()).toMatchObject({ has_more: false, first_id: MODELS.gpt, last_id: MODELS.mixed });
  });

  it("pages the list as Anthropic's API does: limit, after_id, before_id", async () => {
    const ids = Object.values(MODELS);
    // the SDK's auto-pagination follows last_id while has_more: every model, one page at a time
    const paged: string[] = [];
    for await (const model of rig.anthropic.models.list({ limit: 1 })) paged.push(model.id);
    expect(paged).toEqual(ids);
    const first = await rig.anthropic.models.list({ limit: 2 });
    expect(first.data.map((model) => model.id)).toEqual(ids.slice(0, 2));
    expect(first.has_more).toBe(ids.length > 2);
    const after = await rig.anthropic.models.list({ limit: 1, after_id: ids[0] as string });
    expect(after.data.map((model) => model.id)).toEqual([ids[1]]);
    const before = await rig.anthropic.models.list({ limit: 5, before_id: ids.at(-1) as string });
    expect(before.data.map((model) => model.id)).toEqual(ids.slice(0, -1).slice(-5));
    expect(before.has_more).toBe(ids.length - 1 > 5);

    // out-of-range or unknown paging is the caller's mistake, in Anthropic's shape, naming the parameter
    const canary = rig.canary("page-id");
    for (const query of [
      "limit=0",
      "limit=1001",
      "limit=two",
      "limit=1&limit=2",
      `after_id=${canary}`,
      `before_id=${canary}`,
      `after_id=${ids[0]}&before_id=${ids[1]}`,
    ]) {
      const response = await fetch(`${rig.gateway.baseURL}/models?${query}`, {
        headers: { "x-api-key": rig.gateway.key, ...ANTHROPIC_HEADERS },
      });
      expect(response.status).toBe(400);
      const body = await response.text();
      expect(JSON.parse(body)).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
      expect(body).not.toContain(canary);
    }
  });

  it("answers in OpenAI's shape for the openai SDK", async () => {
    const page = await rig.openai.models.list();
    expect(page.data.map((model) => model.id)).toEqual(Object.values(MODELS));
    expect(page.data[0]).toMatchObject({ object: "model", owned_by: "lethe" });
  });

  it("retrieves one model for each SDK, ids with a slash included", async () => {
    const claude = await rig.anthropic.models.retrieve(MODELS.demo);
    expect(claude).toMatchObject({ type: "model", id: MODELS.demo, display_name: "The demo model.", zdr: true });
    expect(new Date(claude.created_at).toISOString()).toBe(claude.created_at);
    const listed = (await rig.openai.models.list()).data.find((model) => model.id === MODELS.gpt);
    const gpt = await rig.openai.models.retrieve(MODELS.gpt);
    expect(gpt).toEqual(listed);
    expect(gpt).toMatchObject({ id: MODELS.gpt, object: "model", owned_by: "lethe", zdr: true });

    // the SDKs percent-encode the slash; other clients send it as it is
    expect((await rig.openai.models.retrieve(MODELS.slashed)).id).toBe(MODELS.slashed);
    expect((await rig.anthropic.models.retrieve(MODELS.slashed)).id).toBe(MODELS.slashed);
    const raw = await fetch(`${rig.gateway.baseURL}/models/${MODELS.slashed}/`, {
      headers: { authorization: `Bearer ${rig.gateway.key}` },
    });
    expect(raw.status).toBe(200);
    expect(raw.headers.get("x-request-id")).toMatch(/^req_/);
    expect(await raw.json()).toMatchObject({ id: MODELS.slashed, object: "model" });
  });

  it("refuses an unknown model with 404 in the caller's shape, and keeps nothing of its name", async () => {
    const name = rig.canary("retrieve-model");
    const anthropicError = await thrownBy(rig.anthropic.models.retrieve(name));
    expect(anthropicError.status).toBe(404);
    expect(anthropicError.type).toBe("not_found_error");
    expect(anthropicError.message).not.toContain(name);

    const openAIError = await rig.openai.models.retrieve(`org/${name}`).catch((error: unknown) => error);
    expect(openAIError).toBeInstanceOf(OpenAI.NotFoundError);
    const notFound = openAIError as InstanceType<typeof OpenAI.NotFoundError>;
    expect(notFound.error).toMatchObject({ type: "not_found_error", param: "model", code: "LETHE_UNKNOWN_MODEL" });
    expect(notFound.message).not.toContain(name);

    // a path the router cannot decode is refused in the caller's format, without quoting it
    for (const headers of [{ authorization: `Bearer ${rig.gateway.key}` }, ANTHROPIC_HEADERS]) {
      const undecodable = await fetch(`${rig.gateway.baseURL}/models/${name}%E0%A4%A`, { headers });
      expect(undecodable.status).toBe(400);
      expect(undecodable.headers.get("x-request-id")).toMatch(/^req_/);
      const text = await undecodable.text();
      expect(text).not.toContain(name);
      expect(JSON.parse(text)).toMatchObject(
        "anthropic-version" in headers
          ? { type: "error", error: { type: "invalid_request_error", code: "LETHE_INVALID_REQUEST" } }
          : { error: { type: "invalid_request_error", code: "LETHE_INVALID_REQUEST" } },
      );
    }

    // the bare collection path with a slash is still the list, and a path past a model is not a model
    expect((await fetch(`${rig.gateway.baseURL}/models/`, { headers: ANTHROPIC_HEADERS })).status).toBe(401);
    const nested = await fetch(`${rig.gateway.baseURL}/models/${MODELS.gpt}/versions`, {
      headers: { authorization: `Bearer ${rig.gateway.key}` },
    });
    expect(nested.status).toBe(404);
    expect(await nested.json()).toMatchObject({ error: { code: "LETHE_UNKNOWN_MODEL" } });
  });

  it("refuses a missing or revoked key on a single model too", async () => {
    const missing = await fetch(`${rig.gateway.baseURL}/models/${MODELS.gpt}`, { headers: ANTHROPIC_HEADERS });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ type: "error", error: { type: "authentication_error" } });
    const wrong = await fetch(`${rig.gateway.baseURL}/models/${MODELS.gpt}`, {
      headers: { authorization: "Bearer sk-lethe-not-a-real-key" },
    });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ error: { type: "authentication_error" } });
  });

  it("refuses a missing key in the caller's shape", async () => {
    const anthropicShaped = await fetch(`${rig.gateway.baseURL}/models`, { headers: ANTHROPIC_HEADERS });
    expect(anthropicShaped.status).toBe(401);
    expect(await anthropicShaped.json()).toMatchObject({ type: "error", error: { type: "authentication_error" } });
    const openAIShaped = await fetch(`${rig.gateway.baseURL}/models`);
    expect(openAIShaped.status).toBe(401);
    expect(await openAIShaped.json()).toMatchObject({ error: { type: "authentication_error" } });
  });
});

describe("supplier errors before the stream starts", () => {
  const ask = (model: string, content: string, stream: boolean) => {
    const params = { model, max_tokens: 50, messages: [{ role: "user" as const, content }] };
    return stream ? rig.anthropic.messages.stream(params).finalMessage() : rig.anthropic.messages.create(params);
  };

  it.each([false, true])(
    "returns an Anthropic 400 with the supplier's message, which echoes the prompt (stream: %s)",
    async (stream) => {
      const secret = rig.canary("rejected");
      rig.anthropicFake.enqueue(anthropicBehaviour.status(400));
      const error = await thrownBy(ask(MODELS.claude, `bad ${secret}`, stream));
      expect(error.status).toBe(400);
      expect(error.type).toBe("invalid_request_error");
      // the supplier's message is the caller's own data: it goes back to them, and nowhere else
      expect(error.apiMessage).toContain(`Supplier said: Fake Anthropic could not handle: bad ${secret}`);
      expect(await rig.recordOf(error.requestID ?? null)).toMatchObject({
        client_format: "anthropic",
        status: 400,
        error_code: "LETHE_UPSTREAM_REJECTED",
        supplier: "fake-anthropic",
      });
    },
  );

  it.each([false, true])(
    "answers 529 overloaded_error when the supplier is overloaded (stream: %s)",
    async (stream) => {
      const secret = rig.canary("overloaded");
      rig.anthropicFake.enqueue(anthropicBehaviour.overloaded());
      const error = await thrownBy(ask(MODELS.claude, secret, stream));
      expect(error.status).toBe(529);
      expect(error.type).toBe("overloaded_error");
      expect(error.apiMessage).not.toContain(secret);
      // the record holds the status the caller was answered with
      expect(await rig.recordOf(error.requestID ?? null)).toMatchObject({
        error_code: "LETHE_UPSTREAM_OVERLOADED",
        status: 529,
      });
    },
  );

  it("answers 429 rate_limit_error with the supplier's retry-after", async () => {
    rig.anthropicFake.enqueue(anthropicBehaviour.status(429, undefined, { "retry-after": "7" }));
    const error = await thrownBy(ask(MODELS.claude, "hi", false));
    expect(error.status).toBe(429);
    expect(error.type).toBe("rate_limit_error");
    expect(error.headers?.get("retry-after")).toBe("7");
  });

  it("answers 502 api_error, without the supplier's message, when the operator's key is refused", async () => {
    const secret = rig.canary("operator-refused");
    rig.anthropicFake.enqueue(anthropicBehaviour.status(401));
    const error = await thrownBy(ask(MODELS.claude, secret, false));
    expect(error.status).toBe(502);
    expect(error.type).toBe("api_error");
    expect(error.apiMessage).not.toContain(secret);
  });

  it("answers 413 request_too_large when the supplier finds the request too large", async () => {
    rig.anthropicFake.enqueue(anthropicBehaviour.status(413));
    const error = await thrownBy(ask(MODELS.claude, "hi", false));
    expect(error.status).toBe(413);
    expect(error.type).toBe("request_too_large");
  });

  it("renders an OpenAI supplier's rejection in Anthropic's shape", async () => {
    const secret = rig.canary("openai-rejected");
    rig.openAIFake.enqueue(behaviour.status(400));
    const response = await postRaw(
      rig,
      "/v1/messages",
      { model: MODELS.gpt, max_tokens: 50, messages: [{ role: "user", content: secret }] },
      ANTHROPIC_HEADERS,
    );
    expect(response.status).toBe(400);
    expect(response.headers.get("request-id")).toMatch(/^req_/);
    const body = JSON.parse(response.text);
    expect(body).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
    expect(body.error.message).toContain(secret);
  });

  it("renders an Anthropic supplier's overload in OpenAI's shape for an OpenAI client", async () => {
    const secret = rig.canary("openai-client-overloaded");
    rig.anthropicFake.enqueue(anthropicBehaviour.overloaded());
    const response = await postRaw(rig, "/v1/chat/completions", {
      model: MODELS.claude,
      messages: [{ role: "user", content: secret }],
    });
    expect(response.status).toBe(503);
    expect(JSON.parse(response.text)).toMatchObject({
      error: { type: "server_error", code: "LETHE_UPSTREAM_OVERLOADED" },
    });
    expect(response.text).not.toContain(secret);
    expect(await rig.recordOf(response.headers.get("x-request-id"))).toMatchObject({ status: 503 });
  });

  it("refuses a model served only by a supplier that retains data, with 403 permission_error", async () => {
    const before = rig.anthropicFake.requests.length;
    const error = await thrownBy(ask(MODELS.retaining, "hi", false));
    expect(error.status).toBe(403);
    expect(error.type).toBe("permission_error");
    expect(rig.anthropicFake.requests.length).toBe(before);
  });
});

describe("supplier failures after the stream started", () => {
  const streamBody = (model: string, content: string) => ({
    model,
    max_tokens: 50,
    stream: true,
    messages: [{ role: "user", content }],
  });

  it.each([
    ["api_error", "LETHE_UPSTREAM_ERROR"],
    ["overloaded_error", "LETHE_UPSTREAM_OVERLOADED"],
  ])(
    "turns an Anthropic `error` event (%s) into an Anthropic error event, without the supplier's message",
    async (type, code) => {
      const secret = rig.canary(`midstream${type}`);
      rig.anthropicFake.enqueue(anthropicBehaviour.errorEvent(4, type));
      const response = await postRaw(rig, "/v1/messages", streamBody(MODELS.claude, secret), ANTHROPIC_HEADERS);
      expect(response.status).toBe(200);
      const events = parseSse(response.text);
      expect(eventNames(events)).toEqual([
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "error",
      ]);
      expect(dataOf(events.at(-1))).toMatchObject({ type: "error", error: { type, code } });
      expect(JSON.stringify(events.at(-1))).not.toContain(secret);
      expect(await rig.recordOf(response.headers.get("request-id"))).toMatchObject({
        status: 200,
        error_code: code,
        streamed: true,
        client_format: "anthropic",
      });
    },
  );

  it("makes the Anthropic SDK's stream helper throw on the error event", async () => {
    const secret = rig.canary("midstream-sdk");
    rig.anthropicFake.enqueue(anthropicBehaviour.errorEvent());
    const text: string[] = [];
    const stream = rig.anthropic.messages.stream({
      model: MODELS.claude,
      max_tokens: 50,
      messages: [{ role: "user", content: `hello ${secret}` }],
    });
    stream.on("text", (delta) => text.push(delta));
    const error = await thrownBy(stream.finalMessage());
    expect(error.type).toBe("api_error");
    expect(text).toEqual(["Echo: "]);
  });

  it("turns an OpenAI supplier's error chunk into an Anthropic error event the SDK throws on", async () => {
    const secret = rig.canary("midstream-openai");
    rig.openAIFake.enqueue(behaviour.streamErrorChunk());
    const error = await thrownBy(
      rig.anthropic.messages
        .stream({ model: MODELS.gpt, max_tokens: 50, messages: [{ role: "user", content: secret }] })
        .finalMessage(),
    );
    expect(error.type).toBe("api_error");
    expect(error.message).not.toContain(secret);
  });

  it("turns an Anthropic `error` event into an OpenAI error chunk the openai SDK throws on", async () => {
    const secret = rig.canary("midstream-openai-client");
    rig.anthropicFake.enqueue(anthropicBehaviour.errorEvent());
    const raw = await postRaw(rig, "/v1/chat/completions", {
      model: MODELS.claude,
      stream: true,
      messages: [{ role: "user", content: secret }],
    });
    const events = parseSse(raw.text);
    expect(events.at(-1)?.data).toBe("[DONE]");
    expect(dataOf(events.at(-2))).toMatchObject({
      error: { type: "server_error", code: "LETHE_UPSTREAM_ERROR" },
    });
    expect(raw.text).not.toContain(secret);

    rig.anthropicFake.enqueue(anthropicBehaviour.errorEvent());
    const stream = await rig.openai.chat.completions.create({
      model: MODELS.claude,
      stream: true,
      messages: [{ role: "user", content: secret }],
    });
    const received: string[] = [];
    await expect(
      (async () => {
        for await (const chunk of stream) received.push(chunk.choices[0]?.delta.content ?? "");
      })(),
    ).rejects.toMatchObject({ code: "LETHE_UPSTREAM_ERROR" });
    expect(received.join("")).toBe("Echo: ");
  });

  it("ends a stream whose supplier connection broke with an error event, for both clients", async () => {
    const secret = rig.canary("reset");
    rig.anthropicFake.enqueue(anthropicBehaviour.resetMidStream());
    const anthropicError = await thrownBy(
      rig.anthropic.messages
        .stream({ model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content: secret }] })
        .finalMessage(),
    );
    expect(anthropicError.type).toBe("api_error");

    rig.anthropicFake.enqueue(anthropicBehaviour.resetMidStream());
    const raw = await postRaw(rig, "/v1/chat/completions", {
      model: MODELS.claude,
      stream: true,
      messages: [{ role: "user", content: secret }],
    });
    const events = parseSse(raw.text);
    expect(dataOf(events.at(-2)).error).toMatchObject({ type: "server_error" });
    const record = await rig.recordOf(raw.headers.get("request-id"));
    expect(record.error_code).not.toBeNull();
    expect(record.client_format).toBe("openai");
  });
  it("records no throughput for a stream that broke before any token reached the client", async () => {
    const secret = rig.canary("reset-before-content");
    // message_start alone (its placeholder output count of 1), then the socket is destroyed
    rig.anthropicFake.enqueue(anthropicBehaviour.resetMidStream(1));
    const raw = await postRaw(rig, "/v1/messages", {
      model: MODELS.claude,
      max_tokens: 50,
      stream: true,
      messages: [{ role: "user", content: secret }],
    });
    expect(parseSse(raw.text).at(-1)?.event).toBe("error");
    const record = await rig.recordOf(raw.headers.get("request-id"));
    expect(record).toMatchObject({ streamed: true, ttft_ms: null, output_tokens_per_s: null });
    expect(record.error_code).not.toBeNull();
  });
});

describe("a supplier connection that breaks once the answer is whole", () => {
  it("ends the stream cleanly for both clients when only message_stop is missing", async () => {
    const secret = rig.canary("whole-then-reset");
    // every event but message_stop, then the socket is destroyed
    rig.anthropicFake.enqueue(anthropicBehaviour.resetMidStream(-1));
    const stream = rig.anthropic.messages.stream({
      model: MODELS.claude,
      max_tokens: 50,
      messages: [{ role: "user", content: secret }],
    });
    const message = await stream.finalMessage();
    expect(message.stop_reason).toBe("end_turn");
    expect(message.content[0]).toMatchObject({ type: "text" });
    const { response } = await stream.withResponse();
    const record = await rig.recordOf(response.headers.get("request-id"));
    expect(record).toMatchObject({ status: 200, error_code: null, tokens_estimated: false });

    rig.anthropicFake.enqueue(anthropicBehaviour.resetMidStream(-1));
    const raw = await postRaw(rig, "/v1/chat/completions", {
      model: MODELS.claude,
      stream: true,
      messages: [{ role: "user", content: secret }],
    });
    const events = parseSse(raw.text);
    expect(events.at(-1)?.data).toBe("[DONE]");
    expect(events.some((event) => event.data !== "[DONE]" && event.data.error !== undefined)).toBe(false);
    expect(
      events.some(
        (event) =>
          event.data !== "[DONE]" &&
          (event.data.choices as { finish_reason?: unknown }[])?.[0]?.finish_reason === "stop",
      ),
    ).toBe(true);
    const translated = await rig.recordOf(raw.headers.get("request-id"));
    expect(translated).toMatchObject({ status: 200, error_code: null, client_format: "openai" });
  });

  it("still fails a stream cut before its message_delta", async () => {
    // everything up to the last content_block_stop: the stop reason never came
    rig.anthropicFake.enqueue(anthropicBehaviour.resetMidStream(-2));
    const error = await thrownBy(
      rig.anthropic.messages
        .stream({ model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content: rig.canary("cut") }] })
        .finalMessage(),
    );
    expect(error.type).toBe("api_error");
  });
});

describe("structured output to an OpenAI-format supplier", () => {
  it("sends output_config.format (what messages.parse asks with) upstream as a strict json_schema response_format", async () => {
    const schema = {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    };
    const secret = rig.canary("structured-output");
    await rig.anthropic.messages.create({
      model: MODELS.gpt,
      max_tokens: 50,
      messages: [{ role: "user", content: secret }],
      output_config: { format: { type: "json_schema", schema } },
    });
    const upstream = rig.openAIFake.requests.at(-1)?.body as Record<string, unknown>;
    expect(upstream.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "output", schema, strict: true },
    });
    expect(upstream).not.toHaveProperty("output_config");
  });
});
