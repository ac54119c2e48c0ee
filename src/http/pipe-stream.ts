import type { ServerResponse } from "node:http";
import { LetheError, toLetheError } from "../errors/lethe-error.js";
import type { StreamTranslator } from "../formats/surface/client-surface.js";
import type { Exchange } from "../metering/exchange.js";
import { unreadableAnswer } from "../suppliers/http/read-json.js";
import type { WireEvent } from "../suppliers/supplier.js";
import { finishExchange, type Gateway } from "./gateway.js";

/**
 * Resolves true when the response emits `progress` ("drain": the socket can take more;
 * "finish": all of it was sent) or closes, false when `stallMs` passed first (a large event
 * is written in slices, so that is the client's own pace): a client that stops reading would
 * otherwise hold its stream, the supplier connection under it and the request's record for
 * ever (the supplier's own idle timeout never fires while Lethe holds it back).
 */
function progressed(response: ServerResponse, progress: "drain" | "finish", stallMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (moved: boolean) => {
      clearTimeout(timer);
      response.off(progress, onProgress);
      response.off("close", onProgress);
      resolve(moved);
    };
    const onProgress = () => done(true);
    const timer = setTimeout(() => done(false), stallMs);
    response.on(progress, onProgress);
    response.on("close", onProgress);
  });
}

/**
 * An event longer than this is written a slice at a time, each once the client took the one
 * before: the stall bound then measures the client's reading, not how long one large event
 * (a tool call's arguments, an image) takes a slow but steady reader.
 */
const SLICE_CHARS = 64 * 1024;

/** Writes a large event in slices; `room` as `write` says it, or "stalled" when the client took nothing for `stallMs`. */
async function writeInSlices(response: ServerResponse, text: string, stallMs: number): Promise<boolean | "stalled"> {
  let start = 0;
  for (;;) {
    let end = Math.min(text.length, start + SLICE_CHARS);
    // never between the halves of a surrogate pair: each slice is encoded to UTF-8 on its own
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    const room = response.write(text.slice(start, end));
    start = end;
    if (start >= text.length) return room;
    if (!room && !(await progressed(response, "drain", stallMs))) return "stalled";
    if (response.destroyed) return false;
  }
}

/**
 * Ends a response with a whole JSON answer under the same stall bound as a stream: a client
 * that asks for a large answer and never reads it would otherwise hold its connection and
 * the answer in memory for ever (Node's sockets have no write timeout). A large answer goes
 * in slices; whatever is left queued once it is all handed over (past the socket's buffer)
 * is watched until it is sent. The answer was served and is metered as such.
 */
export async function endAnswer(response: ServerResponse, text: string, stallMs: number): Promise<void> {
  if (text.length > SLICE_CHARS) {
    const room = await writeInSlices(response, text, stallMs);
    if (room === "stalled" || (room === false && !(await progressed(response, "drain", stallMs)))) {
      response.destroy();
      return;
    }
    response.end();
  } else response.end(text);
  // what is still queued waits for a reader: only then is a timer worth arming
  if (response.socket?.writableNeedDrain === true && !(await progressed(response, "finish", stallMs)))
    response.destroy();
}

/**
 * How many events a stream relays before it lets the event loop turn. A supplier that got
 * ahead of its client (or of a busy gateway) hands over a whole socket buffer at once,
 * hundreds of events: relayed in one go, they held every other connection back for as long
 * (small requests waited 100 ms beside 40 such streams). A turn every few events costs a
 * stream that keeps pace nothing it would notice.
 */
const EVENTS_PER_TURN = 32;

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Who closed a stream's connection: its client, or, once the shutdown deadline cut every
 * request, the gateway (a client that was not reading had its connection closed with it).
 */
function closedBy(gateway: Gateway): LetheError["code"] {
  return gateway.inFlight.closed ? "LETHE_SHUTTING_DOWN" : "LETHE_CLIENT_CLOSED";
}

/** How a stream ended for its client: as a client that left (499), not as a supplier failure. */
function endedByClient(code: LetheError["code"] | null): boolean {
  return code === "LETHE_CLIENT_CLOSED" || code === "LETHE_CLIENT_STALLED";
}

/**
 * One supplier event in the client's format. An event that is JSON of the wrong shape
 * (`message: null`, `choices: [null]`) can make a translator throw: the supplier's
 * garbage, ending the stream as a bad response (and counted against the route), not as
 * Lethe's own failure.
 */
function translate(translator: StreamTranslator, event: WireEvent): string | null {
  try {
    return translator.event(event);
  } catch (thrown) {
    if (thrown instanceof LetheError) throw thrown;
    throw unreadableAnswer();
  }
}

/**
 * Pipes a supplier stream to the client event by event. Backpressure: when the
 * socket's buffer is full we stop pulling from the supplier until it drains. A
 * failure after the 200 has started becomes an error event in the client's format
 * and a clean close, never a thrown exception on a live socket. Returns the error
 * code the stream ended with, or null when it completed.
 */
export async function pipeStream(
  gateway: Gateway,
  exchange: Exchange,
  events: AsyncIterable<WireEvent>,
  translator: StreamTranslator,
  response: ServerResponse,
  /** How long the client may read nothing before its connection is closed (the route's idle_ms). */
  stallMs: number,
): Promise<LetheError["code"] | null> {
  let errorCode: LetheError["code"] | null = null;
  let sentFirst = false;
  let inTurn = 0;
  try {
    for await (const event of events) {
      if (response.destroyed) break;
      const text = translate(translator, event);
      if (text === null) continue;
      const room = text.length <= SLICE_CHARS ? response.write(text) : await writeInSlices(response, text, stallMs);
      if (!sentFirst) {
        sentFirst = true;
        // Node holds a response's writes until the end of the tick, to send them together;
        // the first event (and the headers with it) goes at once: it is the time to first
        // byte, and the events that arrived with it would otherwise wait for their relay
        response.uncork();
      }
      if (room === true) {
        if (++inTurn < EVENTS_PER_TURN) continue;
        inTurn = 0;
        await nextTurn();
        continue;
      }
      if (room === "stalled" || !(await progressed(response, "drain", stallMs))) {
        errorCode = "LETHE_CLIENT_STALLED";
        response.destroy();
      }
      // leaving the loop ends the supplier's stream, which aborts its request
      if (response.destroyed) break;
    }
    if (response.destroyed) errorCode ??= closedBy(gateway);
    else response.end(translator.end());
  } catch (thrown) {
    const error = toLetheError(thrown);
    if (response.destroyed || error.code === "LETHE_CLIENT_CLOSED") {
      errorCode ??= closedBy(gateway);
    } else {
      errorCode = error.code;
      if (exchange.supplier !== null) {
        gateway.log.event("stream_error", { supplier: exchange.supplier, model: exchange.model, code: error.code });
      }
      response.end(translator.error(error));
    }
  } finally {
    // what the client was sent is billed: the translator counts it when the supplier's count
    // never came (a stream cut by the shutdown whose client was not reading had no ending written)
    if (endedByClient(errorCode) || (errorCode === "LETHE_SHUTTING_DOWN" && response.destroyed)) translator.end();
    finishExchange(gateway, exchange, endedByClient(errorCode) ? 499 : 200, errorCode);
  }
  return errorCode;
}
