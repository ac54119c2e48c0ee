import { createParser, type EventSourceMessage } from "eventsource-parser";
import type { UpstreamResponse } from "./supplier-http-client.js";
import { upstreamFailure } from "./upstream-failure.js";

/**
 * Yields the server-sent events of an upstream response as they arrive, parsed by
 * eventsource-parser. Nothing is buffered beyond the events of one network chunk,
 * and pulling is what reads the socket, so backpressure reaches the supplier.
 */
export async function* readSse(response: UpstreamResponse): AsyncGenerator<EventSourceMessage> {
  const pending: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (message) => pending.push(message) });
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body) {
      parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
      for (let index = 0; index < pending.length; index++) yield pending[index] as EventSourceMessage;
      pending.length = 0;
    }
  } catch (thrown) {
    throw upstreamFailure(thrown, response.signal, true);
  } finally {
    response.finish();
    if (!response.body.destroyed) response.body.destroy();
  }
}
