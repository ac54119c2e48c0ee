import type { SupplierId } from "../config/ids.js";
import type { AttemptTimeouts } from "../config/load-config.js";
import type { UpstreamError } from "../errors/lethe-error.js";
import type { Cancellation } from "./cancellation.js";

/** The wire formats suppliers speak; translation happens when it differs from the client's. */
export type WireFormat = "openai" | "anthropic";

/** One parsed server-sent event from a supplier: its `event:` name and its JSON `data`. */
export interface WireEvent {
  event: string | undefined;
  data: Record<string, unknown>;
  /**
   * `data` as the supplier wrote it, when it came on one line (from wireEvent): a relay that
   * passes the event on unchanged, or with its model spliced in, writes this text rather than
   * serialising the parse again (a second serialisation was most of an event's own cost).
   */
  text?: string;
}

/**
 * A WireEvent that keeps its data's text only when that text can stand on one `data:` line
 * as it is: data sent as several lines (or pretty-printed) is serialised again by its relay.
 */
export function wireEvent(event: string | undefined, data: Record<string, unknown>, text: string): WireEvent {
  return text.includes("\n") || text.includes("\r") ? { event, data } : { event, data, text };
}

/** A request body already in the supplier's wire format, with its model name set. */
export interface SupplierCall {
  body: Record<string, unknown>;
  /**
   * `body` as JSON text spliced from what the client sent (client-surface.ts UpstreamBody):
   * sent as it is, in place of serialising `body`; it already holds every edit.
   */
  text?: string;
  stream: boolean;
  /** Fires when the client goes away; the supplier aborts its upstream request. */
  cancellation: Cancellation;
  /** Format-specific headers passed on from the client (e.g. `anthropic-version`). */
  headers?: Record<string, string>;
  /** This attempt's timeouts (the route's); the supplier's own when absent. */
  timeouts?: AttemptTimeouts;
}

/**
 * A supplier's whole JSON answer, parsed, and as text when it came over the wire (not for
 * the demo supplier): a surface that passes it on with one field changed edits the text
 * (splice-model.ts) rather than serialising the parse again.
 */
export interface JsonAnswer {
  body: Record<string, unknown>;
  text?: string;
}

/**
 * What a supplier said when it rejected the caller's request: its message, the field it
 * named (OpenAI's `param`) and Anthropic's machine-readable `details` (the SDK reads
 * `details.error_code`). The caller's own data, for the caller only: it lives in the
 * content plane and is never logged or stored.
 */
export interface SupplierSaid {
  message?: string;
  param?: string;
  details?: Record<string, unknown>;
}

/** What a supplier answered. A rejection carries what the supplier said as `detail`. */
export type SupplierResult =
  | ({ kind: "json" } & JsonAnswer)
  | {
      kind: "stream";
      events: AsyncIterable<WireEvent>;
      /**
       * Gives up on an answer whose first event has not come in time (headers, then
       * silence): the read waiting for it fails with LETHE_UPSTREAM_TIMEOUT, retryable on
       * another route. Absent where a stream cannot stall (the demo).
       */
      giveUp?: () => void;
      /** When the request left for the supplier (performance.now()): first_byte_ms runs from there. */
      sentAt?: number;
    }
  | { kind: "rejected"; error: UpstreamError; detail: SupplierSaid | undefined };

/**
 * A supplier adapter. `send` throws an UpstreamError when no answer arrived
 * (refused, timed out); iterating a stream throws one when it breaks mid-way.
 */
export interface Supplier {
  readonly id: SupplierId;
  readonly format: WireFormat;
  send(call: SupplierCall): Promise<SupplierResult>;
  /** True while every connection of the supplier's pool is taken: a call sent now waits for one. */
  full?(): boolean;
  /** Counts a Messages request's input tokens upstream, for suppliers that offer it. */
  countTokens?(call: SupplierCall): Promise<SupplierResult>;
  close(): Promise<void>;
}
