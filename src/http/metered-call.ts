import type { IncomingMessage, ServerResponse } from "node:http";
import { addRateLimitHeaders } from "../billing/rate-limit-headers.js";
import { RateLimitedError } from "../billing/rate-limits.js";
import { UNKNOWN_MODEL } from "../config/ids.js";
import { LetheError, UpstreamError } from "../errors/lethe-error.js";
import type { AuthContext } from "../keys/authenticator.js";
import { after, type MaybePromise } from "../lang/maybe-promise.js";
import { Exchange, mintRequestId } from "../metering/exchange.js";
import type { ClientFormat, Endpoint } from "../metering/metadata-record.js";
import { refusesAgain } from "../suppliers/http/upstream-failure.js";
import { authenticate } from "./authenticate-caller.js";
import { FREE_BYTES_PER_BODY } from "./body-budget.js";
import { refusalOf } from "./client-error.js";
import { answerAfterBody, dropRestOfBody } from "./drain-body.js";
import { failureStatus, renderFailure, toFailure } from "./error-handler.js";
import { finishExchange, type Gateway } from "./gateway.js";
import { bodyText, encodingRefusal, parseJsonText } from "./parse-json-body.js";
import type { ResponseHeaders } from "./response-headers.js";

/** An endpoint whose every request is metered: admitted (key, RPM) before its body is read. */
export interface MeteredEndpoint {
  readonly path: Endpoint;
  readonly format: ClientFormat;
  /** Serves the call once its body is parsed, writing the response; a rejection is answered by the call. */
  serve(call: MeteredCall): Promise<void>;
}

const NO_CHUNKS: readonly Buffer[] = Object.freeze([]);

/**
 * The request asked whether to send its body (`Expect: 100-continue`, HTTP/1.1): Node then
 * hands it to `checkContinue` rather than answering "continue" itself (build-server.ts).
 */
function expectsContinue(request: IncomingMessage): boolean {
  const expect = request.headers.expect;
  return expect !== undefined && request.httpVersion === "1.1" && /(?:^|\W)100-continue(?:$|\W)/i.test(expect);
}

/**
 * One request to a metered endpoint, on Node's own request and response: the request
 * path is hot, and Fastify's request, reply, hooks and header map cost more than what
 * Lethe does with a request (Fastify serves every other route). In order: the gate
 * (draining, the metering bound), the key, the RPM limits, then the body, read into
 * memory up to the size limit, parsed, and handed to the endpoint. Any failure is
 * answered in the caller's format with the headers gathered so far, and metered once.
 */
export class MeteredCall {
  readonly exchange: Exchange;
  /** The response's headers so far; the endpoint adds its own and writes them. */
  readonly headers: ResponseHeaders;
  /** The parsed JSON body, once read. */
  body: unknown = undefined;
  /** The body's text as it arrived, until the endpoint takes it (takeBodyText). */
  private bodyText = "";
  private chunks: Buffer[] = [];
  private received = 0;
  /** `100 Continue` went to a client that asked whether to send its body. */
  private continued = false;
  /** The request's `Expect` was refused: its body, if any, was never asked for. */
  private expectationRefused = false;

  constructor(
    readonly gateway: Gateway,
    readonly endpoint: MeteredEndpoint,
    readonly request: IncomingMessage,
    readonly response: ServerResponse,
  ) {
    const requestId = mintRequestId();
    this.exchange = new Exchange(requestId, endpoint.path, endpoint.format);
    gateway.openExchanges++;
    this.headers = ["x-request-id", requestId, "request-id", requestId];
    if (gateway.cors !== null) gateway.cors.addTo(this.headers, request.headers.origin);
  }

  /**
   * The body's text, handed over once: a surface forwarding a request in its own format
   * edits this text rather than serialising the parse (splice-model.ts). The call lets go
   * of it, so it lives no longer than the surface needs it.
   */
  takeBodyText(): string {
    const text = this.bodyText;
    this.bodyText = "";
    return text;
  }

  get format(): ClientFormat {
    return this.endpoint.format;
  }

  /** The body's size in bytes as it arrived (chunked bodies included). */
  get bodyBytes(): number {
    return this.received;
  }

  /** Admits, reads and serves the request; synchronous up to the body when the key and limits are in memory. */
  start(): void {
    let admitted: MaybePromise<void>;
    try {
      admitted = this.admit();
    } catch (thrown) {
      this.refuse(thrown);
      return;
    }
    if (admitted instanceof Promise) {
      admitted.then(
        () => this.readBody(),
        (thrown: unknown) => this.refuse(thrown),
      );
    } else this.readBody();
  }

  /**
   * Refuses a request before its body is read (no key, a revoked one, a limit). Node reads
   * and drops an unread body to keep the connection, however large it is: that is left to
   * it only for a declared length within the body limit; a chunked or larger body is read
   * and dropped up to a bound before the answer, then the connection closes (drain-body.ts),
   * so a caller without a key cannot send without end.
   */
  private refuse(thrown: unknown): void {
    const request = this.request;
    const declared = request.headers["content-length"];
    const bounded = declared !== undefined && Number(declared) <= this.gateway.config.limits.maxBodyBytes;
    this.fail(thrown, !request.complete && !bounded);
  }

  /**
   * Refuses a request whose `Expect` names something other than `100-continue` (Node's
   * `checkExpectation`), before its key or body: HTTP defines no other expectation. The
   * caller may be waiting to send its body: it is answered at once, as a refused
   * 100-continue is.
   */
  refuseExpectation(): void {
    this.expectationRefused = true;
    this.fail(new LetheError("LETHE_EXPECTATION_FAILED", "The only expectation this gateway meets is 100-continue."));
  }

  private admit(): MaybePromise<void> {
    const gateway = this.gateway;
    if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
    // never serve unmetered: with the database away and the buffer full, refuse instead
    if (gateway.meter.pending >= gateway.config.metering.maxBuffered) {
      throw new LetheError("LETHE_METERING_UNAVAILABLE", "Metering is unavailable; retry shortly.", {
        retryAfterSeconds: 5,
      });
    }
    const request = this.request;
    const auth = authenticate(gateway, request.headers, request.socket);
    return after(auth, (caller) => {
      this.exchange.auth = caller;
      return after(gateway.limits.admitRequest(caller), (limit) => {
        addRateLimitHeaders(this.headers, this.endpoint.format, "requests", limit);
      });
    });
  }

  private readBody(): void {
    // the client left while its key was being looked up: a destroyed request never ends
    if (this.request.destroyed) {
      this.fail(new LetheError("LETHE_CLIENT_CLOSED", "The client closed the connection."));
      return;
    }
    const headers = this.request.headers;
    // Node's parser delivers exactly the declared length, or fails the request: only its size needs checking
    if (Number(headers["content-length"]) > this.gateway.config.limits.maxBodyBytes) {
      this.fail(tooLarge(), true);
      return;
    }
    const refusal = encodingRefusal(headers);
    if (refusal !== null) {
      this.fail(refusal, true);
      return;
    }
    this.request.on("data", this.onData);
    this.request.on("end", this.onEnd);
    this.request.on("error", this.onError);
    // admitted: the client waiting to send its body may now (build-server.ts, checkContinue)
    if (expectsContinue(this.request)) {
      this.continued = true;
      this.response.writeContinue();
    }
  }

  private readonly onData = (chunk: Buffer): void => {
    const before = this.received;
    this.received += chunk.length;
    if (this.received > this.gateway.config.limits.maxBodyBytes) {
      this.dropBody();
      this.fail(tooLarge(), true);
      return;
    }
    // a large body counts against its account's bytes in memory (body-budget.ts)
    if (this.received > FREE_BYTES_PER_BODY) {
      const exchange = this.exchange;
      try {
        exchange.heldBodyBytes = this.gateway.bodies.grow(
          (exchange.auth as AuthContext).accountId,
          before,
          this.received,
        );
      } catch (thrown) {
        this.dropBody();
        this.fail(thrown, true);
        return;
      }
    }
    this.chunks.push(chunk);
  };

  private readonly onEnd = (): void => {
    const chunks = this.chunks;
    this.stopReading();
    const buffer = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.received);
    // the copy is wiped by the parser; the pieces it was made of are wiped here
    if (chunks.length > 1) for (const chunk of chunks) chunk.fill(0);
    try {
      this.bodyText = bodyText(buffer);
      this.body = parseJsonText(this.bodyText, this.gateway.config.limits.maxJsonValues);
    } catch (thrown) {
      this.fail(thrown);
      return;
    }
    this.endpoint.serve(this).catch((thrown: unknown) => this.fail(thrown));
    // an endpoint takes the text before its first await, or not at all (count_tokens)
    this.bodyText = "";
  };

  /**
   * The client went away (or broke the connection) while sending its body, or Node's parser
   * refused the rest of it (a malformed chunk, request_timeout_ms): that refusal was
   * answered already (client-error.ts), and is what the record says.
   */
  private readonly onError = (): void => {
    this.dropBody();
    const refused = refusalOf(this.request.socket);
    // past the shutdown deadline, the gateway closed the connection of a body still on its way
    const closed = this.gateway.inFlight.closed
      ? new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.")
      : new LetheError("LETHE_CLIENT_CLOSED", "The client closed the connection.");
    this.fail(refused ?? closed);
  };

  private stopReading(): void {
    this.request.off("data", this.onData);
    this.request.off("end", this.onEnd);
    this.request.off("error", this.onError);
    this.chunks = NO_CHUNKS as Buffer[];
  }

  /** Stops reading and wipes what was read of a body that will not be used. */
  private dropBody(): void {
    const chunks = this.chunks;
    this.stopReading();
    for (const chunk of chunks) chunk.fill(0);
  }

  /**
   * Answers a failure in the caller's format (unless the response already started: a
   * stream reports its own failures) and meters it. `closeConnection` is for a body left
   * unread or broken: the client may still be sending it, so the connection cannot be reused.
   */
  fail(thrown: unknown, closeConnection = false): void {
    const failure = toFailure(thrown);
    const { error } = failure;
    const exchange = this.exchange;
    if (error.code === "LETHE_INTERNAL")
      this.gateway.log.event("request_failed", { status: error.status, code: error.code });
    // the record holds the status the caller is answered with (an Anthropic caller's 529)
    finishExchange(this.gateway, exchange, failureStatus(this.format, error), error.code);
    const response = this.response;
    if (response.headersSent || response.destroyed) return;
    const headers = this.headers;
    // a failure after a supplier was tried says which and how often, as an answer does; one
    // after the model was known, under which ZDR rule (a ZDR refusal: enforced)
    if (exchange.attempts > 0 && exchange.supplier !== null) {
      headers.push("x-lethe-supplier", exchange.supplier, "x-lethe-attempts", exchange.attempts);
    }
    if (exchange.model !== UNKNOWN_MODEL) headers.push("x-lethe-zdr", exchange.zdrEnforced ? "enforced" : "off");
    if (error instanceof RateLimitedError) addRateLimitHeaders(headers, this.format, error.limitKind, error.limit);
    if (error.retryAfterSeconds !== null) headers.push("retry-after", Math.ceil(error.retryAfterSeconds));
    // a supplier that refused Lethe's own credentials or model name, or redirected its base
    // URL, does so again: both SDKs would retry the 502 twice, each a wasted supplier call
    // (they honour x-should-retry); so would a request that can never fit its limits
    if (error.hopeless || (error instanceof UpstreamError && refusesAgain(error.upstreamStatus))) {
      headers.push("x-should-retry", "false");
    }
    const { status, body } = renderFailure(this.format, failure);
    headers.push("content-type", "application/json; charset=utf-8", "content-length", Buffer.byteLength(body));
    if (closeConnection) headers.push("connection", "close");
    // a client still waiting to be told to send its body sends none: the answer goes at once,
    // and whatever it sends after all is dropped, bounded (drain-body.ts)
    const unasked = this.expectationRefused || (expectsContinue(this.request) && !this.continued);
    if (unasked && !this.request.complete && !this.request.destroyed) {
      if (!closeConnection) headers.push("connection", "close");
      response.writeHead(status, headers);
      response.end(body);
      dropRestOfBody(this.request);
      return;
    }
    // a body still on its way is read and dropped first, or the client loses the answer (drain-body.ts)
    if (closeConnection && !this.request.complete && !this.request.destroyed) {
      answerAfterBody(this.request, 2 * this.gateway.config.limits.maxBodyBytes, () => {
        if (response.headersSent || response.destroyed) return;
        response.writeHead(status, headers);
        response.end(body);
      });
      return;
    }
    response.writeHead(status, headers);
    response.end(body);
  }
}

function tooLarge(): LetheError {
  return new LetheError("LETHE_BODY_TOO_LARGE", "The request body is larger than this gateway accepts.");
}
