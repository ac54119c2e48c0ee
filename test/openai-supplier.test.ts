import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { estimateInputTokens } from "../src/metering/count-tokens.js";
import { makeCanary } from "./support/canary.js";
import { behaviour, type RecordedRequest } from "./support/fake-openai-supplier.js";
import {
  type ChatCanaries,
  canaryChat,
  closeRigAndFindCanaries,
  FAKE_SUPPLIER_KEY,
  type OpenAISupplierRig,
  postChat,
  recordOf,
  sseData,
  startOpenAISupplierRig,
} from "./support/openai-supplier-rig.js";

// the fake's default usage, as OpenAI writes it
const SUPPLIER_USAGE = {
  prompt_tokens: 1000,
  completion_tokens: 250,
  total_tokens: 1250,
  prompt_tokens_details: { cached_tokens: 400, audio_tokens: 0 },
  completion_tokens_details: {
    reasoning_tokens: 50,
    audio_tokens: 0,
    accepted_prediction_tokens: 0,
    rejected_prediction_tokens: 0,
  },
};

// (1000 - 400) × 0.10 + 400 × 0.05 + 250 × 0.20 micro-units
const SUPPLIER_USAGE_COST = 130;

const METERED_USAGE = {
  input_tokens: 1000,
  output_tokens: 250,
  cached_input_tokens: 400,
  reasoning_tokens: 50,
  cost_micros: SUPPLIER_USAGE_COST,
  tokens_estimated: false,
};

/** True when `actual` is within 1% of `expected`: rounding to the microsecond is the only difference allowed. */
function nearly(actual: number | null, expected: number): boolean {
  return actual !== null && Math.abs(actual / expected - 1) < 0.01;
}

describe("chat completions through an OpenAI-compatible supplier", () => {
  let rig: OpenAISupplierRig;

  beforeAll(async () => {
    rig = await startOpenAISupplierRig();
  });

  afterAll(async () => {
    expect(await closeRigAndFindCanaries(rig)).toEqual([]);
  });

  // a behaviour left in the queue means the gateway sent fewer requests than the test expected
  afterEach(() => {
    expect(rig.fake.clearQueue()).toBe(0);
  });

  function lastUpstream(): RecordedRequest {
    const upstream = rig.fake.requests.at(-1);
    if (upstream === undefined) throw new Error("the supplier received nothing");
    return upstream;
  }

  /** The supplier gets Lethe's own key and fixed headers: nothing the client sent in its headers. */
  function expectOperatorHeadersOnly(upstream: RecordedRequest, canary: ChatCanaries, accept: string): void {
    expect(upstream.method).toBe("POST");
    expect(upstream.path).toBe("/v1/chat/completions");
    expect(upstream.headers.authorization).toBe(`Bearer ${FAKE_SUPPLIER_KEY}`);
    expect(upstream.headers["content-type"]).toBe("application/json");
    expect(upstream.headers.accept).toBe(accept);
    // answers are read as they come: without the header a supplier may compress them (RFC 9110)
    expect(upstream.headers["accept-encoding"]).toBe("identity");
    expect(Object.keys(upstream.headers).sort()).toEqual([
      "accept",
      "accept-encoding",
      "authorization",
      "connection",
      "content-length",
      "content-type",
      "host",
    ]);
    const headerText = JSON.stringify(upstream.headers);
    expect(headerText).not.toContain(rig.gateway.key);
    expect(headerText).not.toContain(canary.header);
  }

  it("answers a non-streaming request, mapping the model both ways and metering the supplier's usage", async () => {
    const { canary, body, headers } = canaryChat(rig, "json");
    const { data, response } = await rig.client.chat.completions.create(body, { headers }).withResponse();

    expect(data.object).toBe("chat.completion");
    expect(data.model).toBe("fast-chat");
    expect(data.choices[0]?.message.content).toBe(`Echo: Now repeat ${canary.user} please`);
    expect(data.choices[0]?.finish_reason).toBe("stop");
    expect(data.usage).toEqual(SUPPLIER_USAGE);
    expect(response.headers.get("x-lethe-supplier")).toBe("fake-openai");
    expect(response.headers.get("x-lethe-zdr")).toBe("enforced");

    const upstream = lastUpstream();
    // every field goes through untouched except the model, renamed to the supplier's, and
    // `store: false`, which asks OpenAI-type suppliers not to keep the completion
    expect(upstream.body).toEqual({ ...body, model: "upstream-model-1", store: false });
    expectOperatorHeadersOnly(upstream, canary, "application/json");

    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({
      endpoint: "/v1/chat/completions",
      client_format: "openai",
      model: "fast-chat",
      supplier: "fake-openai",
      status: 200,
      error_code: null,
      streamed: false,
      ttft_ms: null,
      // the supplier said 400 prompt tokens came from its cache
      cache_hit: true,
      ...METERED_USAGE,
    });
    expect(record.latency_ms).toBeGreaterThan(0);
    expect(nearly(record.output_tokens_per_s, (250 * 1000) / record.latency_ms)).toBe(true);
  });

  it("forwards the client's own bytes but for the model, store and stream_options: big numbers and formatting intact", async () => {
    const secret = makeCanary("fidelity");
    rig.canaries.push(secret);
    // a seed beyond a double's precision, a float written as 1.0, an exponent, a key order
    // and spacing of the client's own: a parse and a serialisation would change all of them
    const sent = (stream: boolean) =>
      `{ "seed": 9007199254740993, "temperature": 1.0, "top_p": 5e-1,\n  "messages": [{"role": "user", "content": "${secret} é ✓"}],` +
      ` "model": "fast-chat"${stream ? ', "stream": true' : ""} }`;
    const post = (body: string) =>
      fetch(`${rig.gateway.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${rig.gateway.key}`, "content-type": "application/json" },
        body,
      });
    const json = await post(sent(false));
    expect(json.status).toBe(200);
    await json.text();
    expect(lastUpstream().rawBody).toBe(
      `{"store":false,${sent(false).slice(1).replace('"fast-chat"', '"upstream-model-1"')}`,
    );
    const stream = await post(sent(true));
    expect(stream.status).toBe(200);
    expect(await stream.text()).not.toContain('"usage"');
    expect(lastUpstream().rawBody).toBe(
      `{"stream_options":{"include_usage":true},"store":false,${sent(true).slice(1).replace('"fast-chat"', '"upstream-model-1"')}`,
    );

    // a second attempt, after the first route could not be reached, splices the text again
    // (the first attempt's edits to the parsed body do not leak into it)
    const fallbackText = sent(false).replace('"fast-chat"', '"fallback-chat"');
    const fallback = await post(fallbackText);
    expect(fallback.status).toBe(200);
    expect(fallback.headers.get("x-lethe-attempts")).toBe("2");
    await fallback.text();
    expect(lastUpstream().rawBody).toBe(
      `{"store":false,${fallbackText.slice(1).replace('"fallback-chat"', '"upstream-model-1"')}`,
    );

    // a supplier configured with send_store_false: false gets no store, spliced or serialised
    for (const text of [
      sent(false),
      `{"model":"fast-chat","messages":[{"role":"user","content":"\\u00e9 ${secret}"}]}`,
    ]) {
      const noStore = await post(text.replace('"fast-chat"', '"no-store-chat"'));
      expect(noStore.status).toBe(200);
      await noStore.text();
      const upstream = lastUpstream();
      expect(upstream.body).not.toHaveProperty("store");
      expect(upstream.body).toMatchObject({ model: "upstream-model-1" });
      if (text === sent(false)) expect(upstream.rawBody).toBe(text.replace('"fast-chat"', '"upstream-model-1"'));
    }

    // what the client set itself is left as it is: only the model changes
    const ownSettings = `{"model":"fast-chat","store":false,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"${secret}"}]}`;
    const own = await post(ownSettings);
    expect(own.status).toBe(200);
    await own.text();
    expect(lastUpstream().rawBody).toBe(ownSettings.replace('"fast-chat"', '"upstream-model-1"'));

    // fields Lethe sets that the client sent otherwise, or a text another parser could read
    // differently (a key twice, __proto__, an escape): the parse is serialised instead
    for (const body of [
      `{"model":"fast-chat","store":true,"store":false,"messages":[{"role":"user","content":"${secret}"}]}`,
      `{"model":"fast-chat","__proto__":{"store":true},"messages":[{"role":"user","content":"${secret}"}]}`,
      `{"model":"fast-chat","store":true,"messages":[{"role":"user","content":"${secret}"}]}`,
      `{"model":"fast-chat","stream":true,"stream_options":{},"messages":[{"role":"user","content":"${secret}"}]}`,
      `{"model":"fast-chat","messages":[{"role":"user","content":"\\u00e9 ${secret}"}]}`,
    ]) {
      const response = await post(body);
      expect(response.status).toBe(200);
      await response.text();
      const upstream = lastUpstream();
      expect(upstream.rawBody).toBe(JSON.stringify(upstream.body));
      expect(upstream.rawBody.split('"store"')).toHaveLength(2);
      expect(upstream.rawBody).not.toContain("__proto__");
      expect(upstream.body).toMatchObject({ model: "upstream-model-1", store: false });
    }
  });

  it("streams with include_usage: the client gets the supplier's usage chunk last", async () => {
    const { canary, body, headers } = canaryChat(rig, "streamusage");
    // a model generating: its events tens of milliseconds apart, so its throughput can be timed
    rig.fake.enqueue(behaviour.ok({ pace: 25 }));
    const { data: stream, response } = await rig.client.chat.completions
      .create({ ...body, stream: true, stream_options: { include_usage: true } }, { headers })
      .withResponse();
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("");
    expect(text).toBe(`Echo: Now repeat ${canary.user} please`);
    expect(chunks.every((chunk) => chunk.model === "fast-chat")).toBe(true);
    expect(chunks.filter((chunk) => chunk.usage).length).toBe(1);
    expect(chunks.at(-1)?.choices).toEqual([]);
    expect(chunks.at(-1)?.usage).toEqual(SUPPLIER_USAGE);
    // as OpenAI does: every other chunk says `usage: null` when usage was asked for
    expect(chunks.slice(0, -1).every((chunk) => chunk.usage === null)).toBe(true);

    const upstream = lastUpstream();
    expect(upstream.body).toEqual({
      ...body,
      model: "upstream-model-1",
      stream: true,
      stream_options: { include_usage: true },
      store: false,
    });
    expectOperatorHeadersOnly(upstream, canary, "text/event-stream");

    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({ model: "fast-chat", supplier: "fake-openai", status: 200, error_code: null });
    expect(record).toMatchObject({ streamed: true, ...METERED_USAGE });
    expect(record.ttft_ms).toBeGreaterThan(0);
    expect(record.ttft_ms).toBeLessThanOrEqual(record.latency_ms);
    // for streams, throughput counts from the first token on
    expect(nearly(record.output_tokens_per_s, (250 * 1000) / (record.latency_ms - (record.ttft_ms ?? 0)))).toBe(true);
  });

  it("times a stream that arrived in one piece over the whole request (no generation to time from its first token)", async () => {
    const { body, headers } = canaryChat(rig, "streamburst");
    // a long answer: relaying it takes a while, yet it is far faster than any model writes
    const usage = { prompt: 1000, completion: 100_000, cached: 0, reasoning: 0 };
    rig.fake.enqueue(behaviour.ok({ pace: "burst", usage }));
    const response = await postChat(rig, { ...body, stream: true }, headers);
    expect(response.status).toBe(200);

    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({ streamed: true, output_tokens: 100_000 });
    expect(record.ttft_ms).toBeGreaterThan(0);
    // timed over the relay of one read, it read as millions of tokens a second
    expect(nearly(record.output_tokens_per_s, (100_000 * 1000) / record.latency_ms)).toBe(true);
  });

  it("streams without include_usage: no usage reaches the client, yet the record has the supplier's counts", async () => {
    const { canary, body, headers } = canaryChat(rig, "streamplain");
    // an unknown field and a stream option Lethe does not know must reach the supplier unchanged
    const sent = { ...body, stream: true, stream_options: { include_obfuscation: false }, x_vendor_hint: { tier: 2 } };
    const result = await postChat(rig, sent, headers);

    expect(result.status).toBe(200);
    expect(result.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(result.text).not.toContain("usage");
    const emitted = result.text.replaceAll(canary.user, "<canary>").replace(/chatcmpl-fake\d+/g, "chatcmpl-fake");
    expect(emitted.split("\n\n")).toMatchInlineSnapshot(`
      [
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}",
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"content":"Echo: "},"logprobs":null,"finish_reason":null}]}",
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"content":"Now "},"logprobs":null,"finish_reason":null}]}",
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"content":"repeat "},"logprobs":null,"finish_reason":null}]}",
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"content":"<canary> "},"logprobs":null,"finish_reason":null}]}",
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"content":"please"},"logprobs":null,"finish_reason":null}]}",
        "data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fast-chat","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}",
        "data: [DONE]",
        "",
      ]
    `);

    expect(lastUpstream().body).toEqual({
      ...sent,
      model: "upstream-model-1",
      stream_options: { include_obfuscation: false, include_usage: true },
      store: false,
    });
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ status: 200, error_code: null, streamed: true, ...METERED_USAGE });
  });

  it.each([
    ["include_usage: false", { include_usage: false }],
    ["stream_options: null", null],
  ])("forces include_usage upstream and strips usage again when the client sent %s", async (_name, options) => {
    const { body, headers } = canaryChat(rig, "streamoptions");
    const result = await postChat(rig, { ...body, stream: true, stream_options: options }, headers);

    expect(result.status).toBe(200);
    expect(result.text).not.toContain("usage");
    expect(result.text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(lastUpstream().body).toMatchObject({ stream_options: { include_usage: true } });
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ status: 200, streamed: true, ...METERED_USAGE });
  });

  it("prices cached input at the cached price and everything else at the route's prices", async () => {
    rig.fake.enqueue(
      behaviour.ok({ usage: { prompt: 2_000_000, cached: 1_500_000, completion: 300_000, reasoning: 0 } }),
    );
    const { body, headers } = canaryChat(rig, "price");
    const { response } = await rig.client.chat.completions.create(body, { headers }).withResponse();

    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({ input_tokens: 2_000_000, cached_input_tokens: 1_500_000, output_tokens: 300_000 });
    // 500 000 × 0.10 + 1 500 000 × 0.05 + 300 000 × 0.20
    expect(record.cost_micros).toBe(185_000);
  });

  it("relays a tool call, streamed and not, and counts it as output for TTFT", async () => {
    const { canary, body, headers } = canaryChat(rig, "toolcall");
    rig.fake.enqueue(behaviour.ok({ toolCall: true }), behaviour.ok({ toolCall: true }));
    const expectedArguments = JSON.stringify({ query: `Now repeat ${canary.user} please` });

    const whole = await rig.client.chat.completions.create(body, { headers });
    expect(whole.choices[0]?.finish_reason).toBe("tool_calls");
    expect(whole.choices[0]?.message.tool_calls).toEqual([
      { id: "call_fake", type: "function", function: { name: "lookup", arguments: expectedArguments } },
    ]);

    const { data: stream, response } = await rig.client.chat.completions
      .create({ ...body, stream: true }, { headers })
      .withResponse();
    let streamedArguments = "";
    let finishReason: string | null = null;
    for await (const chunk of stream) {
      for (const call of chunk.choices[0]?.delta.tool_calls ?? []) streamedArguments += call.function?.arguments ?? "";
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
    }
    expect(streamedArguments).toBe(expectedArguments);
    expect(finishReason).toBe("tool_calls");
    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record.ttft_ms).toBeGreaterThan(0);
    expect(record).toMatchObject({ status: 200, ...METERED_USAGE });
  });

  it.each([
    ["not streaming", false],
    ["streaming", true],
  ])("estimates the tokens when the supplier reports no usage (%s)", async (_name, stream) => {
    const { canary, body, headers } = canaryChat(rig, "estimate");
    rig.fake.enqueue(behaviour.noUsage());
    const sent = stream ? { ...body, stream, stream_options: { include_usage: true } } : body;
    const result = await postChat(rig, sent, headers);

    expect(result.status).toBe(200);
    expect(result.text).toContain(canary.user);
    const answers = stream ? sseData(result.text) : [JSON.parse(result.text) as Record<string, unknown>];
    expect(answers.length).toBeGreaterThan(0);
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    if (stream) {
      // the client asked for usage and the supplier sent none: the last chunk has Lethe's estimate
      expect(answers.slice(0, -1).every((answer) => answer.usage === null)).toBe(true);
      expect(answers.at(-1)).toMatchObject({
        choices: [],
        usage: { prompt_tokens: record.input_tokens, completion_tokens: record.output_tokens },
      });
    } else {
      // a JSON answer without usage is passed on as it came
      expect(answers[0]?.usage).toBeUndefined();
    }
    expect(record.tokens_estimated).toBe(true);
    expect(record.input_tokens).toBe(estimateInputTokens(sent));
    expect(record.output_tokens).toBeGreaterThan(5);
    expect(record.cached_input_tokens).toBe(0);
    expect(record.cost_micros).toBe(Math.round(record.input_tokens * 0.1 + record.output_tokens * 0.2));
    expect(record.cost_micros).toBeGreaterThan(0);
  });

  it.each([
    ["not streaming", false],
    ["streaming", true],
  ])(
    "holds its own count of an answer without usage to max_tokens × n, as the supplier's would be (%s)",
    async (_name, stream) => {
      const { body, headers } = canaryChat(rig, "estimatecap");
      rig.fake.enqueue(behaviour.noUsage());
      // the fake's answer (the prompt's echo) is longer than 3 tokens: a supplier held to
      // max_tokens would have cut it, and counts no more than that
      const sent = { ...body, max_tokens: 3, n: 1, ...(stream && { stream, stream_options: { include_usage: true } }) };
      const result = await postChat(rig, sent, headers);
      expect(result.status).toBe(200);
      const record = await recordOf(rig, result.headers.get("x-request-id"));
      expect(record).toMatchObject({ tokens_estimated: true, output_tokens: 3 });
      expect(record.cost_micros).toBe(Math.round(record.input_tokens * 0.1 + 3 * 0.2));
      // the usage chunk the client reads is the count billed
      if (stream) expect(sseData(result.text).at(-1)).toMatchObject({ usage: { completion_tokens: 3 } });
    },
  );

  it("keeps one upstream connection alive across sequential requests, errors and streams included", async () => {
    const { body, headers } = canaryChat(rig, "keepalive");
    rig.fake.enqueue(
      behaviour.ok(),
      behaviour.ok(),
      behaviour.status(400),
      behaviour.status(500),
      behaviour.ok(),
      behaviour.ok(),
    );
    const before = rig.fake.requests.length;

    await rig.client.chat.completions.create({ ...body, model: "patient-chat" }, { headers });
    await postChat(rig, { ...body, model: "patient-chat", stream: true }, headers);
    // error bodies are read to the end (relayed or dropped), so the connection stays usable
    expect((await postChat(rig, { ...body, model: "patient-chat" }, headers)).status).toBe(400);
    expect((await postChat(rig, { ...body, model: "patient-chat" }, headers)).status).toBe(502);
    const stream = await rig.client.chat.completions.create({ ...body, model: "patient-chat", stream: true });
    for await (const _chunk of stream);
    await rig.client.chat.completions.create({ ...body, model: "patient-chat" }, { headers });

    const connections = rig.fake.requests.slice(before).map((upstream) => upstream.connectionId);
    expect(connections).toHaveLength(6);
    expect(new Set(connections).size).toBe(1);
  });

  it("ends the client's stream at [DONE] when the supplier holds its response open after it", async () => {
    const { canary, body, headers } = canaryChat(rig, "holdafterdone");
    rig.fake.enqueue(behaviour.holdAfterDone());
    const abandoned = rig.fake.nextAbort();
    // fast-chat's idle_ms is 300: waiting for the body's end would fail the stream
    const { data: stream, response } = await rig.client.chat.completions
      .create({ ...body, stream: true }, { headers })
      .withResponse();
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text).toBe(`Echo: Now repeat ${canary.user} please`);
    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({ status: 200, error_code: null, streamed: true, ...METERED_USAGE });
    // the held response is let go once the drain's grace has passed
    await abandoned;
  });

  it("relays each stream chunk as the supplier wrote it, but for the model and the usage the client did not ask for", async () => {
    const { canary, body, headers } = canaryChat(rig, "rawchunks");
    const answer = JSON.stringify(`Echo: ${canary.user}`);
    // numbers a parse and a serialisation would change (beyond a double's precision, 1.0),
    // `usage: null` first and last, a nested `usage` key, and one event sent as two lines
    const events = [
      '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","seed_echo":12345678901234567891,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}',
      `{"usage" : null, "id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","choices":[{"index":0,"delta":{"content":${answer}},"score":1.0,"finish_reason":null}]}`,
      '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","choices":[{"index":0,"delta":{},"extra":{"usage":null},"finish_reason":"stop"}],"usage":null}',
      '{"id":"c1",\n"model":"up-model","choices":[{"index":0,"delta":{},"finish_reason":null}],"usage":null}',
      '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":250,"total_tokens":1250}}',
    ];
    rig.fake.enqueue(behaviour.rawStream(events));
    const result = await postChat(rig, { ...body, stream: true }, headers);
    expect(result.status).toBe(200);
    expect(result.text).toBe(
      [
        'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"fast-chat","seed_echo":12345678901234567891,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
        `data: { "id":"c1","object":"chat.completion.chunk","created":1,"model":"fast-chat","choices":[{"index":0,"delta":{"content":${answer}},"score":1.0,"finish_reason":null}]}`,
        // a nested usage key: serialised again, usage removed
        'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"fast-chat","choices":[{"index":0,"delta":{},"extra":{"usage":null},"finish_reason":"stop"}]}',
        // two lines: serialised again, as one
        'data: {"id":"c1","model":"fast-chat","choices":[{"index":0,"delta":{},"finish_reason":null}]}',
        "data: [DONE]",
        "",
      ].join("\n\n"),
    );
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ status: 200, streamed: true, input_tokens: 1000, output_tokens: 250 });
  });

  it("lets the event loop turn while it relays a burst of events the supplier sent at once", async () => {
    const { canary, body, headers } = canaryChat(rig, "burst");
    const events = 4_000;
    const chunk = `{"id":"c3","model":"up-model","choices":[{"index":0,"delta":{"content":${JSON.stringify(canary.user)}},"finish_reason":null}]}`;
    const finish = '{"id":"c3","model":"up-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}';
    rig.fake.enqueue(behaviour.rawStream([...Array.from({ length: events }, () => chunk), finish]));
    // counts the event loop's turns while the stream is relayed (gateway, supplier and client share this process)
    let turns = 0;
    let ticking = true;
    const tick = () => {
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const result = await postChat(rig, { ...body, stream: true }, headers);
    ticking = false;
    expect(result.text.split("\n\n").length).toBe(events + 3);
    // the burst (about 450 KB) comes in a few socket reads: relayed read by read, the loop
    // turned about 20 times in all; the relay lets it turn every 32 events (125 here)
    expect(turns).toBeGreaterThanOrEqual(events / 64);
  });

  it("keeps the supplier's usage: null on chunks of a client that asked for usage, its model replaced", async () => {
    const { canary, body, headers } = canaryChat(rig, "rawusage");
    const events = [
      `{"id":"c2","model":"up-model","choices":[{"index":0,"delta":{"content":${JSON.stringify(canary.user)}},"finish_reason":"stop"}],"usage":null}`,
      '{"id":"c2","model":"up-model","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}',
    ];
    rig.fake.enqueue(behaviour.rawStream(events));
    const result = await postChat(rig, { ...body, stream: true, stream_options: { include_usage: true } }, headers);
    expect(result.text).toBe(
      `${events.map((event) => `data: ${event.replace('"up-model"', '"fast-chat"')}`).join("\n\n")}\n\ndata: [DONE]\n\n`,
    );
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ input_tokens: 3, output_tokens: 2 });
  });

  it("counts the output relayed after a usage that came before the answer finished", async () => {
    const { canary, body, headers } = canaryChat(rig, "earlyusage");
    const words = Array.from(
      { length: 50 },
      (_, index) =>
        `{"id":"c5","model":"up-model","choices":[{"index":0,"delta":{"content":" word${index} ${canary.user}"},"finish_reason":null}]}`,
    );
    rig.fake.enqueue(
      behaviour.rawStream([
        // the prompt counted up front, the output not yet; no final usage ever comes
        '{"id":"c5","model":"up-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":{"prompt_tokens":1234,"completion_tokens":0,"total_tokens":1234}}',
        ...words,
        '{"id":"c5","model":"up-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
      ]),
    );
    // a limit above what is relayed: the count is not held to it (the test above holds it)
    const result = await postChat(rig, { ...body, max_tokens: 1000, stream: true }, headers);
    expect(result.status).toBe(200);
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ input_tokens: 1234, tokens_estimated: true });
    expect(record.output_tokens).toBeGreaterThan(100);
  });

  it("sends a usage chunk with a key written twice as Lethe read and billed it", async () => {
    const { canary, body, headers } = canaryChat(rig, "twiceusage");
    rig.fake.enqueue(
      behaviour.rawStream([
        `{"id":"c4","model":"up-model","choices":[{"index":0,"delta":{"content":${JSON.stringify(canary.user)}},"finish_reason":"stop"}]}`,
        // a usage written twice on an ordinary chunk: Lethe reads null, a parser keeping the first would not
        '{"id":"c4","model":"up-model","choices":[{"index":0,"delta":{},"finish_reason":null}],"usage":{"prompt_tokens":999},"usage":null}',
        '{"id":"c4","model":"up-model","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}',
      ]),
    );
    const result = await postChat(rig, { ...body, stream: true, stream_options: { include_usage: true } }, headers);
    expect(result.text).toContain(
      'data: {"id":"c4","model":"fast-chat","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}\n\n',
    );
    expect(result.text).toContain(
      'data: {"id":"c4","model":"fast-chat","choices":[{"index":0,"delta":{},"finish_reason":null}],"usage":null}\n\n',
    );
    expect(result.text).not.toContain('"prompt_tokens":999}');
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ input_tokens: 30, output_tokens: 20 });
  });

  it("refuses an unknown model without calling the supplier or keeping the name it was given", async () => {
    const { canary, body, headers } = canaryChat(rig, "unknownmodel");
    const before = rig.fake.requests.length;
    const result = await postChat(rig, { ...body, model: canary.user }, headers);

    expect(result.status).toBe(404);
    expect(JSON.parse(result.text)).toEqual({
      error: {
        message: "The requested model does not exist here; GET /v1/models lists the models.",
        type: "not_found_error",
        param: "model",
        code: "LETHE_UNKNOWN_MODEL",
      },
    });
    expect(rig.fake.requests.length).toBe(before);
    const record = await recordOf(rig, result.headers.get("x-request-id"));
    expect(record).toMatchObject({ model: "unknown", supplier: null, status: 404, error_code: "LETHE_UNKNOWN_MODEL" });
  });

  it("never sent the caller's key to the supplier, on any request", () => {
    expect(rig.fake.requests.length).toBeGreaterThan(10);
    for (const upstream of rig.fake.requests) {
      expect(upstream.headers.authorization).toBe(`Bearer ${FAKE_SUPPLIER_KEY}`);
      expect(JSON.stringify(upstream)).not.toContain(rig.gateway.key);
    }
  });
});
