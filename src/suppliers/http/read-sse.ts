import { createParser, type EventSourceMessage } from "eventsource-parser";
import { badUpstreamResponse } from "./read-json.js";
import type { UpstreamResponse } from "./supplier-http-client.js";

/**
 * Yields the server-sent events of an upstream response as they arrive, parsed by
 * eventsource-parser. Nothing is buffered beyond the events of one network chunk,
 * and pulling is what reads the socket, so backpressure reaches the supplier.
 * Stopping early (the client left) aborts the upstream request.
 *
 * A stream may run as long as its events keep coming, but no event, whole or unfinished, may
 * outgrow the supplier's max_response_bytes: a supplier that never ends an event must not
 * fill the gateway's memory. The parser's own bound counts characters of the event's data,
 * and an event of many short `data:` lines costs the parser about 30 times its size in
 * heap (each line joins a new string): so the bytes fed since the last event are counted here.
 */
export async function* readSse(response: UpstreamResponse): AsyncGenerator<EventSourceMessage> {
  const pending: EventSourceMessage[] = [];
  let tooLarge = false;
  let sinceEvent = 0;
  const parser = createParser({
    onEvent: (message) => {
      // an event that came whole in one read never filled the parser's buffer: its own size
      // is checked here (UTF-8 takes at most three bytes a UTF-16 unit, so most skip the count)
      const data = message.data;
      if (data.length * 3 > response.maxBytes && Buffer.byteLength(data) > response.maxBytes) tooLarge = true;
      pending.push(message);
      sinceEvent = 0;
    },
    // a keep-alive comment leaves nothing in the parser: its own bytes (":", the text, the
    // newline) are taken off, but not what came before it, which may be half an event
    onComment: (comment) => {
      sinceEvent = Math.max(0, sinceEvent - Buffer.byteLength(comment) - 2);
    },
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") tooLarge = true;
    },
    maxBufferSize: response.maxBytes,
  });
  const decoder = new TextDecoder();
  let endsWithCR = false;
  let events = 0;
  // the body's first byte other than whitespace, to say what a stream without events was
  let opening = -1;
  for await (const chunk of response.stream()) {
    if (opening === -1) opening = firstNonSpace(chunk);
    // each event the chunk ends sets the count back to zero: what stays is what came since
    sinceEvent += chunk.length;
    const text = decoder.decode(chunk, { stream: true });
    if (text.length > 0) endsWithCR = text.charCodeAt(text.length - 1) === CR;
    parser.feed(text);
    if (sinceEvent > response.maxBytes) tooLarge = true;
    // leaving the loop ends response.stream(), which aborts the upstream request
    if (tooLarge) throw badUpstreamResponse("The supplier sent a stream event larger than this gateway accepts.");
    events += pending.length;
    for (let index = 0; index < pending.length; index++) yield pending[index] as EventSourceMessage;
    pending.length = 0;
  }
  // SSE lines may end with a lone CR: the parser holds a final one back in case LF follows,
  // and the body's end is that answer. Only then: an event the body cut off before its
  // blank line is not dispatched, as the SSE spec says.
  if (endsWithCR) parser.feed("\n");
  // some OpenAI-compatible servers ignore `stream` and answer with one JSON body: say so,
  // rather than leave the operator to read "ended before it was complete"
  if (events + pending.length === 0 && (opening === OPEN_BRACE || opening === OPEN_BRACKET)) {
    throw badUpstreamResponse("The supplier answered with a JSON body where an event stream was asked for.");
  }
  for (let index = 0; index < pending.length; index++) yield pending[index] as EventSourceMessage;
}

/** The first byte of `chunk` that is not JSON whitespace, or -1 when there is none. */
function firstNonSpace(chunk: Uint8Array): number {
  for (let index = 0; index < chunk.length; index++) {
    const byte = chunk[index] as number;
    if (byte !== 0x20 && byte !== 0x0a && byte !== 0x0d && byte !== 0x09) return byte;
  }
  return -1;
}

const CR = 13;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
