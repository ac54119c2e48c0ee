import type { LetheError } from "../../errors/lethe-error.js";
import type { Exchange } from "../../metering/exchange.js";
import { toOpenAIUsage } from "../../metering/token-usage.js";
import type { WireEvent } from "../../suppliers/supplier.js";
import { meterAnthropicUsage } from "../anthropic/anthropic-stream-relay.js";
import { renderOpenAIError } from "../openai/openai-error.js";
import type { ClientRequest, StreamTranslator } from "../surface/client-surface.js";
import { UsageFallback } from "../surface/usage-fallback.js";
import { toOpenAIFinishReason } from "./map-finish-reason.js";

type Json = Record<string, unknown>;

/**
 * Translates an Anthropic supplier's events into OpenAI chunks for an OpenAI client:
 * text deltas become `content`, thinking becomes `reasoning_content`, each tool_use
 * block becomes one `tool_calls` entry whose arguments stream as they arrive.
 */
export class AnthropicToOpenAIStream implements StreamTranslator {
  private id = "chatcmpl-lethe";
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly usage: Json = {};
  private readonly toolIndexByBlock = new Map<number, number>();
  /** Tool blocks whose input has not begun: they are closed with `{}`. */
  private readonly argumentless = new Set<number>();
  private readonly fallback = new UsageFallback();

  constructor(
    private readonly request: ClientRequest,
    private readonly exchange: Exchange,
  ) {}

  private chunk(delta: Json, finishReason: string | null = null): string {
    const chunk: Json = {
      id: this.id,
      object: "chat.completion.chunk",
      created: this.created,
      model: this.exchange.model,
      choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
    };
    if (this.request.wantsStreamUsage) chunk.usage = null;
    return `data: ${JSON.stringify(chunk)}\n\n`;
  }

  event(event: WireEvent): string | null {
    const data = event.data;
    switch (data.type) {
      case "message_start": {
        const message = (data.message ?? {}) as Json;
        if (typeof message.id === "string") this.id = `chatcmpl-${message.id.replace(/^msg_/, "")}`;
        this.meter(message.usage, false);
        return this.chunk({ role: "assistant", content: "" });
      }
      case "content_block_start": {
        const block = (data.content_block ?? {}) as Json;
        if (block.type !== "tool_use") return null;
        const toolIndex = this.toolIndexByBlock.size;
        const blockIndex = Number(data.index);
        this.toolIndexByBlock.set(blockIndex, toolIndex);
        this.exchange.markFirstToken();
        this.fallback.add(String(block.name ?? ""));
        // Anthropic's block starts with `input: {}` and streams the input as JSON deltas; a
        // server that puts it whole in the start is passed on as the first arguments
        const input = block.input;
        const whole = typeof input === "object" && input !== null && Object.keys(input).length > 0;
        const args = whole ? JSON.stringify(input) : "";
        if (!whole) this.argumentless.add(blockIndex);
        return this.chunk({
          tool_calls: [
            { index: toolIndex, id: block.id, type: "function", function: { name: block.name, arguments: args } },
          ],
        });
      }
      case "content_block_stop": {
        // a tool without parameters gets no JSON delta (or an empty one): its arguments would add
        // up to "", which no JSON parser reads (the SDKs' stream helpers throw); the JSON answer says {}
        const blockIndex = Number(data.index);
        if (!this.argumentless.delete(blockIndex)) return null;
        const toolIndex = this.toolIndexByBlock.get(blockIndex) as number;
        return this.chunk({ tool_calls: [{ index: toolIndex, function: { arguments: "{}" } }] });
      }
      case "content_block_delta":
        return this.delta(Number(data.index), (data.delta ?? {}) as Json);
      case "message_delta": {
        this.meter(data.usage, true);
        const delta = (data.delta ?? {}) as Json;
        return this.chunk({}, toOpenAIFinishReason(delta.stop_reason));
      }
      case "message_stop": {
        if (!this.request.wantsStreamUsage || this.exchange.usage === null) return null;
        const chunk = {
          id: this.id,
          object: "chat.completion.chunk",
          created: this.created,
          model: this.exchange.model,
        };
        return `data: ${JSON.stringify({ ...chunk, choices: [], usage: toOpenAIUsage(this.exchange.usage) })}\n\n`;
      }
      default:
        // ping has no OpenAI counterpart
        return null;
    }
  }

  private delta(blockIndex: number, delta: Json): string | null {
    let out: Json;
    let text: unknown;
    if (delta.type === "text_delta") {
      text = delta.text;
      out = { content: text };
    } else if (delta.type === "thinking_delta") {
      text = delta.thinking;
      out = { reasoning_content: text };
    } else if (delta.type === "input_json_delta") {
      const toolIndex = this.toolIndexByBlock.get(blockIndex);
      // the input of a block that is no client tool call (a server tool's, say) has no
      // OpenAI counterpart: added to tool call 0, it would corrupt that call's arguments
      if (toolIndex === undefined) return null;
      text = delta.partial_json;
      if (typeof text === "string" && text !== "") this.argumentless.delete(blockIndex);
      out = { tool_calls: [{ index: toolIndex, function: { arguments: text } }] };
    } else return null;
    if (typeof text === "string") {
      if (text !== "") this.exchange.markFirstToken();
      this.fallback.add(text);
    }
    return this.chunk(out);
  }

  end(): string {
    this.fallback.settle(this.exchange, this.request.body);
    return "data: [DONE]\n\n";
  }

  error(error: LetheError): string {
    this.fallback.settle(this.exchange, this.request.body);
    return `data: ${renderOpenAIError(error)}\n\ndata: [DONE]\n\n`;
  }

  private meter(usage: unknown, final: boolean): void {
    meterAnthropicUsage(this.usage, usage, final, this.exchange, this.fallback);
  }
}
