import type { FakeRequest } from "./fake-request.js";
import type { WireDialect } from "./wire-dialect.js";

type Json = Record<string, unknown>;

const SIGNATURE = "ZmFrZS1zaWduYXR1cmUtZm9yLXRoZS1hdWRpdA==";

function sse(type: string, data: Json): string {
  return `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
}

/** The content blocks of an answer: thinking when asked for, then a tool call or text. */
function blocks(request: FakeRequest): Json[] {
  const out: Json[] = [];
  if (request.reasoning) out.push({ type: "thinking", thinking: `Considering: ${request.echo}`, signature: SIGNATURE });
  if (request.toolName) {
    out.push({ type: "tool_use", id: "toolu_audit", name: request.toolName, input: { query: request.echo } });
  } else out.push({ type: "text", text: `Echo: ${request.echo}` });
  return out;
}

/** The start event and the deltas of one content block, in Anthropic's order. */
function blockEvents(block: Json, index: number): string[] {
  const start = (contentBlock: Json) => sse("content_block_start", { index, content_block: contentBlock });
  const delta = (payload: Json) => sse("content_block_delta", { index, delta: payload });
  if (block.type === "thinking") {
    return [
      start({ type: "thinking", thinking: "" }),
      delta({ type: "thinking_delta", thinking: block.thinking }),
      delta({ type: "signature_delta", signature: block.signature }),
    ];
  }
  if (block.type === "tool_use") {
    return [
      start({ type: "tool_use", id: block.id, name: block.name, input: {} }),
      delta({ type: "input_json_delta", partial_json: JSON.stringify(block.input) }),
    ];
  }
  return [start({ type: "text", text: "" }), delta({ type: "text_delta", text: block.text })];
}

function stopReason(request: FakeRequest): string {
  return request.toolName ? "tool_use" : "end_turn";
}

function errorType(status: number): string {
  if (status === 529) return "overloaded_error";
  return status >= 500 ? "api_error" : "invalid_request_error";
}

/** Anthropic's Messages wire format, with its exact event sequence. */
export const anthropicWire: WireDialect = {
  paths: ["/v1/messages"],
  countTokensPath: "/v1/messages/count_tokens",

  json(request) {
    return {
      id: "msg_audit",
      type: "message",
      role: "assistant",
      model: request.model,
      content: blocks(request),
      stop_reason: stopReason(request),
      stop_sequence: null,
      usage: { input_tokens: 12, output_tokens: 6 },
    };
  },

  events(request) {
    const message = {
      id: "msg_audit",
      type: "message",
      role: "assistant",
      model: request.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 12, output_tokens: 1 },
    };
    const [first, ...rest] = blocks(request);
    // the first block's deltas carry the echo: a failure "mid-stream" strikes right after them
    const head = [sse("message_start", { message }), ...blockEvents(first as Json, 0)];
    const tail = [sse("content_block_stop", { index: 0 })];
    rest.forEach((block, offset) => {
      tail.push(...blockEvents(block, offset + 1), sse("content_block_stop", { index: offset + 1 }));
    });
    tail.push(
      sse("message_delta", {
        delta: { stop_reason: stopReason(request), stop_sequence: null },
        usage: { output_tokens: 6 },
      }),
      sse("message_stop", {}),
    );
    return { head, tail };
  },

  errorBody(status, echo) {
    return {
      type: "error",
      error: { type: errorType(status), message: `The fake supplier could not handle: ${echo}` },
    };
  },

  errorEvent(echo) {
    return sse("error", {
      error: { type: "overloaded_error", message: `The fake supplier failed while answering: ${echo}` },
    });
  },

  garbageEvent(echo) {
    return `event: content_block_delta\ndata: {not json ${echo}\n\n`;
  },
};
