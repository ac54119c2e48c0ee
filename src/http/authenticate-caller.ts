import type { IncomingHttpHeaders } from "node:http";
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
  connection: object,
  address: string,
): MaybePromise<AuthContext> {
  const throttled = gateway.authThrottle.check(address, connection);
  if (throttled !== undefined) return throttled.then(() => checkKey(gateway, headers, connection, address));
  return checkKey(gateway, headers, connection, address);
}

function checkKey(
  gateway: Gateway,
  headers: IncomingHttpHeaders,
  connection: object,
  address: string,
): MaybePromise<AuthContext> {
  let auth: MaybePromise<AuthContext>;
  try {
    auth = gateway.authenticator.authenticate(headers, connection);
  } catch (thrown) {
    return countFailure(gateway, address, connection, thrown);
  }
  return auth instanceof Promise
    ? auth.catch((thrown: unknown) => countFailure(gateway, address, connection, thrown))
    : auth;
}

async function countFailure(gateway: Gateway, address: string, connection: object, thrown: unknown): Promise<never> {
  if (thrown instanceof LetheError && thrown.kind === "authentication")
    await gateway.authThrottle.recordFailure(address, connection);
  throw thrown;
}
