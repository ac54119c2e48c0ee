import type { IncomingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import { LetheError } from "../errors/lethe-error.js";
import type { AuthContext } from "../keys/authenticator.js";
import type { MaybePromise } from "../lang/maybe-promise.js";
import type { Gateway } from "./gateway.js";

/**
 * Authenticates a caller, refusing addresses that failed too often and counting new
 * failures. Synchronous when the key is cached and the address has nothing to answer for.
 */
export function authenticate(
  gateway: Gateway,
  headers: IncomingHttpHeaders,
  socket: Socket,
): MaybePromise<AuthContext> {
  const peer = socket.remoteAddress ?? "";
  const clients = gateway.clientAddresses;
  // through a trusted proxy one connection carries many clients: the throttle then hashes
  // each request's own client instead of keeping one hash per connection
  const viaProxy = clients.isTrustedProxy(peer);
  const address = viaProxy ? clients.clientOf(peer, headers) : peer;
  const connection = viaProxy ? undefined : socket;
  const throttled = gateway.authThrottle.check(address, connection);
  if (throttled !== undefined) return throttled.then(() => checkKey(gateway, headers, socket, address, connection));
  return checkKey(gateway, headers, socket, address, connection);
}

function checkKey(
  gateway: Gateway,
  headers: IncomingHttpHeaders,
  socket: Socket,
  address: string,
  connection: object | undefined,
): MaybePromise<AuthContext> {
  let auth: MaybePromise<AuthContext>;
  try {
    // the key's HMAC is reused per connection while the same header comes: safe behind a proxy too
    auth = gateway.authenticator.authenticate(headers, socket);
  } catch (thrown) {
    return countFailure(gateway, address, connection, thrown);
  }
  return auth instanceof Promise
    ? auth.catch((thrown: unknown) => countFailure(gateway, address, connection, thrown))
    : auth;
}

async function countFailure(
  gateway: Gateway,
  address: string,
  connection: object | undefined,
  thrown: unknown,
): Promise<never> {
  if (thrown instanceof LetheError && thrown.kind === "authentication")
    await gateway.authThrottle.recordFailure(address, connection);
  throw thrown;
}
