import { EventEmitter, once } from "node:events";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as delay } from "node:timers/promises";

/**
 * A fake OpenAI-compatible supplier: a real HTTP server on loopback that speaks the
 * Chat Completions wire format (JSON and SSE) with synthetic content only. It echoes
 * the last user message so tests can watch content flow, records every request, and
 * misbehaves on demand (error statuses, timeouts, broken streams).
 */

/** Token counts the fake reports, in OpenAI's terms (`prompt` includes `cached`, `completion` includes `reasoning`). */
export interface FakeUsage {
  prompt: number;
  completion: number;
  cached: number;
  reasoning: number;
}

/** What the fake reports unless told otherwise: round numbers so costs are easy to check by hand. */
export const DEFAULT_FAKE_USAGE: FakeUsage = { prompt: 1000, completion: 250, cached: 400, reasoning: 50 };

/**
 * How a streamed answer's events are written: by default each on its own, in one go; a
 * number of milliseconds before each (a model generating: the headers go at once); or
 * `burst`, the whole stream in one write (a buffering proxy, a cached answer), which
 * reaches the gateway in one read.
 */
export type StreamPace = number | "burst";

/** How the fake answers one request. */
export type FakeBehaviour =
  | { kind: "ok"; usage: FakeUsage | null; toolCall: boolean; pace?: StreamPace }
  | { kind: "status"; status: number; body: unknown; headers: Record<string, string> }
  | { kind: "slow-first-byte"; delayMs: number }
  | { kind: "hang-mid-stream"; afterChunks: number }
  | { kind: "reset-mid-stream"; afterChunks: number }
  | { kind: "garbage-chunk"; afterChunks: number }
  | { kind: "stream-error-chunk"; afterChunks: number }
  | { kind: "not-json" }
  | { kind: "oversized"; bytes: number }
  | { kind: "deeply-nested"; afterChunks: number }
  | { kind: "hold-after-done" }
  | { kind: "wrong-shape"; afterChunks: number }
  | { kind: "long-stream"; chunks: number }
  | { kind: "big-event"; bytes: number }
  | { kind: "raw-stream"; events: string[] };

/**
 * Builders for the fake's behaviours. Mid-stream failures strike after `afterChunks` data
 * events: by default 2, the role chunk and the first words ("Echo: ").
 */
export const behaviour = {
  /** A normal answer; `usage: null` leaves usage out entirely. */
  ok(options: { usage?: FakeUsage | null; toolCall?: boolean; pace?: StreamPace } = {}): FakeBehaviour {
    return {
      kind: "ok",
      usage: options.usage === undefined ? DEFAULT_FAKE_USAGE : options.usage,
      toolCall: options.toolCall ?? false,
      ...(options.pace !== undefined && { pace: options.pace }),
    };
  },
  /** A normal answer without any `usage`, so the gateway has to estimate. */
  noUsage(): FakeBehaviour {
    return { kind: "ok", usage: null, toolCall: false };
  },
  /** A non-2xx answer; without `body`, an OpenAI error body that echoes the prompt. */
  status(status: number, body?: unknown, headers: Record<string, string> = {}): FakeBehaviour {
    return { kind: "status", status, body, headers };
  },
  /** Holds the response headers back for `delayMs` (or until the caller gives up). */
  slowFirstByte(delayMs: number): FakeBehaviour {
    return { kind: "slow-first-byte", delayMs };
  },
  /** Sends the start of the answer, then nothing more until the caller gives up. */
  hangMidStream(afterChunks = 2): FakeBehaviour {
    return { kind: "hang-mid-stream", afterChunks };
  },
  /** Sends the start of the answer, then destroys the socket. */
  resetMidStream(afterChunks = 2): FakeBehaviour {
    return { kind: "reset-mid-stream", afterChunks };
  },
  /** Sends `data: not-json` in the middle of the stream (a whole non-JSON body when not streaming). */
  garbageChunk(afterChunks = 2): FakeBehaviour {
    return { kind: "garbage-chunk", afterChunks };
  },
  /** Sends a `data: {"error":{...}}` chunk that echoes the prompt mid-stream (a 200 error body when not streaming). */
  streamErrorChunk(afterChunks = 2): FakeBehaviour {
    return { kind: "stream-error-chunk", afterChunks };
  },
  /** A 200 whose body is not JSON at all. */
  notJson(): FakeBehaviour {
    return { kind: "not-json" };
  },
  /**
   * `bytes` of the prompt's echo: one completion that large, or, streaming, the start of
   * the answer and then an event that never ends (the stream itself ends cleanly).
   */
  oversized(bytes = 256 * 1024): FakeBehaviour {
    return { kind: "oversized", bytes };
  },
  /**
   * A completion (streaming: after `afterChunks` chunks, a chunk) carrying arrays nested
   * 5,000 deep: valid JSON that a recursive walk could not get through.
   */
  deeplyNested(afterChunks = 2): FakeBehaviour {
    return { kind: "deeply-nested", afterChunks };
  },
  /**
   * Valid JSON of the wrong shape: a completion whose `choices` holds null (and no usage);
   * streaming, after `afterChunks` chunks, a tool call that is null, then `choices: [null]`.
   */
  wrongShape(afterChunks = 2): FakeBehaviour {
    return { kind: "wrong-shape", afterChunks };
  },
  /**
   * Streaming: `chunks` content chunks of about 16 KiB, written as fast as the caller reads
   * them (more than socket buffers hold when the caller stops reading), then [DONE].
   */
  longStream(chunks: number): FakeBehaviour {
    return { kind: "long-stream", chunks };
  },
  /** Streaming: one content chunk of about `bytes`, then the usage chunk and [DONE]. */
  bigEvent(bytes: number): FakeBehaviour {
    return { kind: "big-event", bytes };
  },
  /** Streaming: each of `events` as the data of one event, exactly as given (a line break starts another `data:` line), then [DONE]. */
  rawStream(events: string[]): FakeBehaviour {
    return { kind: "raw-stream", events };
  },
  /** A whole stream, [DONE] included, then the response held open until the caller gives up. */
  holdAfterDone(): FakeBehaviour {
    return { kind: "hold-after-done" };
  },
};

const DEEP_NESTING = `${"[".repeat(5000)}${"]".repeat(5000)}`;

/** One request as the fake received it. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body, or the raw text when it was not JSON. */
  body: unknown;
  /** The body's text exactly as it arrived. */
  rawBody: string;
  /** Which TCP connection carried it: equal ids mean a kept-alive connection was reused. */
  connectionId: number;
  /** True when the caller closed the connection before the response ended. */
  aborted: boolean;
}

/** A running fake supplier. */
export interface FakeOpenAISupplier {
  /** Base URL for a supplier config, ending with `/v1`. */
  url: string;
  /** Every request received so far, oldest first. */
  requests: RecordedRequest[];
  /** The behaviour used when the queue is empty (initially `ok`). */
  setBehaviour(next: FakeBehaviour): void;
  /** Behaviours for the next requests, one each, in order. */
  enqueue(...next: FakeBehaviour[]): void;
  /** Empties the queue and says how many behaviours were still waiting (a test expecting 0 catches stray requests). */
  clearQueue(): number;
  /** Resolves with the next request the fake receives. */
  nextRequest(): Promise<RecordedRequest>;
  /** Resolves with the next request the caller abandons (its socket closed before the response ended). */
  nextAbort(): Promise<RecordedRequest>;
  /** How many requests the caller abandoned so far. */
  readonly abortedCount: number;
  /** How many TCP connections were opened to the fake so far. */
  readonly connectionCount: number;
  close(): Promise<void>;
}

// a fixed `created` keeps emitted streams snapshot-stable
const CREATED = 1_700_000_000;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The text of the last user message (string content or text parts), cut short: what the fake echoes. */
function lastUserText(body: unknown): string {
  if (!isObject(body) || !Array.isArray(body.messages)) return "";
  for (let index = body.messages.length - 1; index >= 0; index--) {
    const message: unknown = body.messages[index];
    if (!isObject(message) || message.role !== "user") continue;
    if (typeof message.content === "string") return message.content.slice(0, 200);
    if (Array.isArray(message.content)) {
      const texts = message.content.map((part) => (isObject(part) && typeof part.text === "string" ? part.text : ""));
      return texts.join(" ").slice(0, 200);
    }
  }
  return "";
}

function firstToolName(body: unknown): string {
  if (!isObject(body) || !Array.isArray(body.tools)) return "lookup";
  const tool: unknown = body.tools[0];
  if (isObject(tool) && isObject(tool.function) && typeof tool.function.name === "string") return tool.function.name;
  return "lookup";
}

function openAIUsage(usage: FakeUsage): Record<string, unknown> {
  return {
    prompt_tokens: usage.prompt,
    completion_tokens: usage.completion,
    total_tokens: usage.prompt + usage.completion,
    prompt_tokens_details: { cached_tokens: usage.cached, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: usage.reasoning,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

/** An OpenAI error body whose message echoes the prompt, as real suppliers' validation errors do. */
function echoingError(status: number, echo: string): Record<string, unknown> {
  const type = status === 429 ? "requests" : status >= 500 ? "server_error" : "invalid_request_error";
  return { error: { message: `Fake supplier could not handle: ${echo}`, type, param: null, code: `fake_${status}` } };
}

/** Everything the fake needs to answer one request. */
interface Answer {
  id: string;
  model: string;
  echo: string;
  toolName: string;
  includeUsage: boolean;
}

/** What a successful answer holds besides the echo. */
interface AnswerShape {
  usage: FakeUsage | null;
  toolCall: boolean;
}

const PLAIN_ANSWER: AnswerShape = { usage: DEFAULT_FAKE_USAGE, toolCall: false };

/** The SSE data events of a complete streamed answer, before `[DONE]`. */
function streamChunks(answer: Answer, shape: AnswerShape): string[] {
  const base = { id: answer.id, object: "chat.completion.chunk", created: CREATED, model: answer.model };
  // OpenAI puts `usage: null` on every chunk when the caller asked for usage
  const usageField = answer.includeUsage ? { usage: null } : {};
  const chunk = (delta: Record<string, unknown>, finishReason: string | null) =>
    JSON.stringify({
      ...base,
      system_fingerprint: "fp_fake",
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      ...usageField,
    });
  const chunks = [chunk({ role: "assistant", content: shape.toolCall ? null : "", refusal: null }, null)];
  if (shape.toolCall) {
    const argumentsText = JSON.stringify({ query: answer.echo });
    const half = Math.floor(argumentsText.length / 2);
    chunks.push(
      chunk(
        {
          tool_calls: [
            { index: 0, id: "call_fake", type: "function", function: { name: answer.toolName, arguments: "" } },
          ],
        },
        null,
      ),
      chunk({ tool_calls: [{ index: 0, function: { arguments: argumentsText.slice(0, half) } }] }, null),
      chunk({ tool_calls: [{ index: 0, function: { arguments: argumentsText.slice(half) } }] }, null),
      chunk({}, "tool_calls"),
    );
  } else {
    for (const word of `Echo: ${answer.echo}`.split(/(?<= )/)) chunks.push(chunk({ content: word }, null));
    chunks.push(chunk({}, "stop"));
  }
  // the usage chunk exists only when asked for, and only when this fake reports usage at all
  if (answer.includeUsage && shape.usage !== null) {
    chunks.push(
      JSON.stringify({
        ...base,
        system_fingerprint: "fp_fake",
        choices: [],
        usage: openAIUsage(shape.usage),
      }),
    );
  }
  return chunks;
}

/** A complete non-streaming `chat.completion`. */
function completion(answer: Answer, shape: AnswerShape): string {
  const message = shape.toolCall
    ? {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_fake",
            type: "function",
            function: { name: answer.toolName, arguments: JSON.stringify({ query: answer.echo }) },
          },
        ],
        refusal: null,
        annotations: [],
      }
    : { role: "assistant", content: `Echo: ${answer.echo}`, refusal: null, annotations: [] };
  return JSON.stringify({
    id: answer.id,
    object: "chat.completion",
    created: CREATED,
    model: answer.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: shape.toolCall ? "tool_calls" : "stop" }],
    ...(shape.usage === null ? {} : { usage: openAIUsage(shape.usage) }),
    service_tier: "default",
    system_fingerprint: "fp_fake",
  });
}

/** Writes a whole SSE answer: every chunk, then OpenAI's `[DONE]`. */
function writeStream(response: ServerResponse, headers: Record<string, string>, chunks: string[]): void {
  response.writeHead(200, headers);
  for (const chunk of chunks) response.write(`data: ${chunk}\n\n`);
  response.end("data: [DONE]\n\n");
}

/** Starts the fake on 127.0.0.1 with an ephemeral port. */
export async function startFakeOpenAISupplier(): Promise<FakeOpenAISupplier> {
  const events = new EventEmitter();
  const requests: RecordedRequest[] = [];
  const queue: FakeBehaviour[] = [];
  const connectionIds = new WeakMap<Socket, number>();
  let fallback: FakeBehaviour = behaviour.ok();
  let connectionCount = 0;
  let abortedCount = 0;
  let answered = 0;

  async function readBody(request: IncomingMessage): Promise<{ body: unknown; rawBody: string }> {
    const parts: Buffer[] = [];
    for await (const part of request) parts.push(part as Buffer);
    const rawBody = Buffer.concat(parts).toString("utf8");
    try {
      return { body: JSON.parse(rawBody) as unknown, rawBody };
    } catch {
      return { body: rawBody, rawBody };
    }
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { body, rawBody } = await readBody(request);
    const recorded: RecordedRequest = {
      method: request.method ?? "",
      path: request.url ?? "",
      headers: request.headers,
      body,
      rawBody,
      connectionId: connectionIds.get(request.socket) ?? 0,
      aborted: false,
    };
    requests.push(recorded);
    // a reset the fake itself causes is not the caller giving up
    let resetByFake = false;
    response.on("close", () => {
      if (response.writableFinished || resetByFake) return;
      recorded.aborted = true;
      abortedCount++;
      events.emit("abort", recorded);
    });
    events.emit("request", recorded);

    const current = queue.shift() ?? fallback;
    const stream = isObject(body) && body.stream === true;
    const answer: Answer = {
      id: `chatcmpl-fake${++answered}`,
      model: isObject(body) && typeof body.model === "string" ? body.model : "unknown",
      echo: lastUserText(body),
      toolName: firstToolName(body),
      includeUsage: isObject(body) && isObject(body.stream_options) && body.stream_options.include_usage === true,
    };
    const jsonHeaders = { "content-type": "application/json", "x-request-id": `req_fake${answered}` };
    const sseHeaders = { "content-type": "text/event-stream; charset=utf-8", "x-request-id": `req_fake${answered}` };

    switch (current.kind) {
      case "ok": {
        const pace = current.pace;
        if (stream && pace === "burst") {
          const events = streamChunks(answer, current).map((chunk) => `data: ${chunk}\n\n`);
          response.writeHead(200, sseHeaders).end(`${events.join("")}data: [DONE]\n\n`);
        } else if (stream && typeof pace === "number") {
          // the headers at once, then each event `pace` ms after the one before (the first too)
          response.writeHead(200, sseHeaders);
          response.flushHeaders();
          for (const chunk of streamChunks(answer, current)) {
            await delay(pace);
            response.write(`data: ${chunk}\n\n`);
          }
          response.end("data: [DONE]\n\n");
        } else if (stream) {
          writeStream(response, sseHeaders, streamChunks(answer, current));
        } else {
          response.writeHead(200, jsonHeaders).end(completion(answer, current));
        }
        return;
      }
      case "status":
        response
          .writeHead(current.status, { "content-type": "application/json", ...current.headers })
          .end(JSON.stringify(current.body ?? echoingError(current.status, answer.echo)));
        return;
      case "not-json":
        response.writeHead(200, jsonHeaders).end(`<html>Fake gateway page: ${answer.echo}</html>`);
        return;
      case "oversized": {
        const filler = answer.echo.repeat(Math.ceil(current.bytes / Math.max(1, answer.echo.length)));
        if (stream) {
          response.writeHead(200, sseHeaders);
          for (const chunk of streamChunks(answer, PLAIN_ANSWER).slice(0, 2)) response.write(`data: ${chunk}\n\n`);
          response.end(`data: {"choices":[{"index":0,"delta":{"content":${JSON.stringify(filler)}`);
        } else {
          response.writeHead(200, jsonHeaders).end(completion({ ...answer, echo: filler }, PLAIN_ANSWER));
        }
        return;
      }
      case "raw-stream":
        writeStream(
          response,
          sseHeaders,
          current.events.map((event) => event.replaceAll("\n", "\ndata: ")),
        );
        return;
      case "hold-after-done":
        response.writeHead(200, sseHeaders);
        for (const chunk of streamChunks(answer, PLAIN_ANSWER)) response.write(`data: ${chunk}\n\n`);
        response.write("data: [DONE]\n\n");
        return;
      case "deeply-nested":
        if (stream) {
          response.writeHead(200, sseHeaders);
          for (const chunk of streamChunks(answer, PLAIN_ANSWER).slice(0, current.afterChunks)) {
            response.write(`data: ${chunk}\n\n`);
          }
          response.end(`data: {"choices":[],"nested":${DEEP_NESTING}}\n\ndata: [DONE]\n\n`);
        } else {
          const body = completion(answer, PLAIN_ANSWER);
          response.writeHead(200, jsonHeaders).end(`${body.slice(0, -1)},"nested":${DEEP_NESTING}}`);
        }
        return;
      case "long-stream": {
        response.writeHead(200, sseHeaders);
        const piece = JSON.stringify({
          id: answer.id,
          object: "chat.completion.chunk",
          choices: [{ index: 0, delta: { content: "lorem ipsum ".repeat(1365) }, finish_reason: null }],
        });
        for (let index = 0; index < current.chunks && !response.destroyed; index++) {
          if (response.write(`data: ${piece}\n\n`)) continue;
          // the caller may leave while this waits: close ends the wait too
          await new Promise((resolve) => {
            response.once("drain", resolve);
            response.once("close", resolve);
          });
        }
        if (!response.destroyed) response.end("data: [DONE]\n\n");
        return;
      }
      case "big-event": {
        response.writeHead(200, sseHeaders);
        // 15 UTF-16 units a round, a surrogate pair among them: slices of the event fall everywhere in it
        const content = "é lorem ipsu 🙂".repeat(Math.ceil(current.bytes / 18));
        response.write(`data: ${JSON.stringify({ id: answer.id, choices: [{ index: 0, delta: { content } }] })}\n\n`);
        response.write(
          `data: ${JSON.stringify({ id: answer.id, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\n`,
        );
        response.end("data: [DONE]\n\n");
        return;
      }
      case "wrong-shape":
        if (stream) {
          response.writeHead(200, sseHeaders);
          for (const chunk of streamChunks(answer, PLAIN_ANSWER).slice(0, current.afterChunks)) {
            response.write(`data: ${chunk}\n\n`);
          }
          response.write(`data: {"id":"${answer.id}","choices":[{"index":0,"delta":{"tool_calls":[null]}}]}\n\n`);
          response.end(`data: {"id":"${answer.id}","choices":[null]}\n\ndata: [DONE]\n\n`);
        } else {
          response.writeHead(200, jsonHeaders).end(`{"id":"${answer.id}","object":"chat.completion","choices":[null]}`);
        }
        return;
      case "slow-first-byte": {
        const timer = setTimeout(() => {
          if (response.destroyed) return;
          if (stream) writeStream(response, sseHeaders, streamChunks(answer, PLAIN_ANSWER));
          else response.writeHead(200, jsonHeaders).end(completion(answer, PLAIN_ANSWER));
        }, current.delayMs);
        response.on("close", () => clearTimeout(timer));
        return;
      }
      case "garbage-chunk":
      case "stream-error-chunk":
        if (stream) {
          response.writeHead(200, sseHeaders);
          for (const chunk of streamChunks(answer, PLAIN_ANSWER).slice(0, current.afterChunks)) {
            response.write(`data: ${chunk}\n\n`);
          }
          const failure =
            current.kind === "garbage-chunk" ? "not-json" : JSON.stringify(echoingError(500, answer.echo));
          response.end(`data: ${failure}\n\ndata: [DONE]\n\n`);
        } else if (current.kind === "garbage-chunk") {
          response.writeHead(200, jsonHeaders).end("not-json");
        } else {
          response.writeHead(200, jsonHeaders).end(JSON.stringify(echoingError(500, answer.echo)));
        }
        return;
      case "hang-mid-stream":
      case "reset-mid-stream": {
        let start: string;
        if (stream) {
          response.writeHead(200, sseHeaders);
          const chunks = streamChunks(answer, PLAIN_ANSWER).slice(0, current.afterChunks);
          start = chunks.map((chunk) => `data: ${chunk}\n\n`).join("");
        } else {
          // half a JSON body under a content-length that promises all of it
          const text = completion(answer, PLAIN_ANSWER);
          response.writeHead(200, { ...jsonHeaders, "content-length": String(Buffer.byteLength(text)) });
          start = text.slice(0, Math.floor(text.length / 2));
        }
        if (current.kind === "hang-mid-stream") {
          response.write(start);
          return;
        }
        resetByFake = true;
        // destroy only once the start reached the socket, or the caller would see no answer at all
        response.write(start, () => request.socket.destroy());
        return;
      }
    }
  }

  const server = createServer((request, response) => {
    handle(request, response).catch(() => response.destroy());
  });
  server.on("connection", (socket: Socket) => {
    connectionIds.set(socket, ++connectionCount);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    setBehaviour(next) {
      fallback = next;
    },
    enqueue(...next) {
      queue.push(...next);
    },
    clearQueue() {
      return queue.splice(0).length;
    },
    async nextRequest() {
      const [recorded] = (await once(events, "request")) as [RecordedRequest];
      return recorded;
    },
    async nextAbort() {
      const [recorded] = (await once(events, "abort")) as [RecordedRequest];
      return recorded;
    },
    get abortedCount() {
      return abortedCount;
    },
    get connectionCount() {
      return connectionCount;
    },
    async close() {
      // hung responses would keep close() waiting forever
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
