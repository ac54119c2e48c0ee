import type { IncomingHttpHeaders } from "node:http";
import type { RouteConfig } from "../../config/load-config.js";
import type { LetheError } from "../../errors/lethe-error.js";
import type { Exchange } from "../../metering/exchange.js";
import type { ClientFormat, Endpoint } from "../../metering/metadata-record.js";
import type { JsonAnswer, SupplierSaid, WireEvent, WireFormat } from "../../suppliers/supplier.js";

/** A validated client request: the few fields Lethe acts on, and the body itself. */
export interface ClientRequest {
  model: string;
  stream: boolean;
  /** The client asked for usage in its stream (OpenAI's `stream_options.include_usage`). */
  wantsStreamUsage: boolean;
  body: Record<string, unknown>;
  /** Client headers the supplier must see (e.g. `anthropic-version`); never logged. */
  headers?: Record<string, string>;
  /**
   * The body as the client sent it, with what the surface needs to forward that text
   * instead of a serialisation of `body` (OpenAI surface): set when the text is at hand.
   */
  sent?: SentBody;
}

/** A request's own text and the state of the fields Lethe may add to it, as they arrived. */
export interface SentBody {
  text: string;
  /** How many distinct top-level keys the parse of `text` has. */
  keys: number;
  /** The client sent `stream_options` (whatever it held). */
  hasStreamOptions: boolean;
  /** The client's `store`, undefined when it sent none. */
  store: unknown;
}

/** The body for one supplier attempt, and its JSON text when it could be spliced from the client's. */
export interface UpstreamBody {
  body: Record<string, unknown>;
  /** Sent instead of serialising `body`; it already holds every edit, `store: false` included. */
  text?: string;
}

/** Turns one supplier stream into the client's SSE text, event by event. */
export interface StreamTranslator {
  /** SSE text for one supplier event, or null when the event is not for the client. */
  event(event: WireEvent): string | null;
  /** The client format's closing text, after the last event. */
  end(): string;
  /** An error event in the client's format, ending a stream that already started. */
  error(error: LetheError): string;
}

/**
 * One API surface Lethe serves (OpenAI chat completions, Anthropic messages): how its
 * requests are validated, sent to a supplier of either wire format, and answered.
 * Everything here is content plane; only the Exchange carries metadata out.
 */
export interface ClientSurface {
  readonly format: ClientFormat;
  readonly endpoint: Endpoint;
  /** Validates the parsed body; `text` is the body as it arrived, when there is one. */
  parse(body: unknown, headers: IncomingHttpHeaders, text?: string): ClientRequest;
  upstreamBody(request: ClientRequest, route: RouteConfig, supplierFormat: WireFormat): UpstreamBody;
  /** Renders a supplier's JSON answer for the client and meters its usage on the exchange. */
  jsonResponse(request: ClientRequest, answer: JsonAnswer, supplierFormat: WireFormat, exchange: Exchange): string;
  streamTranslator(request: ClientRequest, supplierFormat: WireFormat, exchange: Exchange): StreamTranslator;
  renderError(error: LetheError, detail?: SupplierSaid): string;
}
