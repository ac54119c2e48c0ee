import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A fake Anthropic supplier: a real HTTP server on loopback that speaks the Messages
 * API (JSON and SSE, in Anthropic's exact event sequence) with synthetic content only.
 * It echoes the last user turn, validates what Anthropic itself would reject (missing
 * max_tokens, unpaired tool_use / tool_result), honours stop_sequences and max_tokens
 * (one word = one token), records every request, and fails on demand.
 */

/** Token counts in Anthropic's terms: `input` excludes both cache counts; `thinking` is part of `output`. */
export interface FakeAnthropicUsage {
  input: number;
  output: number;
  cacheRead: number;
  cacheCreation: number;
  /** Reported as `output_tokens_details.thinking_tokens`, only when the request enabled thinking. */
  thinking: number;
}

/** What the fake reports unless told otherwise: Lethe should meter 1000 input tokens, 400 of them cached. */
export const DEFAULT_ANTHROPIC_USAGE: FakeAnthropicUsage = {
  input: 500,
  output: 250,
  cacheRead: 400,
  cacheCreation: 100,
  thinking: 50,
};

/** What `POST /v1/messages/count_tokens` answers: a number no local estimate would produce. */
export const FAKE_COUNT_TOKENS = 4321;

/** The signature the fake puts on its thinking blocks. */
export const FAKE_SIGNATURE = "RmFrZVNpZ25hdHVyZUZvclRoaW5raW5nQmxvY2s=";

/** How the fake answers one request. */
export type FakeAnthropicBehaviour =
  | { kind: "ok"; usage: FakeAnthropicUsage; toolCall: boolean }
  | { kind: "status"; status: number; body: unknown; headers: Record<string, string> }
  | { kind: "error-event"; afterEvents: number; errorType: string }
  | { kind: "reset-mid-stream"; afterEvents: number }
  | { kind: "raw-stream"; text: string };

/**
 * Builders for the fake's behaviours. Mid-stream failures strike after `afterEvents`
 * SSE events: by default 4, that is message_start, content_block_start, ping and the
 * first delta.
 */
export const anthropicBehaviour = {
  /** A normal answer; `toolCall` makes it a short text block and a tool_use block. */
  ok(options: { usage?: FakeAnthropicUsage; toolCall?: boolean } = {}): FakeAnthropicBehaviour {
    return { kind: "ok", usage: options.usage ?? DEFAULT_ANTHROPIC_USAGE, toolCall: options.toolCall ?? false };
  },
  /** A non-2xx answer; without `body`, an Anthropic error body that echoes the prompt; a string body is sent as it is. */
  status(status: number, body?: unknown, headers: Record<string, string> = {}): FakeAnthropicBehaviour {
    return { kind: "status", status, body, headers };
  },
  /** Anthropic's 529 `overloaded_error`, its message echoing the prompt. */
  overloaded(): FakeAnthropicBehaviour {
    return { kind: "status", status: 529, body: undefined, headers: {} };
  },
  /** Starts streaming, then sends an `event: error` whose message echoes the prompt. */
  errorEvent(afterEvents = 4, errorType = "api_error"): FakeAnthropicBehaviour {
    return { kind: "error-event", afterEvents, errorType };
  },
  /** Streaming: `text` as the whole event stream, exactly as given. */
  rawStream(text: string): FakeAnthropicBehaviour {
    return { kind: "raw-stream", text };
  },
  /** Starts streaming, then destroys the socket. */
  resetMidStream(afterEvents = 4): FakeAnthropicBehaviour {
    return { kind: "reset-mid-stream", afterEvents };
  },
};

/** One request as the fake received it. */
export interface AnthropicRecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body, or the raw text when it was not JSON. */
  body: unknown;
  /** The body's text exactly as it arrived. */
  rawBody: string;
}

/** A running fake Anthropic supplier. */
export interface FakeAnthropicSupplier {
  /** Base URL for a supplier config, without `/v1` (as Anthropic's own is given). */
  url: string;
  /** Every request received so far, oldest first. */
  requests: AnthropicRecordedRequest[];
  /** The most recent request; throws when there was none. */
  lastRequest(): AnthropicRecordedRequest;
  /** The behaviour used when the queue is empty (initially `ok`). */
  setBehaviour(next: FakeAnthropicBehaviour): void;
  /** Behaviours for the next requests, one each, in order. */
  enqueue(...next: FakeAnthropicBehaviour[]): void;
  /** Empties the queue and says how many behaviours were still waiting (a test expecting 0 catches stray requests). */
  clearQueue(): number;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function blocksOf(content: unknown): Json[] {
  if (typeof content === "string") return [{ type: "text", text: content }];
  return Array.isArray(content) ? content.filter(isObject) : [];
}

/** The text of the last user turn (text blocks and tool results), cut short: what the fake echoes. */
function lastUserText(body: Json): string {
  const messages = Array.isArray(body.messages) ? body.messages.filter(isObject) : [];
  for (let index = messages.length - 1; index >= 0; index--) {
    const message = messages[index] as Json;
    if (message.role !== "user") continue;
    const texts: string[] = [];
    for (const block of blocksOf(message.content)) {
      if (block.type === "text" && typeof block.text === "string") texts.push(block.text);
      if (block.type === "tool_result") {
        for (const inner of blocksOf(block.content)) if (typeof inner.text === "string") texts.push(inner.text);
      }
    }
    return texts.join(" ").slice(0, 200);
  }
  return "";
}

function firstToolName(body: Json): string {
  const tool: unknown = Array.isArray(body.tools) ? body.tools[0] : undefined;
  return isObject(tool) && typeof tool.name === "string" ? tool.name : "lookup";
}

function anthropicError(type: string, message: string): Json {
  return { type: "error", error: { type, message }, request_id: "req_fakeanthropic" };
}

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  500: "api_error",
  529: "overloaded_error",
};

/** An Anthropic error body whose message echoes the prompt, as real validation errors quote the input. */
function echoingError(status: number, echo: string): Json {
  return anthropicError(ERROR_TYPES[status] ?? "api_error", `Fake Anthropic could not handle: ${echo}`);
}

/** A text block Anthropic refuses: empty or whitespace only. */
function isBlankText(block: unknown): boolean {
  return isObject(block) && block.type === "text" && (typeof block.text !== "string" || block.text.trim() === "");
}

/**
 * What Anthropic itself rejects and a translator could get wrong; the messages are
 * fixed text, never the input. Returns null when the request is acceptable.
 */
function validationProblem(body: unknown, countOnly: boolean): string | null {
  if (!isObject(body)) return "The request body must be a JSON object.";
  if (typeof body.model !== "string" || body.model === "") return "model: Field required";
  if (!countOnly && !(Number.isInteger(body.max_tokens) && (body.max_tokens as number) > 0)) {
    return "max_tokens: Field required";
  }
  if (body.system !== undefined && typeof body.system !== "string" && !Array.isArray(body.system)) {
    return "system: Input should be a valid string or list";
  }
  if (Array.isArray(body.system) && body.system.some((block) => isBlankText(block))) {
    return "system: text content blocks must be non-empty";
  }
  if (isObject(body.tool_choice) && body.tool_choice.type === "none" && Object.keys(body.tool_choice).length > 1) {
    return "tool_choice.none: Extra inputs are not permitted";
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0) return "messages: at least one message is required";
  const messages = body.messages as unknown[];
  const first = messages.find((message) => !isObject(message) || message.role !== "system");
  if (!isObject(first) || first.role !== "user") return "messages: the first message must use the user role";
  for (let index = 0; index < messages.length; index++) {
    const message = messages[index];
    if (!isObject(message) || !["user", "assistant", "system"].includes(String(message.role))) {
      return `messages.${index}.role: Input should be 'user' or 'assistant'`;
    }
    for (const block of blocksOf(message.content)) {
      if (isBlankText(block)) return "messages: text content blocks must be non-empty";
      if (block.type === "image") {
        const source = isObject(block.source) ? block.source : {};
        const valid =
          (source.type === "base64" && typeof source.media_type === "string" && typeof source.data === "string") ||
          (source.type === "url" && typeof source.url === "string");
        if (!valid) return `messages.${index}.content: invalid image source`;
      }
    }
    // every tool_use must be answered by a tool_result in the very next (user) turn
    const toolUseIds = blocksOf(message.content)
      .filter((block) => message.role === "assistant" && block.type === "tool_use")
      .map((block) => block.id);
    if (toolUseIds.length === 0) continue;
    const next = messages[index + 1];
    const answered = isObject(next) && next.role === "user" ? blocksOf(next.content) : [];
    const resultIds = answered.filter((block) => block.type === "tool_result").map((block) => block.tool_use_id);
    if (toolUseIds.some((id) => !resultIds.includes(id))) {
      return `messages.${index + 1}: tool_use ids were found without tool_result blocks immediately after`;
    }
    const firstOther = answered.findIndex((block) => block.type !== "tool_result");
    const lastResult = answered.findLastIndex((block) => block.type === "tool_result");
    if (firstOther !== -1 && firstOther < lastResult) {
      return `messages.${index + 1}: tool_result blocks must come first in the user turn`;
    }
  }
  return null;
}

type PlannedBlock =
  | { type: "thinking"; thinking: string; signature: string }
  | { type: "text"; text: string }
  | { type: "tool_use"; id: string; name: string; input: Json };

/** One answer, before it is rendered as JSON or as events. */
interface PlannedAnswer {
  id: string;
  model: string;
  blocks: PlannedBlock[];
  stopReason: string;
  stopSequence: string | null;
  usage: Json;
}

function words(text: string): string[] {
  return text.split(/(?<= )/).filter((word) => word !== "");
}

/** Cuts the echo at the first stop sequence, then at max_tokens words, as a model would stop. */
function planText(text: string, body: Json): { text: string; stopReason: string; stopSequence: string | null } {
  let out = text;
  let stopReason = "end_turn";
  let stopSequence: string | null = null;
  let cut = -1;
  for (const sequence of Array.isArray(body.stop_sequences) ? body.stop_sequences : []) {
    if (typeof sequence !== "string" || sequence === "") continue;
    const at = out.indexOf(sequence);
    if (at !== -1 && (cut === -1 || at < cut)) {
      cut = at;
      stopSequence = sequence;
    }
  }
  if (stopSequence !== null) {
    out = out.slice(0, cut);
    stopReason = "stop_sequence";
  }
  const limit = typeof body.max_tokens === "number" ? body.max_tokens : Number.POSITIVE_INFINITY;
  if (words(out).length > limit) {
    out = words(out).slice(0, limit).join("");
    stopReason = "max_tokens";
    stopSequence = null;
  }
  return { text: out, stopReason, stopSequence };
}

function planAnswer(
  body: Json,
  shape: { usage: FakeAnthropicUsage; toolCall: boolean },
  sequence: number,
): PlannedAnswer {
  const echo = lastUserText(body);
  const thinking = isObject(body.thinking) && body.thinking.type !== "disabled";
  const blocks: PlannedBlock[] = [];
  if (thinking) blocks.push({ type: "thinking", thinking: `Considering: ${echo}`, signature: FAKE_SIGNATURE });
  let stopReason: string;
  let stopSequence: string | null = null;
  let output = shape.usage.output;
  if (shape.toolCall) {
    blocks.push(
      { type: "text", text: "Let me look that up." },
      { type: "tool_use", id: "toolu_fake01", name: firstToolName(body), input: { query: echo } },
    );
    stopReason = "tool_use";
  } else {
    const planned = planText(`Echo: ${echo}`, body);
    blocks.push({ type: "text", text: planned.text });
    stopReason = planned.stopReason;
    stopSequence = planned.stopSequence;
    if (stopReason === "max_tokens") output = body.max_tokens as number;
  }
  const usage: Json = {
    input_tokens: shape.usage.input,
    cache_creation_input_tokens: shape.usage.cacheCreation,
    cache_read_input_tokens: shape.usage.cacheRead,
    output_tokens: output,
  };
  if (thinking) usage.output_tokens_details = { thinking_tokens: shape.usage.thinking };
  return {
    id: `msg_fake${sequence}`,
    model: typeof body.model === "string" ? body.model : "unknown",
    blocks,
    stopReason,
    stopSequence,
    usage,
  };
}

function message(answer: PlannedAnswer): string {
  return JSON.stringify({
    id: answer.id,
    type: "message",
    role: "assistant",
    model: answer.model,
    content: answer.blocks,
    stop_reason: answer.stopReason,
    stop_sequence: answer.stopSequence,
    usage: answer.usage,
  });
}

function sse(type: string, data: Json): string {
  return `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

function halves(text: string): string[] {
  const half = Math.floor(text.length / 2);
  return [text.slice(0, half), text.slice(half)];
}

/** Anthropic's event sequence for an answer: each string is one complete SSE event. */
function events(answer: PlannedAnswer): string[] {
  const usage = answer.usage;
  const out = [
    sse("message_start", {
      type: "message_start",
      message: {
        id: answer.id,
        type: "message",
        role: "assistant",
        model: answer.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: {
          input_tokens: usage.input_tokens,
          cache_creation_input_tokens: usage.cache_creation_input_tokens,
          cache_read_input_tokens: usage.cache_read_input_tokens,
          output_tokens: 1,
        },
      },
    }),
  ];
  answer.blocks.forEach((block, index) => {
    const delta = (payload: Json) => sse("content_block_delta", { type: "content_block_delta", index, delta: payload });
    const start = (contentBlock: Json) =>
      sse("content_block_start", { type: "content_block_start", index, content_block: contentBlock });
    if (block.type === "thinking") {
      out.push(start({ type: "thinking", thinking: "" }));
      if (index === 0) out.push(sse("ping", { type: "ping" }));
      for (const piece of halves(block.thinking)) out.push(delta({ type: "thinking_delta", thinking: piece }));
      out.push(delta({ type: "signature_delta", signature: block.signature }));
    } else if (block.type === "text") {
      out.push(start({ type: "text", text: "" }));
      if (index === 0) out.push(sse("ping", { type: "ping" }));
      for (const word of words(block.text)) out.push(delta({ type: "text_delta", text: word }));
    } else {
      out.push(start({ type: "tool_use", id: block.id, name: block.name, input: {} }));
      if (index === 0) out.push(sse("ping", { type: "ping" }));
      // Anthropic opens every tool input with an empty partial_json
      out.push(delta({ type: "input_json_delta", partial_json: "" }));
      for (const piece of halves(JSON.stringify(block.input))) {
        out.push(delta({ type: "input_json_delta", partial_json: piece }));
      }
    }
    out.push(sse("content_block_stop", { type: "content_block_stop", index }));
  });
  out.push(
    sse("message_delta", {
      type: "message_delta",
      delta: { stop_reason: answer.stopReason, stop_sequence: answer.stopSequence },
      // the counters of message_delta are cumulative totals for the whole message
      usage,
    }),
    sse("message_stop", { type: "message_stop" }),
  );
  return out;
}

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

/** Starts the fake on 127.0.0.1 with an ephemeral port. */
export async function startFakeAnthropicSupplier(): Promise<FakeAnthropicSupplier> {
  const requests: AnthropicRecordedRequest[] = [];
  const queue: FakeAnthropicBehaviour[] = [];
  let fallback: FakeAnthropicBehaviour = anthropicBehaviour.ok();
  let answered = 0;

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const { body, rawBody } = await readBody(request);
    const path = request.url ?? "";
    requests.push({ method: request.method ?? "", path, headers: request.headers, body, rawBody });
    const jsonHeaders = { "content-type": "application/json", "request-id": `req_fake${++answered}` };
    const sendJson = (status: number, payload: unknown) =>
      response.writeHead(status, jsonHeaders).end(JSON.stringify(payload));

    const countOnly = path === "/v1/messages/count_tokens";
    if (request.method !== "POST" || (path !== "/v1/messages" && !countOnly)) {
      sendJson(404, anthropicError("not_found_error", "Not found"));
      return;
    }
    const current = queue.shift() ?? fallback;
    const json = isObject(body) ? body : {};
    const echo = lastUserText(json);
    if (current.kind === "status") {
      response
        .writeHead(current.status, { ...jsonHeaders, ...current.headers })
        // a string body goes as it is (JSON too deep for JSON.stringify to write, say)
        .end(
          typeof current.body === "string"
            ? current.body
            : JSON.stringify(current.body ?? echoingError(current.status, echo)),
        );
      return;
    }
    const problem = validationProblem(body, countOnly);
    if (problem !== null) {
      sendJson(400, anthropicError("invalid_request_error", problem));
      return;
    }
    if (countOnly) {
      sendJson(200, { input_tokens: FAKE_COUNT_TOKENS });
      return;
    }
    const shape = current.kind === "ok" ? current : { usage: DEFAULT_ANTHROPIC_USAGE, toolCall: false };
    const answer = planAnswer(json, shape, answered);
    if (json.stream !== true) {
      if (current.kind !== "ok") {
        sendJson(500, echoingError(500, echo));
        return;
      }
      response.writeHead(200, jsonHeaders).end(message(answer));
      return;
    }
    response.writeHead(200, { ...jsonHeaders, "content-type": "text/event-stream; charset=utf-8" });
    const all = events(answer);
    if (current.kind === "ok" || current.kind === "raw-stream") {
      response.end(current.kind === "ok" ? all.join("") : current.text);
      return;
    }
    const start = all.slice(0, current.afterEvents).join("");
    if (current.kind === "error-event") {
      const error = anthropicError(current.errorType, `Fake Anthropic failed mid-stream on: ${echo}`);
      response.end(start + sse("error", error));
      return;
    }
    // destroy only once the start reached the socket, or the caller would see no answer at all
    response.write(start, () => request.socket.destroy());
  }

  const server = createServer((request, response) => {
    handle(request, response).catch(() => response.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    lastRequest() {
      const last = requests.at(-1);
      if (last === undefined) throw new Error("the fake Anthropic supplier received nothing");
      return last;
    },
    setBehaviour(next) {
      fallback = next;
    },
    enqueue(...next) {
      queue.push(...next);
    },
    clearQueue() {
      return queue.splice(0).length;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
