import type { LetheError } from "../../errors/lethe-error.js";
import { fromAnthropicUsage, toAnthropicUsage } from "../../metering/anthropic-usage.js";
import { estimateInputTokens } from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";
import type { WireEvent } from "../../suppliers/supplier.js";
import type { ClientRequest, StreamTranslator } from "../surface/client-surface.js";
import { UsageFallback } from "../surface/usage-fallback.js";
import { anthropicErrorEvent, anthropicEvent, anthropicEventText } from "./anthropic-sse.js";

/**
 * Meters an Anthropic stream's usage as its events bring it: merges the counters an event
 * carries into the stream's running `totals` (Anthropic's are cumulative) and sets the
 * exchange's usage from them. `final`: `message_delta`'s counts, which end the stream;
 * `message_start`'s output count is a placeholder. Counts no model could reach are not the
 * supplier's to bill: the fallback counts instead. False when the event's counts were refused.
 */
export function meterAnthropicUsage(
  totals: Record<string, unknown>,
  usage: unknown,
  final: boolean,
  exchange: Exchange,
  fallback: UsageFallback,
): boolean {
  if (typeof usage !== "object" || usage === null) return true;
  for (const [key, value] of Object.entries(usage)) if (value !== null && value !== undefined) totals[key] = value;
  const counted = fromAnthropicUsage(totals);
  if (counted === null) return false;
  exchange.usage = counted;
  if (final) fallback.markReported();
  else fallback.markInputReported();
  return true;
}

/** An SSE event name that can stand on its `event:` line as it is. */
const EVENT_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Anthropic's own event names: checked first, so the pattern runs only for others. */
const KNOWN_EVENTS = new Set([
  "message_start",
  "content_block_start",
  "content_block_delta",
  "content_block_stop",
  "message_delta",
  "message_stop",
  "ping",
  "error",
]);

/** How Anthropic begins every event's data. */
const TYPE_FIRST = '{"type":"';

/**
 * True when a supplier's event text reads to any parser as it read to Lethe: the type written
 * first (as Anthropic writes it) is the one the parse kept (a later, different one would have
 * won), so a parser keeping the first of a key written twice sees the same event; and no usage
 * (a client must read no counts but the billed events', which are serialised as read).
 */
function readsAlike(text: string, type: unknown): boolean {
  // `type` passed the event-name check: no character in it needs escaping in JSON
  return (
    typeof type === "string" &&
    text.startsWith(TYPE_FIRST) &&
    text.startsWith(type, TYPE_FIRST.length) &&
    text.charCodeAt(TYPE_FIRST.length + type.length) === 0x22 &&
    !text.includes('"usage"')
  );
}

/**
 * Relays an Anthropic supplier's events to an Anthropic client unchanged but for
 * `message.model` (the configured id), metering usage from `message_start` and
 * `message_delta`.
 */
export class AnthropicStreamRelay implements StreamTranslator {
  private readonly usage: Record<string, unknown> = {};
  private readonly fallback = new UsageFallback();

  constructor(
    private readonly request: ClientRequest,
    private readonly exchange: Exchange,
  ) {}

  event(event: WireEvent): string | null {
    const data = event.data;
    // the data as the supplier wrote it, while it says what the client must get
    let text = event.text;
    switch (data.type) {
      case "message_start": {
        const message = data.message as Record<string, unknown> | undefined;
        // the events Lethe bills by (one each a stream) go out as Lethe read them: a key
        // written twice (JSON.parse keeps the last, some parsers the first) would let the
        // client read other counts than the ones billed
        text = undefined;
        if (message !== undefined) {
          message.model = this.exchange.model;
          // counts no model could reach are not billed, nor shown: Lethe's estimate instead
          if (!this.meter(message.usage, false))
            message.usage = { input_tokens: estimateInputTokens(this.request.body), output_tokens: 1 };
        }
        break;
      }
      case "content_block_delta": {
        this.exchange.markFirstToken();
        const delta = data.delta as Record<string, unknown> | undefined;
        const text = delta?.text ?? delta?.partial_json ?? delta?.thinking;
        if (typeof text === "string") this.fallback.add(text);
        break;
      }
      case "message_delta":
        text = undefined;
        if (!this.meter(data.usage, true)) {
          // counts no model could reach are not billed: the client reads the count that is,
          // Lethe's own, settled now (the answer is whole)
          this.fallback.settle(this.exchange, this.request.body);
          if (this.exchange.usage !== null) data.usage = toAnthropicUsage(this.exchange.usage);
        }
        break;
    }
    const name = typeof data.type === "string" ? data.type : (event.event ?? "message");
    // the name is written raw into the `event:` line: one holding a line break would let the
    // supplier frame events of its own in the client's stream; Anthropic's are snake_case
    if (!KNOWN_EVENTS.has(name) && !EVENT_NAME.test(name)) return null;
    return text === undefined || !readsAlike(text, data.type)
      ? anthropicEvent(name, data)
      : anthropicEventText(name, text);
  }

  end(): string {
    this.fallback.settle(this.exchange, this.request.body);
    return "";
  }

  error(error: LetheError): string {
    this.fallback.settle(this.exchange, this.request.body);
    return anthropicErrorEvent(error);
  }

  private meter(usage: unknown, final: boolean): boolean {
    return meterAnthropicUsage(this.usage, usage, final, this.exchange, this.fallback);
  }
}
