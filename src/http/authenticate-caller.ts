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
  // nearly every request: a cached key, answered without building the look-up path below
  let known: AuthContext | undefined;
  try {
    // the key's HMAC is reused per connection while the same header comes: safe behind a proxy too
    known = gateway.authenticator.cachedContext(headers, socket);
  } catch (thrown) {
    return countFailure(gateway, headers, socket, thrown, false);
  }
  if (known !== undefined) return known;
  let auth: MaybePromise<AuthContext>;
  // a key the cache does not know is looked up only once the throttle counted it as a failure
  let reserved = false;
  const admit = () => {
    const reserving = gateway.authThrottle.reserve(clientAddress(gateway, headers, socket), socket);
    if (reserving === undefined) reserved = true;
    else
      return reserving.then(() => {
        reserved = true;
      });
  };
  try {
    auth = gateway.authenticator.authenticate(headers, socket, admit);
  } catch (thrown) {
    return countFailure(gateway, headers, socket, thrown, false);
  }
  if (!(auth instanceof Promise)) return auth;
  return auth.then(
    (context) => {
      if (reserved) gateway.authThrottle.release(clientAddress(gateway, headers, socket), socket);
      return context;
    },
    (thrown: unknown) => countFailure(gateway, headers, socket, thrown, reserved),
  );
}

/** Counts an authentication failure (a reserved one is counted already); any other failure gives a reservation back. */
async function countFailure(
  gateway: Gateway,
  headers: IncomingHttpHeaders,
  socket: Socket,
  thrown: unknown,
  reserved: boolean,
): Promise<never> {
  const address = clientAddress(gateway, headers, socket);
  if (thrown instanceof LetheError && thrown.kind === "authentication")
    await gateway.authThrottle.recordFailure(address, socket, reserved);
  else if (reserved) gateway.authThrottle.release(address, socket);
  throw thrown;
}
