import { MessageStream } from "@anthropic-ai/sdk/lib/MessageStream";
import { ChatCompletionStream } from "openai/lib/ChatCompletionStream";
import { describe, expect, it } from "vitest";
import type { ModelId, RequestId } from "../src/config/ids.js";
import { LetheError } from "../src/errors/lethe-error.js";
import { AnthropicStreamRelay } from "../src/formats/anthropic/anthropic-stream-relay.js";
import { OpenAIStreamRelay } from "../src/formats/openai/openai-stream-relay.js";
import type { ClientRequest, StreamTranslator } from "../src/formats/surface/client-surface.js";
import { AnthropicToOpenAIStream } from "../src/formats/translate/anthropic-to-openai-stream.js";
import { HELD_CHARACTERS, OpenAIToAnthropicStream } from "../src/formats/translate/openai-to-anthropic-stream.js";
import { openAIToAnthropicMessage } from "../src/formats/translate/translate-response.js";
import { Exchange } from "../src/metering/exchange.js";
import type { ClientFormat } from "../src/metering/metadata-record.js";
import { parseSse, type SseEvent } from "./support/translation-rig.js";

/**
 * The stream translators fed event sequences directly: the exact events they emit,
 * and proof that each SDK's own accumulator turns them into a complete answer.
 */

type Json = Record<string, unknown>;

function exchangeFor(format: ClientFormat): Exchange {
  const exchange = new Exchange(
    "req_unit" as RequestId,
    format === "anthropic" ? "/v1/messages" : "/v1/chat/completions",
    format,
  );
  exchange.model = "unit-model" as ModelId;
  exchange.streamed = true;
  return exchange;
}

function clientRequest(wantsStreamUsage: boolean): ClientRequest {
  return {
    model: "unit-model",
    stream: true,
    wantsStreamUsage,
    body: { model: "unit-model", max_tokens: 100, messages: [{ role: "user", content: "tell me a story" }] },
  };
}

/** Feeds supplier events to a translator and returns the whole SSE text it produced. */
function feed(translator: StreamTranslator, events: Json[]): string {
  let text = "";
  for (const data of events)
    text += translator.event({ event: typeof data.type === "string" ? data.type : undefined, data }) ?? "";
  return text + translator.end();
}

function jsonOf(event: SseEvent | undefined): Json {
  if (event === undefined || event.data === "[DONE]") throw new Error("expected a JSON event");
  return event.data;
}

/** The SSE events' JSON as the newline-delimited stream the SDKs' `fromReadableStream` read. */
function asReadable(events: SseEvent[]): ReadableStream {
  const lines = events.filter((event) => event.data !== "[DONE]").map((event) => `${JSON.stringify(event.data)}\n`);
  return new Response(lines.join("")).body as ReadableStream;
}

const chunk = (delta: Json, finishReason: string | null = null): Json => ({
  id: "chatcmpl-unit",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta, finish_reason: finishReason }],
});

const OPENAI_USAGE = {
  id: "chatcmpl-unit",
  object: "chat.completion.chunk",
  choices: [],
  usage: {
    prompt_tokens: 30,
    completion_tokens: 12,
    prompt_tokens_details: { cached_tokens: 10 },
    completion_tokens_details: { reasoning_tokens: 4 },
  },
};

describe("OpenAIToAnthropicStream", () => {
  it("emits Anthropic's sequence: one block at a time, tool arguments as input_json_delta as they arrive", async () => {
    const exchange = exchangeFor("anthropic");
    const text = feed(new OpenAIToAnthropicStream(clientRequest(true), exchange), [
      chunk({ role: "assistant", content: "" }),
      chunk({ content: "Hel" }),
      chunk({ content: "lo" }),
      chunk({ tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "f", arguments: "" } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '{"a"' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: ":1}" } }] }),
      chunk({ tool_calls: [{ index: 1, id: "call_2", type: "function", function: { name: "g", arguments: "{}" } }] }),
      chunk({}, "tool_calls"),
      OPENAI_USAGE,
    ]);
    const events = parseSse(text);
    for (const event of events) expect(jsonOf(event).type).toBe(event.event);
    expect(events.map((event) => jsonOf(event))).toEqual([
      {
        type: "message_start",
        message: {
          id: "msg_unit",
          type: "message",
          role: "assistant",
          model: "unit-model",
          content: [],
          stop_reason: null,
          stop_sequence: null,
          // Lethe's estimate of "tell me a story" (15 characters, 4 tokens) and its framing (6)
          usage: { input_tokens: 10, output_tokens: 0 },
        },
      },
      { type: "ping" },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hel" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "lo" } },
      { type: "content_block_stop", index: 0 },
      {
        type: "content_block_start",
        index: 1,
        content_block: { type: "tool_use", id: "call_1", name: "f", input: {} },
      },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"a"' } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: ":1}" } },
      { type: "content_block_stop", index: 1 },
      {
        type: "content_block_start",
        index: 2,
        content_block: { type: "tool_use", id: "call_2", name: "g", input: {} },
      },
      { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: "{}" } },
      { type: "content_block_stop", index: 2 },
      {
        type: "message_delta",
        delta: { stop_reason: "tool_use", stop_sequence: null },
        usage: {
          input_tokens: 20,
          output_tokens: 12,
          cache_read_input_tokens: 10,
          cache_creation_input_tokens: 0,
          // the supplier's reasoning tokens, as Anthropic reports thinking
          output_tokens_details: { thinking_tokens: 4 },
        },
      },
      { type: "message_stop" },
    ]);
    expect(exchange.usage).toEqual({ input: 30, output: 12, cachedInput: 10, cacheWrite: 0, reasoning: 4 });
    expect(exchange.firstTokenAt).not.toBeNull();
    expect(exchange.tokensEstimated).toBe(false);

    const message = await MessageStream.fromReadableStream(asReadable(events)).finalMessage();
    expect(message.content).toEqual([
      { type: "text", text: "Hello" },
      { type: "tool_use", id: "call_1", name: "f", input: { a: 1 } },
      { type: "tool_use", id: "call_2", name: "g", input: {} },
    ]);
    expect(message.stop_reason).toBe("tool_use");
    expect(message.usage).toMatchObject({
      input_tokens: 20,
      output_tokens: 12,
      cache_read_input_tokens: 10,
      output_tokens_details: { thinking_tokens: 4 },
    });
  });

  it("opens a thinking block for reasoning, then a text block; the SDK reads a signature on it", async () => {
    const sse = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({ reasoning_content: "let me " }),
        chunk({ reasoning_content: "think" }),
        chunk({ content: "ok" }),
        chunk({}, "stop"),
      ]),
    );
    const events = sse.map(jsonOf);
    expect(events.filter((event) => event.type === "content_block_start").map((event) => event.content_block)).toEqual([
      { type: "thinking", thinking: "", signature: "" },
      { type: "text", text: "" },
    ]);
    const message = await MessageStream.fromReadableStream(asReadable(sse)).finalMessage();
    // as the non-streamed answer has it: OpenAI-compatible reasoning carries no signature
    expect(message.content[0]).toEqual({ type: "thinking", thinking: "let me think", signature: "" });
    expect(events.filter((event) => event.type === "content_block_delta").map((event) => event.delta)).toEqual([
      { type: "thinking_delta", thinking: "let me " },
      { type: "thinking_delta", thinking: "think" },
      { type: "text_delta", text: "ok" },
    ]);
  });

  it("reports the stop sequence a vLLM-style server names in stop_reason, when the request asked for it", async () => {
    const request = clientRequest(true);
    request.body = { ...request.body, stop_sequences: ["END", "HALT"] };
    const stopped = (stopReason: unknown) => ({
      id: "chatcmpl-unit",
      choices: [{ index: 0, delta: {}, finish_reason: "stop", stop_reason: stopReason }],
    });
    for (const [stopReason, expected] of [
      ["HALT", { stop_reason: "stop_sequence", stop_sequence: "HALT" }],
      // not one of the request's sequences (an EOS token id, a string it did not ask for)
      [2, { stop_reason: "end_turn", stop_sequence: null }],
      ["OTHER", { stop_reason: "end_turn", stop_sequence: null }],
    ] as const) {
      const sse = parseSse(
        feed(new OpenAIToAnthropicStream(request, exchangeFor("anthropic")), [
          chunk({ content: "so" }),
          stopped(stopReason),
        ]),
      );
      const message = await MessageStream.fromReadableStream(asReadable(sse)).finalMessage();
      expect({ stop_reason: message.stop_reason, stop_sequence: message.stop_sequence }).toEqual(expected);
      const whole = openAIToAnthropicMessage(
        { id: "x", choices: [{ message: { content: "so" }, finish_reason: "stop", stop_reason: stopReason }] },
        "unit-model" as ModelId,
        { input: 1, output: 1, cachedInput: 0, cacheWrite: 0, reasoning: 0 },
        ["END", "HALT"],
      );
      expect({ stop_reason: whole.stop_reason, stop_sequence: whole.stop_sequence }).toEqual(expected);
    }
  });

  it("keeps tool calls that come without an index apart, and reports tool_use when a server says stop", async () => {
    const sse = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({
          tool_calls: [
            { id: "call_a", type: "function", function: { name: "f", arguments: "{}" } },
            { id: "call_b", type: "function", function: { name: "g", arguments: '{"x":1}' } },
          ],
        }),
        chunk({}, "stop"),
      ]),
    );
    const message = await MessageStream.fromReadableStream(asReadable(sse)).finalMessage();
    expect(message.content).toEqual([
      { type: "tool_use", id: "call_a", name: "f", input: {} },
      { type: "tool_use", id: "call_b", name: "g", input: { x: 1 } },
    ]);
    expect(message.stop_reason).toBe("tool_use");
    const whole = openAIToAnthropicMessage(
      {
        id: "chatcmpl-t",
        choices: [
          {
            message: {
              role: "assistant",
              content: null,
              tool_calls: [{ id: "c", function: { name: "f", arguments: "{}" } }],
            },
            finish_reason: "stop",
          },
        ],
      },
      "unit-model" as ModelId,
      { input: 1, output: 1, cachedInput: 0, cacheWrite: 0, reasoning: 0 },
    );
    expect(whole.stop_reason).toBe("tool_use");
  });

  it("tells calls without an index apart by id, one whole call a chunk (Gemini's way)", async () => {
    const sse = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({
          tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: '{"city":"Sydney"}' } }],
        }),
        chunk({ tool_calls: [{ id: "call_2", type: "function", function: { name: "g", arguments: '{"tz":' } }] }),
        // a delta without id or index continues the last call
        chunk({ tool_calls: [{ function: { arguments: '"UTC"}' } }] }),
        chunk({}, "tool_calls"),
      ]),
    );
    const message = await MessageStream.fromReadableStream(asReadable(sse)).finalMessage();
    expect(message.content).toEqual([
      { type: "tool_use", id: "call_1", name: "f", input: { city: "Sydney" } },
      { type: "tool_use", id: "call_2", name: "g", input: { tz: "UTC" } },
    ]);
  });

  it("sends id-less deltas of several calls in one chunk to the calls named together before, by place", async () => {
    const sse = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({
          tool_calls: [
            { id: "call_a", type: "function", function: { name: "f", arguments: "" } },
            { id: "call_b", type: "function", function: { name: "g", arguments: "" } },
          ],
        }),
        chunk({ tool_calls: [{ function: { arguments: '{"x":1}' } }, { function: { arguments: '{"y":2}' } }] }),
        chunk({}, "tool_calls"),
      ]),
    );
    const message = await MessageStream.fromReadableStream(asReadable(sse)).finalMessage();
    expect(message.content).toEqual([
      { type: "tool_use", id: "call_a", name: "f", input: { x: 1 } },
      { type: "tool_use", id: "call_b", name: "g", input: { y: 2 } },
    ]);
  });

  it("sends interleaved parallel calls one block at a time: a call begun while another is open waits, whole", async () => {
    const sse = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({ tool_calls: [{ index: 0, id: "c0", type: "function", function: { name: "f", arguments: '{"a":' } }] }),
        chunk({ tool_calls: [{ index: 1, id: "c1", type: "function", function: { name: "g", arguments: '{"b":' } }] }),
        chunk({ tool_calls: [{ index: 0, function: { arguments: "1}" } }] }),
        chunk({ tool_calls: [{ index: 1, function: { arguments: "2}" } }] }),
        chunk({ tool_calls: [{ index: 2, id: "c2", type: "function", function: { name: "h", arguments: "" } }] }),
        chunk({ content: "Done." }),
        chunk({}, "tool_calls"),
      ]),
    );
    const events = sse.map((event) => jsonOf(event));
    // every block's events are contiguous, start to stop, and nothing reaches a block once stopped
    const blocks = events.filter((event) => String(event.type).startsWith("content_block"));
    const order = blocks.map((event) => `${event.type}:${event.index}`);
    expect(order).toEqual([
      "content_block_start:0",
      "content_block_delta:0",
      "content_block_delta:0",
      "content_block_stop:0",
      "content_block_start:1",
      "content_block_delta:1",
      "content_block_stop:1",
      "content_block_start:2",
      "content_block_stop:2",
      "content_block_start:3",
      "content_block_delta:3",
      "content_block_stop:3",
    ]);
    expect(blocks[5]).toMatchObject({ delta: { type: "input_json_delta", partial_json: '{"b":2}' } });
    const stream = MessageStream.fromReadableStream(asReadable(sse));
    const finished: unknown[] = [];
    stream.on("contentBlock", (block) => finished.push(block));
    const message = await stream.finalMessage();
    // the waiting calls go out at the end, in the order they began, then the text that came meanwhile
    const expected = [
      { type: "tool_use", id: "c0", name: "f", input: { a: 1 } },
      { type: "tool_use", id: "c1", name: "g", input: { b: 2 } },
      { type: "tool_use", id: "c2", name: "h", input: {} },
      { type: "text", text: "Done." },
    ];
    expect(message.content).toEqual(expected);
    // the SDK's block-by-block events see each call whole, as Anthropic's own streams give them
    expect(finished).toEqual(expected);
  });

  it.each([
    [
      "a waiting call's arguments after text",
      [
        chunk({ tool_calls: [{ index: 0, id: "c0", type: "function", function: { name: "f", arguments: "{}" } }] }),
        chunk({ tool_calls: [{ index: 1, id: "c1", type: "function", function: { name: "g", arguments: '{"b":' } }] }),
        chunk({ content: "Working." }),
        chunk({ tool_calls: [{ index: 1, function: { arguments: "2}" } }] }),
        chunk({}, "tool_calls"),
      ],
      [
        { type: "tool_use", id: "c0", name: "f", input: {} },
        { type: "tool_use", id: "c1", name: "g", input: { b: 2 } },
        { type: "text", text: "Working." },
      ],
    ],
    [
      "the first call's arguments after text and reasoning",
      [
        chunk({ content: "Let me look." }),
        chunk({ tool_calls: [{ index: 0, id: "c0", type: "function", function: { name: "f", arguments: '{"a":' } }] }),
        chunk({ reasoning_content: "hmm" }),
        chunk({ content: "Still working." }),
        chunk({ tool_calls: [{ index: 0, function: { arguments: "1}" } }] }),
        chunk({}, "tool_calls"),
      ],
      [
        { type: "text", text: "Let me look." },
        { type: "tool_use", id: "c0", name: "f", input: { a: 1 } },
        { type: "thinking", thinking: "hmm", signature: "" },
        { type: "text", text: "Still working." },
      ],
    ],
  ])("never sends a delta to a stopped block: %s", async (_label, chunks, expected) => {
    const sse = parseSse(feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), chunks));
    const stopped = new Set<unknown>();
    let open: unknown = null;
    for (const event of sse.map((each) => jsonOf(each))) {
      if (event.type === "content_block_start") {
        expect(open).toBeNull();
        open = event.index;
      }
      if (event.type === "content_block_delta") expect([stopped.has(event.index), event.index]).toEqual([false, open]);
      if (event.type === "content_block_stop") {
        stopped.add(event.index);
        open = null;
      }
    }
    const stream = MessageStream.fromReadableStream(asReadable(sse));
    const finished: unknown[] = [];
    stream.on("contentBlock", (block) => finished.push(block));
    await stream.finalMessage();
    expect(finished).toEqual(expected);
  });

  it("ends with an error, not with the process's memory, when what it holds for the end outgrows its bound", () => {
    const translator = new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic"));
    translator.event({
      event: undefined,
      data: chunk({ tool_calls: [{ index: 0, id: "c0", type: "function", function: { name: "f", arguments: "{}" } }] }),
    });
    const piece = "x".repeat(2 ** 20);
    let thrown: unknown = null;
    try {
      for (let sent = 0; sent <= HELD_CHARACTERS / piece.length; sent++) {
        translator.event({ event: undefined, data: chunk({ content: piece }) });
      }
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: "LETHE_UPSTREAM_BAD_RESPONSE" });
  });

  it("gives a call the supplier named no id a unique one, streamed and not", async () => {
    const ids: unknown[] = [];
    for (let turn = 0; turn < 2; turn++) {
      const sse = parseSse(
        feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
          chunk({ tool_calls: [{ index: 0, type: "function", function: { name: "f", arguments: "{}" } }] }),
          chunk({}, "tool_calls"),
        ]),
      );
      const message = await MessageStream.fromReadableStream(asReadable(sse)).finalMessage();
      ids.push((message.content[0] as { id: string }).id);
      const whole = openAIToAnthropicMessage(
        {
          id: "chatcmpl-t",
          choices: [
            {
              message: { role: "assistant", content: null, tool_calls: [{ function: { name: "f", arguments: "{}" } }] },
              finish_reason: "tool_calls",
            },
          ],
        },
        "unit-model" as ModelId,
        { input: 1, output: 1, cachedInput: 0, cacheWrite: 0, reasoning: 0 },
      );
      ids.push((whole.content as Json[])[0]?.id);
    }
    expect(ids.every((id) => typeof id === "string" && id.startsWith("toolu_"))).toBe(true);
    expect(new Set(ids).size).toBe(4);
  });

  it("relays a refusal as text ending with stop_reason refusal, streamed and not (OpenAI ends it with stop)", () => {
    const events = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({ role: "assistant", refusal: "" }),
        chunk({ refusal: "I can't " }),
        chunk({ refusal: "help with that." }),
        chunk({}, "stop"),
      ]),
    ).map(jsonOf);
    expect(events.filter((event) => event.type === "content_block_delta").map((event) => event.delta)).toEqual([
      { type: "text_delta", text: "I can't " },
      { type: "text_delta", text: "help with that." },
    ]);
    expect(events.find((event) => event.type === "message_delta")?.delta).toEqual({
      stop_reason: "refusal",
      stop_sequence: null,
    });
    const refused = (message: Json) =>
      openAIToAnthropicMessage(
        { id: "chatcmpl-r", choices: [{ message: { role: "assistant", ...message }, finish_reason: "stop" }] },
        "unit-model" as ModelId,
        { input: 1, output: 1, cachedInput: 0, cacheWrite: 0, reasoning: 0 },
      );
    expect(refused({ content: null, refusal: "No." })).toMatchObject({
      content: [{ type: "text", text: "No." }],
      stop_reason: "refusal",
    });
    // an answer with content (refusal null, as OpenAI sends it) ends as it always did
    expect(refused({ content: "Sure.", refusal: null })).toMatchObject({ stop_reason: "end_turn" });
  });

  it.each([
    ["length", "max_tokens"],
    ["content_filter", "refusal"],
    ["stop", "end_turn"],
  ])("reports finish_reason %s as stop_reason %s", (finishReason, stopReason) => {
    const events = parseSse(
      feed(new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic")), [
        chunk({ content: "a" }),
        chunk({}, finishReason),
      ]),
    ).map(jsonOf);
    expect(events.find((event) => event.type === "message_delta")?.delta).toEqual({
      stop_reason: stopReason,
      stop_sequence: null,
    });
  });

  it("still emits a complete message when the supplier sent no chunk at all", async () => {
    const exchange = exchangeFor("anthropic");
    const events = parseSse(feed(new OpenAIToAnthropicStream(clientRequest(true), exchange), []));
    expect(events.map((event) => event.event)).toEqual(["message_start", "ping", "message_delta", "message_stop"]);
    const message = await MessageStream.fromReadableStream(asReadable(events)).finalMessage();
    expect(message.content).toEqual([]);
    // no usage from the supplier: Lethe estimates the input and says so
    expect(exchange.tokensEstimated).toBe(true);
    expect(exchange.usage?.input).toBeGreaterThan(0);
  });

  it("estimates usage from the output seen when the supplier reports none", () => {
    const exchange = exchangeFor("anthropic");
    feed(new OpenAIToAnthropicStream(clientRequest(true), exchange), [
      chunk({ content: "one two three four" }),
      chunk({}, "stop"),
    ]);
    expect(exchange.tokensEstimated).toBe(true);
    expect(exchange.usage?.output).toBeGreaterThan(0);
  });

  it("counts the output after a usage that came before the answer finished, when no final usage follows", () => {
    const exchange = exchangeFor("anthropic");
    feed(new OpenAIToAnthropicStream(clientRequest(true), exchange), [
      {
        ...chunk({ role: "assistant", content: "" }),
        usage: { prompt_tokens: 1234, completion_tokens: 0, total_tokens: 1234 },
      },
      chunk({ content: "one two three four five six seven eight nine ten" }),
      chunk({}, "stop"),
    ]);
    expect(exchange.tokensEstimated).toBe(true);
    expect(exchange.usage).toMatchObject({ input: 1234 });
    expect(exchange.usage?.output).toBeGreaterThan(5);
  });

  it("ends a failed stream with Anthropic's error event, in Lethe's words", () => {
    const translator = new OpenAIToAnthropicStream(clientRequest(true), exchangeFor("anthropic"));
    translator.event({ event: undefined, data: chunk({ content: "partial" }) });
    const events = parseSse(translator.error(new LetheError("LETHE_UPSTREAM_ERROR", "The supplier failed.")));
    expect(events).toEqual([
      {
        event: "error",
        data: {
          type: "error",
          error: { type: "api_error", message: "The supplier failed.", code: "LETHE_UPSTREAM_ERROR" },
        },
      },
    ]);
  });
});

const ANTHROPIC_EVENTS: Json[] = [
  {
    type: "message_start",
    message: {
      id: "msg_unit",
      type: "message",
      role: "assistant",
      model: "upstream",
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 10, cache_read_input_tokens: 5, cache_creation_input_tokens: 0, output_tokens: 1 },
    },
  },
  { type: "content_block_start", index: 0, content_block: { type: "thinking", thinking: "" } },
  { type: "ping" },
  { type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "hmm" } },
  { type: "content_block_delta", index: 0, delta: { type: "signature_delta", signature: "c2ln" } },
  { type: "content_block_stop", index: 0 },
  { type: "content_block_start", index: 1, content_block: { type: "text", text: "" } },
  { type: "content_block_delta", index: 1, delta: { type: "text_delta", text: "Hi" } },
  { type: "content_block_stop", index: 1 },
  { type: "content_block_start", index: 2, content_block: { type: "tool_use", id: "toolu_1", name: "f", input: {} } },
  { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: "" } },
  { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: '{"a"' } },
  { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: ":1}" } },
  { type: "content_block_stop", index: 2 },
  { type: "content_block_start", index: 3, content_block: { type: "tool_use", id: "toolu_2", name: "g", input: {} } },
  { type: "content_block_delta", index: 3, delta: { type: "input_json_delta", partial_json: "{}" } },
  { type: "content_block_stop", index: 3 },
  {
    type: "message_delta",
    delta: { stop_reason: "tool_use", stop_sequence: null },
    usage: { output_tokens: 7, output_tokens_details: { thinking_tokens: 3 } },
  },
  { type: "message_stop" },
];

describe("AnthropicToOpenAIStream", () => {
  it("turns thinking into reasoning_content, text into content and each tool_use into its own tool_calls index", async () => {
    const exchange = exchangeFor("openai");
    const events = parseSse(feed(new AnthropicToOpenAIStream(clientRequest(true), exchange), ANTHROPIC_EVENTS));
    expect(events.at(-1)?.data).toBe("[DONE]");
    const chunks = events.slice(0, -1).map(jsonOf);
    expect(chunks.every((item) => item.id === "chatcmpl-unit" && item.model === "unit-model")).toBe(true);
    const choices = chunks.map((item) => (item.choices as Json[])[0]);
    expect(choices.map((choice) => choice?.delta)).toEqual([
      { role: "assistant", content: "" },
      { reasoning_content: "hmm" },
      { content: "Hi" },
      { tool_calls: [{ index: 0, id: "toolu_1", type: "function", function: { name: "f", arguments: "" } }] },
      { tool_calls: [{ index: 0, function: { arguments: "" } }] },
      { tool_calls: [{ index: 0, function: { arguments: '{"a"' } }] },
      { tool_calls: [{ index: 0, function: { arguments: ":1}" } }] },
      { tool_calls: [{ index: 1, id: "toolu_2", type: "function", function: { name: "g", arguments: "" } }] },
      { tool_calls: [{ index: 1, function: { arguments: "{}" } }] },
      {},
      undefined,
    ]);
    expect(choices.at(-2)?.finish_reason).toBe("tool_calls");
    // the client asked for usage: null on every chunk, then one usage chunk without choices
    expect(chunks.slice(0, -1).every((item) => item.usage === null)).toBe(true);
    expect(chunks.at(-1)).toMatchObject({
      choices: [],
      usage: {
        prompt_tokens: 15,
        completion_tokens: 7,
        prompt_tokens_details: { cached_tokens: 5 },
        completion_tokens_details: { reasoning_tokens: 3 },
      },
    });
    expect(exchange.usage).toEqual({ input: 15, output: 7, cachedInput: 5, cacheWrite: 0, reasoning: 3 });
    expect(exchange.firstTokenAt).not.toBeNull();

    const completion = await ChatCompletionStream.fromReadableStream(asReadable(events)).finalChatCompletion();
    expect(completion.choices[0]?.message).toMatchObject({
      role: "assistant",
      content: "Hi",
      tool_calls: [
        { id: "toolu_1", type: "function", function: { name: "f", arguments: '{"a":1}' } },
        { id: "toolu_2", type: "function", function: { name: "g", arguments: "{}" } },
      ],
    });
    expect(completion.usage?.prompt_tokens).toBe(15);
  });

  it("closes a tool call that got no input with {} arguments, which the SDK's stream helper parses", async () => {
    const events: Json[] = [
      ANTHROPIC_EVENTS[0] as Json,
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "toolu_a", name: "now", input: {} },
      },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "" } },
      { type: "content_block_stop", index: 0 },
      // no delta at all
      {
        type: "content_block_start",
        index: 1,
        content_block: { type: "tool_use", id: "toolu_b", name: "today", input: {} },
      },
      { type: "content_block_stop", index: 1 },
      // the input whole in the start, as some servers send it
      {
        type: "content_block_start",
        index: 2,
        content_block: { type: "tool_use", id: "toolu_c", name: "at", input: { tz: "UTC" } },
      },
      { type: "content_block_stop", index: 2 },
      { type: "message_delta", delta: { stop_reason: "tool_use", stop_sequence: null }, usage: { output_tokens: 7 } },
      { type: "message_stop" },
    ];
    const sse = parseSse(feed(new AnthropicToOpenAIStream(clientRequest(false), exchangeFor("openai")), events));
    const completion = await ChatCompletionStream.fromReadableStream(asReadable(sse)).finalChatCompletion();
    expect(completion.choices[0]?.message.tool_calls?.map((call) => call.type === "function" && call.function)).toEqual(
      [
        { name: "now", arguments: "{}" },
        { name: "today", arguments: "{}" },
        { name: "at", arguments: '{"tz":"UTC"}' },
      ],
    );
  });

  it("leaves usage out entirely when the client did not ask for it", () => {
    const chunks = parseSse(
      feed(new AnthropicToOpenAIStream(clientRequest(false), exchangeFor("openai")), ANTHROPIC_EVENTS),
    )
      .slice(0, -1)
      .map(jsonOf);
    expect(chunks.some((item) => "usage" in item)).toBe(false);
    expect(chunks.every((item) => (item.choices as Json[]).length === 1)).toBe(true);
  });

  it.each([
    ["max_tokens", "length"],
    ["stop_sequence", "stop"],
    ["refusal", "content_filter"],
  ])("reports stop_reason %s as finish_reason %s", (stopReason, finishReason) => {
    const text = feed(new AnthropicToOpenAIStream(clientRequest(false), exchangeFor("openai")), [
      ANTHROPIC_EVENTS[0] as Json,
      { type: "message_delta", delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: 1 } },
      { type: "message_stop" },
    ]);
    const last = jsonOf(parseSse(text).at(-2));
    expect((last.choices as Json[])[0]?.finish_reason).toBe(finishReason);
  });

  it("leaves a server tool's input out of the client's tool calls (it has no OpenAI counterpart)", async () => {
    const events = parseSse(
      feed(new AnthropicToOpenAIStream(clientRequest(false), exchangeFor("openai")), [
        ANTHROPIC_EVENTS[0] as Json,
        {
          type: "content_block_start",
          index: 0,
          content_block: { type: "server_tool_use", id: "srvtoolu_1", name: "web_search", input: {} },
        },
        { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '{"query":"q"}' } },
        { type: "content_block_stop", index: 0 },
        {
          type: "content_block_start",
          index: 1,
          content_block: { type: "tool_use", id: "toolu_1", name: "get_weather", input: {} },
        },
        {
          type: "content_block_delta",
          index: 1,
          delta: { type: "input_json_delta", partial_json: '{"city":"Paris"}' },
        },
        { type: "content_block_stop", index: 1 },
        { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 9 } },
        { type: "message_stop" },
      ]),
    );
    const completion = await ChatCompletionStream.fromReadableStream(asReadable(events)).finalChatCompletion();
    expect(completion.choices[0]?.message.tool_calls).toEqual([
      { id: "toolu_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
    ]);
  });

  it("ends a failed stream with an OpenAI error chunk and [DONE]", () => {
    const translator = new AnthropicToOpenAIStream(clientRequest(false), exchangeFor("openai"));
    translator.event({ event: "message_start", data: ANTHROPIC_EVENTS[0] as Json });
    const events = parseSse(translator.error(new LetheError("LETHE_UPSTREAM_OVERLOADED", "Busy.")));
    expect(events).toEqual([
      {
        event: null,
        data: {
          error: { message: "Busy.", type: "server_error", param: null, code: "LETHE_UPSTREAM_OVERLOADED" },
        },
      },
      { event: null, data: "[DONE]" },
    ]);
  });
});

describe("AnthropicStreamRelay", () => {
  it("relays events unchanged but for the model, naming each by its type, and meters cumulative usage", async () => {
    const exchange = exchangeFor("anthropic");
    const events = parseSse(
      feed(new AnthropicStreamRelay(clientRequest(true), exchange), structuredClone(ANTHROPIC_EVENTS)),
    );
    const expected = structuredClone(ANTHROPIC_EVENTS);
    ((expected[0] as Json).message as Json).model = "unit-model";
    expect(events.map(jsonOf)).toEqual(expected);
    for (const event of events) expect(jsonOf(event).type).toBe(event.event);
    expect(exchange.usage).toEqual({ input: 15, output: 7, cachedInput: 5, cacheWrite: 0, reasoning: 3 });
    expect(exchange.tokensEstimated).toBe(false);
    expect(exchange.firstTokenAt).not.toBeNull();

    const message = await MessageStream.fromReadableStream(asReadable(events)).finalMessage();
    expect(message.content).toEqual([
      { type: "thinking", thinking: "hmm", signature: "c2ln" },
      { type: "text", text: "Hi" },
      { type: "tool_use", id: "toolu_1", name: "f", input: { a: 1 } },
      { type: "tool_use", id: "toolu_2", name: "g", input: {} },
    ]);
  });

  it("shows the client the count it bills when the supplier's final counts are past any model's reach", async () => {
    const exchange = exchangeFor("anthropic");
    const events = parseSse(
      feed(new AnthropicStreamRelay(clientRequest(true), exchange), [
        {
          type: "message_start",
          message: {
            id: "msg_1",
            type: "message",
            role: "assistant",
            model: "m",
            content: [],
            usage: { input_tokens: 9, output_tokens: 1 },
          },
        },
        { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
        { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "one two three four five" } },
        { type: "content_block_stop", index: 0 },
        { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 4_294_967_295 } },
        { type: "message_stop" },
      ]),
    );
    expect(exchange.tokensEstimated).toBe(true);
    expect(exchange.usage?.input).toBe(9);
    const billed = exchange.usage?.output ?? 0;
    expect(billed).toBeGreaterThan(0);
    expect(billed).toBeLessThan(100);
    const message = await MessageStream.fromReadableStream(asReadable(events)).finalMessage();
    expect(message.usage.output_tokens).toBe(billed);
  });

  it("shows Lethe's estimate, not the supplier's, when message_start counts an input no model could take", () => {
    const exchange = exchangeFor("anthropic");
    const events = parseSse(
      feed(new AnthropicStreamRelay(clientRequest(true), exchange), [
        {
          type: "message_start",
          message: {
            id: "msg_2",
            type: "message",
            role: "assistant",
            model: "m",
            content: [],
            usage: { input_tokens: 5e9, output_tokens: 1 },
          },
        },
        { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 2 } },
        { type: "message_stop" },
      ]),
    );
    expect(JSON.stringify(events)).not.toContain("5000000000");
    const start = jsonOf(events[0]).message as Json;
    expect((start.usage as Json).input_tokens).toBeGreaterThan(0);
    expect((start.usage as Json).input_tokens).toBeLessThan(100);
    expect(exchange.tokensEstimated).toBe(true);
  });

  it("drops an event whose type would break the client's framing (a line break in the event: line)", () => {
    const text = feed(new AnthropicStreamRelay(clientRequest(true), exchangeFor("anthropic")), [
      ANTHROPIC_EVENTS[0] as Json,
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "real" } },
      {
        type: 'x\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" FORGED"}}\n\nevent: y',
        index: 0,
      },
      { type: "some_new_event", index: 0 },
    ]);
    const events = parseSse(text);
    // the supplier's event types reach the client as they are, but none can frame an event of its own
    expect(events.map((event) => event.event)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "some_new_event",
    ]);
    expect(text).not.toContain("FORGED");
  });

  it("ends a failed stream with Anthropic's error event", () => {
    const events = parseSse(
      new AnthropicStreamRelay(clientRequest(true), exchangeFor("anthropic")).error(
        new LetheError("LETHE_UPSTREAM_OVERLOADED", "Busy."),
      ),
    );
    expect(events).toEqual([
      {
        event: "error",
        data: {
          type: "error",
          error: { type: "overloaded_error", message: "Busy.", code: "LETHE_UPSTREAM_OVERLOADED" },
        },
      },
    ]);
  });
});

describe("OpenAIStreamRelay", () => {
  it("counts reasoning sent under both field names once when the supplier reports no usage", () => {
    const once = exchangeFor("openai");
    feed(new OpenAIStreamRelay(clientRequest(false), once), [chunk({ reasoning_content: "pondering deeply" })]);
    const twice = exchangeFor("openai");
    feed(new OpenAIStreamRelay(clientRequest(false), twice), [
      chunk({ reasoning_content: "pondering deeply", reasoning: "pondering deeply" }),
    ]);
    expect(twice.tokensEstimated).toBe(true);
    expect(twice.usage?.output).toBe(once.usage?.output);
    expect(once.usage?.output).toBeGreaterThan(0);
  });

  it("counts the output after a usage sent first on a chunk of no choices, when no final usage follows", () => {
    const exchange = exchangeFor("openai");
    feed(new OpenAIStreamRelay(clientRequest(true), exchange), [
      { ...OPENAI_USAGE, usage: { prompt_tokens: 1234, completion_tokens: 0 } },
      chunk({ content: "one two three four five six seven eight nine ten" }),
      chunk({}, "stop"),
    ]);
    expect(exchange.tokensEstimated).toBe(true);
    expect(exchange.usage).toMatchObject({ input: 1234 });
    expect(exchange.usage?.output).toBeGreaterThan(5);
  });

  it("shows the client the count it bills when the supplier's counts are past any model's reach", () => {
    const exchange = exchangeFor("openai");
    const events = parseSse(
      feed(new OpenAIStreamRelay(clientRequest(true), exchange), [
        chunk({ role: "assistant", content: "" }),
        { ...chunk({ content: "one two three four five" }), usage: { prompt_tokens: 3, completion_tokens: 1e300 } },
        chunk({}, "stop"),
        { ...OPENAI_USAGE, usage: { prompt_tokens: 3, completion_tokens: 1e300 } },
      ]),
    );
    expect(exchange.tokensEstimated).toBe(true);
    const usages = events.flatMap((event) => {
      const usage = event.data === "[DONE]" ? undefined : event.data.usage;
      return usage === undefined || usage === null ? [] : [usage];
    });
    expect(usages).toEqual([
      expect.objectContaining({ prompt_tokens: exchange.usage?.input, completion_tokens: exchange.usage?.output }),
    ]);
    expect(exchange.usage?.output).toBeLessThan(100);
  });
});
