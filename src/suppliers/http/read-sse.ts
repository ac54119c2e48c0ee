import { createParser, type EventSourceMessage } from "eventsource-parser";
import { badUpstreamResponse } from "./read-json.js";
import type { UpstreamResponse } from "./supplier-http-client.js";

/**
 * Yields the server-sent events of an upstream response as they arrive, parsed by
 * eventsource-parser. Nothing is buffered beyond the events of one network chunk,
 * and pulling is what reads the socket, so backpressure reaches the supplier.
 * Stopping early (the client left) aborts the upstream request.
 *
 * A stream may run as long as its events keep coming, but what the parser holds of
 * one unfinished event may not outgrow the supplier's max_response_bytes (counted in
 * characters): a supplier that never ends an event must not fill the gateway's memory.
 */
export async function* readSse(response: UpstreamResponse): AsyncGenerator<EventSourceMessage> {
  const pending: EventSourceMessage[] = [];
  let tooLarge = false;
  const parser = createParser({
    onEvent: (message) => pending.push(message),
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") tooLarge = true;
    },
    maxBufferSize: response.maxBytes,
  });
  const decoder = new TextDecoder();
  for await (const chunk of response.stream()) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    // leaving the loop ends response.stream(), which aborts the upstream request
    if (tooLarge) throw badUpstreamResponse("The supplier sent a stream event larger than this gateway accepts.");
    for (let index = 0; index < pending.length; index++) yield pending[index] as EventSourceMessage;
    pending.length = 0;
  }
}
