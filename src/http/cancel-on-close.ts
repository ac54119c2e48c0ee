import type { ServerResponse } from "node:http";
import { Cancellation } from "../suppliers/cancellation.js";
import type { Gateway } from "./gateway.js";

/**
 * Cancels the upstream call when the client goes away before the response is complete; it
 * is in the gateway's in-flight list until then, for the shutdown deadline to cut.
 */
export function cancelOnClientClose(gateway: Gateway, response: ServerResponse): Cancellation {
  const cancellation = new Cancellation();
  // the client may have left while its key or body was being looked at: no close event comes then
  if (response.destroyed) {
    cancellation.abort();
    return cancellation;
  }
  gateway.inFlight.add(cancellation);
  response.once("close", () => {
    gateway.inFlight.remove(cancellation);
    if (!response.writableFinished) cancellation.abort();
  });
  return cancellation;
}
