import type { SupplierId } from "../../config/ids.js";
import type { SupplierConfig } from "../../config/load-config.js";
import type { Cancellation } from "../cancellation.js";
import { shutdownCut } from "../http/upstream-failure.js";
import type { Supplier, SupplierCall, SupplierResult, WireEvent } from "../supplier.js";
import { type DemoAnswer, demoAnswer } from "./demo-answer.js";

let sequence = 0;

function usage(answer: DemoAnswer) {
  return {
    prompt_tokens: answer.promptTokens,
    completion_tokens: answer.completionTokens,
    total_tokens: answer.promptTokens + answer.completionTokens,
  };
}

/**
 * The built-in `demo` supplier: answers in OpenAI's wire format from memory, with no
 * network, so a fresh clone works offline. Clearly labelled in every answer.
 */
export class DemoSupplier implements Supplier {
  readonly id: SupplierId;
  readonly format = "openai" as const;

  constructor(config: SupplierConfig) {
    this.id = config.id;
  }

  async send(call: SupplierCall): Promise<SupplierResult> {
    const answer = demoAnswer(call.body);
    const id = `chatcmpl-demo-${++sequence}`;
    const created = Math.floor(Date.now() / 1000);
    const model = String(call.body.model);
    if (!call.stream) {
      const toolCalls = answer.toolCall && [
        { id: `call_demo_${sequence}`, type: "function", function: answer.toolCall },
      ];
      return {
        kind: "json",
        body: {
          id,
          object: "chat.completion",
          created,
          model,
          choices: [
            {
              index: 0,
              message: {
                role: "assistant",
                content: toolCalls ? null : answer.text,
                ...(toolCalls && { tool_calls: toolCalls }),
              },
              finish_reason: answer.finishReason,
              ...(answer.stopSequence !== null && { stop_reason: answer.stopSequence }),
              logprobs: null,
            },
          ],
          usage: usage(answer),
        },
      };
    }
    const includeUsage = (call.body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    return {
      kind: "stream",
      events: demoChunks(answer, { id, created, model, includeUsage, cancellation: call.cancellation }),
    };
  }

  async close(): Promise<void> {}
}

async function* demoChunks(
  answer: DemoAnswer,
  meta: { id: string; created: number; model: string; includeUsage: boolean; cancellation: Cancellation },
): AsyncGenerator<WireEvent> {
  const base = { id: meta.id, object: "chat.completion.chunk", created: meta.created, model: meta.model };
  const chunk = (delta: object, finishReason: string | null = null, stopReason: string | null = null): WireEvent => ({
    event: undefined,
    data: {
      ...base,
      choices: [
        {
          index: 0,
          delta,
          finish_reason: finishReason,
          ...(stopReason !== null && { stop_reason: stopReason }),
          logprobs: null,
        },
      ],
      ...(meta.includeUsage && { usage: null }),
    },
  });
  yield chunk({ role: "assistant", content: "" });
  if (answer.toolCall) {
    yield chunk({
      tool_calls: [
        {
          index: 0,
          id: `call_demo_${meta.id}`,
          type: "function",
          function: { name: answer.toolCall.name, arguments: "" },
        },
      ],
    });
    yield chunk({ tool_calls: [{ index: 0, function: { arguments: answer.toolCall.arguments } }] });
  } else {
    // one chunk per word, as a real model streams roughly token by token
    for (const piece of answer.text.match(/\S+\s*|\s+/g) ?? []) {
      if (meta.cancellation.reason === "shutdown") throw shutdownCut();
      if (meta.cancellation.aborted) return;
      yield chunk({ content: piece });
    }
  }
  yield chunk({}, answer.finishReason, answer.stopSequence);
  if (meta.includeUsage) yield { event: undefined, data: { ...base, choices: [], usage: usage(answer) } };
}
