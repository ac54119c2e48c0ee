import { createParser, type EventSourceMessage } from "eventsource-parser";
import type { UpstreamResponse } from "./supplier-http-client.js";

/**
 * Yields the server-sent events of an upstream response as they arrive, parsed by
 * eventsource-parser. Nothing is buffered beyond the events of one network chunk,
 * and pulling is what reads the socket, so backpressure reaches the supplier.
 * Stopping early (the client left) aborts the upstream request.
 */
export async function* readSse(response: UpstreamResponse): AsyncGenerator<EventSourceMessage> {
  const pending: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (message) => pending.push(message) });
  const decoder = new TextDecoder();
  for await (const chunk of response.stream()) {
    parser.feed(decoder.decode(chunk, { stream: true }));
    for (let index = 0; index < pending.length; index++) yield pending[index] as EventSourceMessage;
    pending.length = 0;
  }
}
