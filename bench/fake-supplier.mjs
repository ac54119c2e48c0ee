// A minimal supplier for the benchmark. It answers OpenAI's
// `POST /v1/chat/completions` and Anthropic's `POST /v1/messages` instantly with a
// fixed answer (the same text and token counts in both formats), so whatever the
// bench measures on top of it is the cost of the client, the network stack and
// whatever sits in between (Lethe, or the bare proxy).
//
// Run as a child process: `node bench/fake-supplier.mjs [port]` prints one JSON
// line `{"port":N}` on stdout once it listens on 127.0.0.1.
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";

const CREATED = 1_700_000_000;
const MODEL = "fake-model";
const USAGE = { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 };

/** The whole non-streaming answer, serialised once: answering costs no JSON work. */
const COMPLETION = Buffer.from(
  JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion",
    created: CREATED,
    model: MODEL,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: "Hello from the fake supplier." },
        finish_reason: "stop",
      },
    ],
    usage: USAGE,
  }),
);

function chunk(delta, finishReason) {
  return {
    id: "chatcmpl-bench",
    object: "chat.completion.chunk",
    created: CREATED,
    model: MODEL,
    choices: [{ index: 0, delta, finish_reason: finishReason }],
  };
}

function sseEvent(data) {
  return `data: ${JSON.stringify(data)}\n\n`;
}

/** The chunks every stream carries: the role, the text in three pieces, the finish. */
const STREAM_CHUNKS = [
  chunk({ role: "assistant", content: "" }, null),
  chunk({ content: "Hello" }, null),
  chunk({ content: " from the fake" }, null),
  chunk({ content: " supplier." }, null),
  chunk({}, "stop"),
]
  .map(sseEvent)
  .join("");
const USAGE_CHUNK = sseEvent({
  id: "chatcmpl-bench",
  object: "chat.completion.chunk",
  created: CREATED,
  model: MODEL,
  choices: [],
  usage: USAGE,
});
const DONE = "data: [DONE]\n\n";

// like OpenAI, the usage chunk is sent only when the client asks for it
const STREAM_WITH_USAGE = Buffer.from(STREAM_CHUNKS + USAGE_CHUNK + DONE);
const STREAM_WITHOUT_USAGE = Buffer.from(STREAM_CHUNKS + DONE);

// ---------------------------------------------------------------------------
// Anthropic's Messages API: the same answer, in Anthropic's shapes.

const ANTHROPIC_MESSAGE_ID = "msg_01FakeSupplierBench";
const ANTHROPIC_MODEL = "fake-anthropic-model";
const ANTHROPIC_USAGE = { input_tokens: USAGE.prompt_tokens, output_tokens: USAGE.completion_tokens };

const MESSAGE = Buffer.from(
  JSON.stringify({
    id: ANTHROPIC_MESSAGE_ID,
    type: "message",
    role: "assistant",
    model: ANTHROPIC_MODEL,
    content: [{ type: "text", text: "Hello from the fake supplier." }],
    stop_reason: "end_turn",
    stop_sequence: null,
    usage: ANTHROPIC_USAGE,
  }),
);

function anthropicEvent(data) {
  return `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Anthropic's event sequence for one text block, as its API sends it. */
const MESSAGE_STREAM = Buffer.from(
  [
    {
      type: "message_start",
      message: {
        id: ANTHROPIC_MESSAGE_ID,
        type: "message",
        role: "assistant",
        model: ANTHROPIC_MODEL,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: ANTHROPIC_USAGE.input_tokens, output_tokens: 1 },
      },
    },
    { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
    { type: "ping" },
    { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello" } },
    { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " from the fake" } },
    { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " supplier." } },
    { type: "content_block_stop", index: 0 },
    {
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { output_tokens: ANTHROPIC_USAGE.output_tokens },
    },
    { type: "message_stop" },
  ]
    .map(anthropicEvent)
    .join(""),
);

const LONG_STREAM_EVENT = Buffer.from(sseEvent(chunk({ content: " token" }, null)));
const LONG_STREAM_END = sseEvent(chunk({}, "stop"));

/**
 * A long answer as a model streams it (stream-bench.mjs asks for it with a `bench_events`
 * field, which Lethe passes through): every event in its own write, a turn of the event
 * loop apart, so each reaches the proxy as its own network read, as tokens do.
 */
async function sendLongStream(response, events, withUsage) {
  response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  response.write(sseEvent(chunk({ role: "assistant", content: "" }, null)));
  for (let index = 0; index < events; index++) {
    if (response.destroyed) return;
    if (!response.write(LONG_STREAM_EVENT)) await new Promise((resolve) => response.once("drain", resolve));
    else await new Promise(setImmediate);
  }
  const usage = { prompt_tokens: 12, completion_tokens: events, total_tokens: 12 + events };
  const usageChunk = withUsage ? sseEvent({ ...chunk({}, null), choices: [], usage }) : "";
  response.end(LONG_STREAM_END + usageChunk + DONE);
}

/** Reads the whole request body; the supplier needs `stream` and `stream_options` from it. */
async function readBody(request) {
  const parts = [];
  for await (const part of request) parts.push(part);
  return Buffer.concat(parts).toString("utf8");
}

function sendJson(response, status, buffer) {
  response.writeHead(status, { "content-type": "application/json", "content-length": buffer.length });
  response.end(buffer);
}

function sendError(response, status, message) {
  sendJson(response, status, Buffer.from(JSON.stringify({ error: { message, type: "invalid_request_error" } })));
}

function sendAnthropicError(response, status, type, message) {
  sendJson(response, status, Buffer.from(JSON.stringify({ type: "error", error: { type, message } })));
}

/** `POST /v1/messages`: like Anthropic, it refuses a request without `anthropic-version`. */
async function answerMessages(request, response) {
  let body;
  try {
    body = JSON.parse(await readBody(request));
  } catch {
    sendAnthropicError(response, 400, "invalid_request_error", "body is not JSON");
    return;
  }
  if (request.headers["anthropic-version"] === undefined) {
    sendAnthropicError(response, 400, "invalid_request_error", "anthropic-version: header is required");
    return;
  }
  if (body?.stream !== true) {
    sendJson(response, 200, MESSAGE);
    return;
  }
  response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  response.end(MESSAGE_STREAM);
}

async function answer(request, response) {
  if (request.method === "POST" && request.url === "/v1/messages") {
    await answerMessages(request, response);
    return;
  }
  if (request.method !== "POST" || request.url !== "/v1/chat/completions") {
    sendError(response, 404, "not found");
    return;
  }
  let body;
  try {
    body = JSON.parse(await readBody(request));
  } catch {
    sendError(response, 400, "body is not JSON");
    return;
  }
  if (body?.stream !== true) {
    sendJson(response, 200, COMPLETION);
    return;
  }
  if (Number.isInteger(body.bench_events) && body.bench_events > 0) {
    await sendLongStream(response, body.bench_events, body.stream_options?.include_usage === true);
    return;
  }
  const stream = body.stream_options?.include_usage === true ? STREAM_WITH_USAGE : STREAM_WITHOUT_USAGE;
  // one write for the whole stream: the supplier is "instant", so every byte is ready at once
  response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  response.end(stream);
}

/** Starts the fake supplier on 127.0.0.1; resolves with the server and its port. */
export async function startFakeSupplier(port = 0) {
  const server = createServer({ keepAliveTimeout: 60_000 }, (request, response) => {
    answer(request, response).catch(() => response.destroy());
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, port: server.address().port };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { port } = await startFakeSupplier(Number(process.argv[2] ?? 0));
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}
