import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { ERROR_CODES, type ErrorCode, LetheError } from "../errors/lethe-error.js";
import { mintRequestId } from "../metering/exchange.js";
import { dropRestOfBody } from "./drain-body.js";

interface Refusal {
  code: ErrorCode;
  reason: string;
  message: string;
}

const REFUSALS: Record<string, Refusal> = {
  HPE_HEADER_OVERFLOW: {
    code: "LETHE_HEADERS_TOO_LARGE",
    reason: "Request Header Fields Too Large",
    message: "The request headers are larger than this gateway accepts.",
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    code: "LETHE_REQUEST_TIMEOUT",
    reason: "Request Timeout",
    message: "The request took too long to arrive.",
  },
};

const MALFORMED = {
  code: "LETHE_INVALID_REQUEST",
  reason: "Bad Request",
  message: "The HTTP request could not be parsed.",
} as const satisfies Refusal;

/**
 * Connections refused here, with the refusal: a metered request whose body was still
 * arriving learns from it what its caller was answered (metered-call.ts), rather than
 * taking the connection's end for the client leaving (499).
 */
const refusedConnections = new WeakMap<Duplex, Refusal>();

/** The refusal a connection was answered with and closed on, as the error its request is metered under; null when none. */
export function refusalOf(socket: Duplex): LetheError | null {
  const refusal = refusedConnections.get(socket);
  return refusal === undefined ? null : new LetheError(refusal.code, refusal.message);
}

/**
 * Answers a request Node's HTTP parser refused (a malformed header, conflicting
 * framing, headers over the size limit, a request too slow to arrive), then closes the
 * connection. Which format the caller speaks is not known before its request is parsed,
 * so the body is one both SDKs read: Anthropic's envelope (`type: "error"`) around
 * OpenAI's error object, with a Lethe code. Nothing of the request is quoted. Fastify's
 * own answer carried neither format nor code.
 */
export function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === "ECONNRESET" || socket.destroyed) return;
  // a response already on its way on this connection (pipelining) must not be cut into
  const inProgress = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (socket.writable && inProgress?.headersSent !== true) {
    const code = error.code;
    const refusal = (code !== undefined && Object.hasOwn(REFUSALS, code) && REFUSALS[code]) || MALFORMED;
    // a connection its client ended mid-request (the parser's end-of-file) was left, not refused
    if (code !== "HPE_INVALID_EOF_STATE") refusedConnections.set(socket, refusal);
    writeRefusal(socket, refusal);
  }
  socket.destroy();
}

/** Writes a refusal straight to a connection, as a whole response that closes it. */
function writeRefusal(socket: Duplex, refusal: Refusal): void {
  const { status, body } = renderRefusal(refusal);
  const id = mintRequestId();
  socket.write(
    `HTTP/1.1 ${status} ${refusal.reason}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${id}\r\nrequest-id: ${id}\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}

/** A refusal's status and body, in the shape both SDKs read. */
function renderRefusal(refusal: Refusal): { status: number; body: string } {
  const { status, kind } = ERROR_CODES[refusal.code];
  const type = kind === "timeout" ? "timeout_error" : "invalid_request_error";
  const body = JSON.stringify({
    type: "error",
    error: { type, message: refusal.message, param: null, code: refusal.code },
  });
  return { status, body };
}

const CONNECT_REFUSED: Refusal = {
  code: "LETHE_METHOD_NOT_ALLOWED",
  reason: "Method Not Allowed",
  message: "This gateway is not a proxy: it serves no CONNECT tunnels.",
};

/** Answers a CONNECT (a proxy's tunnel request) with 405 in the shape both SDKs read, and closes the connection. */
export function answerConnect(socket: Duplex): void {
  // Node takes its own error listener off a socket it hands over for CONNECT: without one,
  // a client that resets the connection would end the process (an unhandled 'error')
  socket.on("error", () => socket.destroy());
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  writeRefusal(socket, CONNECT_REFUSED);
  // the head of a tunnel the client may already be sending is not read: the answer goes, then the connection
  socket.end(() => socket.destroy());
}

const EXPECTATION_FAILED: Refusal = {
  code: "LETHE_EXPECTATION_FAILED",
  reason: "Expectation Failed",
  message: "The only expectation this gateway meets is 100-continue.",
};

/**
 * Answers a request to a route other than the metered endpoints whose `Expect` names
 * something other than `100-continue` (Node's `checkExpectation`; the metered endpoints
 * answer in their caller's format, MeteredCall). Node's own answer was a bare 417.
 */
export function answerExpectationFailed(request: IncomingMessage, response: ServerResponse): void {
  const { status, body } = renderRefusal(EXPECTATION_FAILED);
  const id = mintRequestId();
  response.writeHead(status, [
    "content-type",
    "application/json; charset=utf-8",
    "content-length",
    Buffer.byteLength(body),
    "x-request-id",
    id,
    "request-id",
    id,
    "connection",
    "close",
  ]);
  response.end(body);
  if (!request.complete) dropRestOfBody(request);
}
