import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";

/** How long a refused body is read before the answer goes anyway. */
const DRAIN_MS = 5_000;

/** Connections that close behind a drained refusal's answer: nothing that follows on them is served. */
const closing = new WeakSet<Socket>();

/**
 * Whether a request came on a connection that closes once an earlier refusal is answered:
 * a client that pipelined it would never read its answer (the connection closes first), so
 * it must not be served, nor billed.
 */
export function closesAfterAnswer(request: IncomingMessage): boolean {
  return closing.has(request.socket);
}

/**
 * Answers a request refused before its body was read (too large, no key, a compressed body)
 * once the rest of that body has been read and dropped. Closing a connection with input
 * still unread makes the kernel reset it, and a client still sending, as the SDKs and curl
 * do, then gets EPIPE or ECONNRESET instead of the answer: so the answer waits for the
 * body's end. Bounded: past `maxBytes` more, or DRAIN_MS, it goes at once and the
 * connection closes behind it, so a caller cannot keep the gateway reading. What is read
 * is dropped chunk by chunk, never kept.
 */
export function answerAfterBody(request: IncomingMessage, maxBytes: number, answer: () => void): void {
  closing.add(request.socket);
  let dropped = 0;
  let answered = false;
  const finish = () => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    request.off("data", onData);
    request.off("end", finish);
    request.off("error", finish);
    answer();
  };
  const onData = (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > maxBytes) finish();
  };
  const timer = setTimeout(finish, DRAIN_MS);
  timer.unref();
  request.on("data", onData);
  request.once("end", finish);
  request.once("error", finish);
  request.resume();
}

/** How much of a body its route left unread is read and dropped after the answer. */
export const UNREAD_BODY_BYTES = 1024 * 1024;

/**
 * Bounds what is read of a body its route answered without reading (a GET with a body, an
 * admin request refused before its body was parsed, a client told not to send it): Node
 * would read and drop the rest until the request timeout, gigabytes from a caller without
 * a key. The answer went with `connection: close`; past UNREAD_BODY_BYTES more, or
 * DRAIN_MS, the connection is closed.
 */
export function dropRestOfBody(request: IncomingMessage): void {
  answerAfterBody(request, UNREAD_BODY_BYTES, () => {
    if (!request.complete) request.socket.destroy();
  });
}
