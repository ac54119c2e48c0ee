import type { LetheError } from "../../errors/lethe-error.js";
import { toAnthropicUsage } from "../../metering/anthropic-usage.js";
import { estimateInputTokens } from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";
import { fromOpenAIUsage, noTokens } from "../../metering/token-usage.js";
import { badUpstreamResponse } from "../../suppliers/http/read-json.js";
import type { WireEvent } from "../../suppliers/supplier.js";
import { anthropicErrorEvent, anthropicEvent } from "../anthropic/anthropic-sse.js";
import type { ClientRequest, StreamTranslator } from "../surface/client-surface.js";
import { UsageFallback } from "../surface/usage-fallback.js";
import { anthropicStop } from "./map-finish-reason.js";
import { mintToolUseId } from "./tool-use-id.js";

type Json = Record<string, unknown>;
type BlockKind = "text" | "thinking" | "tool_use";

/** A tool call that began while another's block was open: its start and arguments so far. */
interface WaitingCall {
  toolIndex: number;
  block: Json;
  arguments: string;
}

/** blockByToolIndex's mark for a call that waits (no block index yet). */
const WAITING = -1;

/** Characters a stream may hold back for the end of its answer (16 Mi, some 4 million tokens). */
export const HELD_CHARACTERS = 16 * 2 ** 20;

/**
 * Translates an OpenAI supplier's chunks into Anthropic's event sequence for an
 * Anthropic client: message_start, then one content block at a time (thinking, text,
 * tool_use with its arguments as input_json_delta), then message_delta with the
 * stop reason and usage, then message_stop.
 *
 * OpenAI's parallel tool calls may interleave (a server may send call 1's start, then more
 * of call 0's arguments, or text between them); Anthropic's blocks may not, and a block
 * once stopped takes no more deltas. So the first tool call's block, once open, stays open
 * to the end of the answer: calls that begin after it wait, their arguments gathered, and
 * so do text and reasoning that come after it; each goes out whole (start, its content,
 * stop) at the end. The first call streams live; the order of text and calls in OpenAI's
 * answer carries no meaning.
 */
export class OpenAIToAnthropicStream implements StreamTranslator {
  private started = false;
  private blockIndex = -1;
  private blockKind: BlockKind | null = null;
  private readonly blockByToolIndex = new Map<number, number>();
  /** Calls that began while a tool_use block was open, in the order they began. */
  private waiting: WaitingCall[] = [];
  /** Reasoning and text that came while a tool_use block was open. */
  private held: { thinking: string; text: string } | null = null;
  /** Characters held so far: waiting calls' arguments, reasoning and text. */
  private heldCharacters = 0;
  /** For servers that send tool calls without `index`: the index given to each id, and the last one. */
  private unindexedById: Map<string, number> | undefined;
  private lastUnindexed: number | undefined;
  /** The indices of the calls the last chunk naming several by id held, by place. */
  private namedTogether: number[] | undefined;
  /** How the answer ended: the finish reason, and vLLM's matched stop string, once they came. */
  private finish: { finish_reason?: unknown; stop_reason?: unknown } = {};
  /** The answer's text was OpenAI's `refusal`, not `content`: it ends with `stop_reason: refusal`. */
  private refused = false;
  private readonly fallback = new UsageFallback();

  constructor(
    private readonly request: ClientRequest,
    private readonly exchange: Exchange,
  ) {}

  event(event: WireEvent): string | null {
    const chunk = event.data;
    let out = this.start(chunk.id);
    const choices = (chunk.choices as Json[] | undefined) ?? [];
    const choice = choices[0];
    if (chunk.usage !== undefined && chunk.usage !== null) {
      const usage = fromOpenAIUsage(chunk.usage);
      if (usage !== null) {
        this.exchange.usage = usage;
        // as in the OpenAI relay: counts from before the answer finished are not the last
        const final = typeof choice?.finish_reason === "string" || typeof this.finish.finish_reason === "string";
        if (final) this.fallback.markReported();
        else this.fallback.markInputReported();
      }
    }
    const delta = (choice?.delta ?? {}) as Json;
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (typeof reasoning === "string" && reasoning !== "") {
      if (this.blockKind === "tool_use") this.hold("thinking", reasoning);
      else {
        // OpenAI-compatible reasoning carries no signature; an empty one, as the non-streamed answer has
        out += this.open("thinking", { type: "thinking", thinking: "", signature: "" });
        out += this.deltaEvent({ type: "thinking_delta", thinking: reasoning }, reasoning);
      }
    }
    // a refusal is the model's answer all the same: Anthropic has no field for it but text
    let text = delta.content;
    if (typeof text !== "string" || text === "") {
      text = delta.refusal;
      if (typeof text === "string" && text !== "") this.refused = true;
    }
    if (typeof text === "string" && text !== "") {
      if (this.blockKind === "tool_use") this.hold("text", text);
      else {
        out += this.open("text", { type: "text", text: "" });
        out += this.deltaEvent({ type: "text_delta", text }, text);
      }
    }
    const calls = (delta.tool_calls as Json[] | undefined) ?? [];
    for (let position = 0; position < calls.length; position++) {
      out += this.toolCall(calls[position] as Json, position, calls.length);
    }
    // the two fields only: the chunk itself (its delta) is not kept past this event
    if (typeof choice?.finish_reason === "string") {
      this.finish = { finish_reason: choice.finish_reason, stop_reason: choice.stop_reason };
    }
    return out === "" ? null : out;
  }

  private start(id: unknown): string {
    if (this.started) return "";
    this.started = true;
    const messageId = typeof id === "string" && id !== "" ? `msg_${id.replace(/^chatcmpl-/, "")}` : "msg_lethe";
    return (
      anthropicEvent("message_start", {
        type: "message_start",
        message: {
          id: messageId,
          type: "message",
          role: "assistant",
          model: this.exchange.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          // an OpenAI-format supplier reports input tokens only at the end (message_delta
          // carries its count); clients that read the input here (LangChain) get Lethe's
          // estimate, a character count that loads no tokenizer, rather than 0
          usage: { input_tokens: estimateInputTokens(this.request.body, "estimate", 0), output_tokens: 0 },
        },
      }) + anthropicEvent("ping", { type: "ping" })
    );
  }

  /** Opens a block of `kind` unless one is open already, closing the previous one. */
  private open(kind: BlockKind, contentBlock: Json): string {
    if (this.blockKind === kind && kind !== "tool_use") return "";
    const out = this.close();
    this.blockIndex++;
    this.blockKind = kind;
    return (
      out +
      anthropicEvent("content_block_start", {
        type: "content_block_start",
        index: this.blockIndex,
        content_block: contentBlock,
      })
    );
  }

  private close(): string {
    if (this.blockKind === null) return "";
    this.blockKind = null;
    return anthropicEvent("content_block_stop", { type: "content_block_stop", index: this.blockIndex });
  }

  /** Keeps reasoning or text that came while a tool call's block is open, for the end. */
  private hold(kind: "thinking" | "text", text: string): void {
    this.held ??= { thinking: "", text: "" };
    this.held[kind] += text;
    this.countHeld(text.length);
    this.fallback.add(text);
  }

  /**
   * What is held waits in memory to the end of the answer, as a JSON answer does: past
   * HELD_CHARACTERS, a supplier that will not stop is its garbage (a model keeps to
   * `max_tokens`), and the stream ends with an error rather than the process's memory.
   */
  private countHeld(characters: number): void {
    this.heldCharacters += characters;
    if (this.heldCharacters > HELD_CHARACTERS) {
      throw badUpstreamResponse("The supplier's answer after its first tool call is too long to translate.");
    }
  }

  /** The held reasoning, then the held text, each as a whole block. */
  private sendHeld(): string {
    const held = this.held;
    if (held === null) return "";
    this.held = null;
    let out = "";
    if (held.thinking !== "") {
      const delta = { type: "thinking_delta", thinking: held.thinking };
      out += this.wholeBlock({ type: "thinking", thinking: "", signature: "" }, delta);
    }
    if (held.text !== "") out += this.wholeBlock({ type: "text", text: "" }, { type: "text_delta", text: held.text });
    return out;
  }

  /** Each waiting call as a whole block: start, its arguments in one delta, stop. */
  private sendWaiting(): string {
    if (this.waiting.length === 0) return "";
    const waiting = this.waiting;
    this.waiting = [];
    let out = "";
    for (const call of waiting) {
      const delta = call.arguments === "" ? null : { type: "input_json_delta", partial_json: call.arguments };
      out += this.wholeBlock(call.block, delta);
      this.blockByToolIndex.set(call.toolIndex, this.blockIndex);
    }
    return out;
  }

  /** A block sent at once, after the open one closed: its start, its content in one delta, its stop. */
  private wholeBlock(contentBlock: Json, delta: Json | null): string {
    const index = ++this.blockIndex;
    let out = anthropicEvent("content_block_start", {
      type: "content_block_start",
      index,
      content_block: contentBlock,
    });
    if (delta !== null) out += anthropicEvent("content_block_delta", { type: "content_block_delta", index, delta });
    return out + anthropicEvent("content_block_stop", { type: "content_block_stop", index });
  }

  private deltaEvent(delta: Json, text: string, index = this.blockIndex): string {
    this.exchange.markFirstToken();
    this.fallback.add(text);
    return anthropicEvent("content_block_delta", { type: "content_block_delta", index, delta });
  }

  /**
   * The call's index. Servers that leave `index` out tell calls apart by id (Gemini's sends
   * each call whole, with its own id, in a chunk of its own): a new id is a new call, a
   * lone delta without one continues the last; several in one chunk go by their places, as
   * the last chunk that named several had them (or, without one, as the places themselves).
   */
  private toolIndexOf(call: Json, position: number, count: number): number {
    if (typeof call.index === "number") return call.index;
    const id = call.id;
    if (typeof id !== "string" || id === "") {
      if (count > 1) return this.namedTogether?.[position] ?? position;
      return this.lastUnindexed ?? position;
    }
    let index = this.unindexedById?.get(id);
    if (index === undefined) {
      index = this.blockByToolIndex.size;
      while (this.blockByToolIndex.has(index)) index++;
      this.unindexedById ??= new Map();
      this.unindexedById.set(id, index);
    }
    if (count > 1) {
      if (position === 0 || this.namedTogether === undefined) this.namedTogether = [];
      this.namedTogether[position] = index;
    }
    this.lastUnindexed = index;
    return index;
  }

  private toolCall(call: Json, position: number, count: number): string {
    const toolIndex = this.toolIndexOf(call, position, count);
    const fn = (call.function ?? {}) as Json;
    let out = "";
    let index = this.blockByToolIndex.get(toolIndex);
    if (index === undefined) {
      const block = {
        type: "tool_use",
        id: typeof call.id === "string" && call.id !== "" ? call.id : mintToolUseId(),
        name: fn.name ?? "",
        input: {},
      };
      if (typeof fn.name === "string") this.fallback.add(fn.name);
      this.exchange.markFirstToken();
      if (this.blockKind === "tool_use") {
        // another call's block is open and may take more arguments yet: this one waits
        this.waiting.push({ toolIndex, block, arguments: "" });
        index = WAITING;
      } else {
        out += this.open("tool_use", block);
        index = this.blockIndex;
      }
      this.blockByToolIndex.set(toolIndex, index);
    }
    if (typeof fn.arguments === "string" && fn.arguments !== "") {
      if (index === WAITING) {
        const waiting = this.waiting.find((entry) => entry.toolIndex === toolIndex) as WaitingCall;
        waiting.arguments += fn.arguments;
        this.countHeld(fn.arguments.length);
        this.fallback.add(fn.arguments);
      } else out += this.deltaEvent({ type: "input_json_delta", partial_json: fn.arguments }, fn.arguments, index);
    }
    return out;
  }

  end(): string {
    this.fallback.settle(this.exchange, this.request.body);
    const usage = this.exchange.usage ?? noTokens();
    return (
      this.start(undefined) +
      this.close() +
      this.sendWaiting() +
      this.sendHeld() +
      anthropicEvent("message_delta", {
        type: "message_delta",
        delta: anthropicStop(
          this.finish,
          this.request.body.stop_sequences,
          this.blockByToolIndex.size > 0,
          this.refused,
        ),
        usage: toAnthropicUsage(usage),
      }) +
      anthropicEvent("message_stop", { type: "message_stop" })
    );
  }

  error(error: LetheError): string {
    this.fallback.settle(this.exchange, this.request.body);
    return anthropicErrorEvent(error);
  }
}
