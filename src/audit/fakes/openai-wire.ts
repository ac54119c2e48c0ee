import type { FakeRequest } from "./fake-request.js";
import type { WireDialect } from "./wire-dialect.js";

type Json = Record<string, unknown>;

const CREATED = 1_700_000_000;
const USAGE = { prompt_tokens: 12, completion_tokens: 6, total_tokens: 18 };

function data(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

function toolCall(request: FakeRequest): Json {
  return {
    id: "call_audit",
    type: "function",
    function: { name: request.toolName, arguments: JSON.stringify({ query: request.echo }) },
  };
}

/** The OpenAI Chat Completions wire format, as an OpenAI-compatible server speaks it. */
export const openAIWire: WireDialect = {
  paths: ["/v1/chat/completions"],

  json(request) {
    const message: Json = { role: "assistant", content: request.toolName ? null : `Echo: ${request.echo}` };
    if (request.reasoning) message.reasoning_content = `Considering: ${request.echo}`;
    if (request.toolName) message.tool_calls = [toolCall(request)];
    return {
      id: "chatcmpl-audit",
      object: "chat.completion",
      created: CREATED,
      model: request.model,
      choices: [{ index: 0, message, logprobs: null, finish_reason: request.toolName ? "tool_calls" : "stop" }],
      usage: USAGE,
    };
  },

  events(request) {
    const base = { id: "chatcmpl-audit", object: "chat.completion.chunk", created: CREATED, model: request.model };
    const chunk = (delta: Json, finishReason: string | null = null) =>
      data({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }] });
    const head = [chunk({ role: "assistant", content: "" })];
    if (request.reasoning) head.push(chunk({ reasoning_content: `Considering: ${request.echo}` }));
    head.push(
      request.toolName
        ? chunk({ tool_calls: [{ index: 0, ...toolCall(request) }] })
        : chunk({ content: `Echo: ${request.echo}` }),
    );
    const tail = [chunk({}, request.toolName ? "tool_calls" : "stop")];
    const options = request.body.stream_options as Json | undefined;
    if (options?.include_usage === true) tail.push(data({ ...base, choices: [], usage: USAGE }));
    tail.push("data: [DONE]\n\n");
    return { head, tail };
  },

  errorBody(status, echo) {
    const type = status >= 500 ? "server_error" : "invalid_request_error";
    return { error: { message: `The fake supplier could not handle: ${echo}`, type, param: null, code: null } };
  },

  errorEvent(echo) {
    return data({ error: { message: `The fake supplier failed while answering: ${echo}`, type: "server_error" } });
  },

  garbageEvent(echo) {
    return `data: {not json ${echo}\n\n`;
  },
};
