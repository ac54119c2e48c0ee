import type { IncomingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import { LetheError } from "../errors/lethe-error.js";
import type { AuthContext } from "../keys/authenticator.js";
import type { MaybePromise } from "../lang/maybe-promise.js";
import type { Gateway } from "./gateway.js";

/**
 * Authenticates a caller, refusing addresses that failed too often and counting new
 * failures. Synchronous when the key is cached and the address has nothing to answer for;
 * the client's address (behind a trusted proxy, read from X-Forwarded-For) is worked out
 * only when the throttle has something to check it against, or a failure to count.
 */
export function authenticate(
  gateway: Gateway,
  headers: IncomingHttpHeaders,
  socket: Socket,
): MaybePromise<AuthContext> {
  const throttle = gateway.authThrottle;
  const throttled = throttle.idle ? undefined : throttle.check(clientAddress(gateway, headers, socket), socket);
  if (throttled !== undefined) return throttled.then(() => checkKey(gateway, headers, socket));
  return checkKey(gateway, headers, socket);
}

/** The client behind `socket`: its peer, or whom a trusted reverse proxy forwarded for. */
export function clientAddress(gateway: Gateway, headers: IncomingHttpHeaders, socket: Socket): string {
  return gateway.clientAddresses.clientOf(socket, socket.remoteAddress ?? "", headers);
}

function checkKey(gateway: Gateway, headers: IncomingHttpHeaders, socket: Socket): MaybePromise<AuthContext> {
  let auth: MaybePromise<AuthContext>;
  try {
    // the key's HMAC is reused per connection while the same header comes: safe behind a proxy too
    auth = gateway.authenticator.authenticate(headers, socket);
  } catch (thrown) {
    return countFailure(gateway, headers, socket, thrown);
  }
  return auth instanceof Promise
    ? auth.catch((thrown: unknown) => countFailure(gateway, headers, socket, thrown))
    : auth;
}

async function countFailure(
  gateway: Gateway,
  headers: IncomingHttpHeaders,
  socket: Socket,
  thrown: unknown,
): Promise<never> {
  if (thrown instanceof LetheError && thrown.kind === "authentication")
    await gateway.authThrottle.recordFailure(clientAddress(gateway, headers, socket), socket);
  throw thrown;
}
