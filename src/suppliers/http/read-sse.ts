import { createParser, type EventSourceMessage } from "eventsource-parser";
import { badUpstreamResponse } from "./read-json.js";
import type { UpstreamResponse } from "./supplier-http-client.js";

/**
 * Yields the server-sent events of an upstream response as they arrive, parsed by
 * eventsource-parser. Nothing is buffered beyond the events of one network chunk,
 * and pulling is what reads the socket, so backpressure reaches the supplier.
 * Stopping early (the client left) aborts the upstream request.
 *
 * A stream may run as long as its events keep coming, but one event (or comment) may
 * not outgrow the supplier's max_response_bytes: the parser holds an unfinished line
 * in memory, and a supplier that never ends one must not fill the gateway's. The
 * bound is counted in whole network chunks since the last event or comment.
 */
export async function* readSse(response: UpstreamResponse): AsyncGenerator<EventSourceMessage> {
  const pending: EventSourceMessage[] = [];
  let completed = false;
  const parser = createParser({
    onEvent: (message) => pending.push(message),
    onComment: () => {
      completed = true;
    },
  });
  const decoder = new TextDecoder();
  let sinceLastEvent = 0;
  for await (const chunk of response.stream()) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    if (completed || pending.length > 0) {
      completed = false;
      sinceLastEvent = 0;
    } else {
      sinceLastEvent += chunk.length;
      // leaving the loop ends response.stream(), which aborts the upstream request
      if (sinceLastEvent > response.maxBytes) {
        throw badUpstreamResponse("The supplier sent a stream event larger than this gateway accepts.");
      }
    }
    for (let index = 0; index < pending.length; index++) yield pending[index] as EventSourceMessage;
    pending.length = 0;
  }
}
