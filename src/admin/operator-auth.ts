import type { FastifyRequest } from "fastify";
import { LetheError } from "../errors/lethe-error.js";
import { clientAddress } from "../http/authenticate-caller.js";
import type { Gateway } from "../http/gateway.js";
import { isWellFormedKey, type KeyHasher, OPERATOR_TOKEN_PREFIX } from "../keys/api-key.js";
import type { OperatorRecord, OperatorStore } from "../store/operator-store.js";

/** Look-ups of operator tokens on their way, per store and token hash. */
const pendingLookUps = new WeakMap<OperatorStore, Map<string, Promise<OperatorRecord | undefined>>>();

/**
 * One look-up per token at a time, and `admit` (the throttle's reservation) asked once for
 * it: an admin script sending 50 calls at once with its token is one look-up, not 50
 * reservations that would use up the address's failure allowance.
 */
function sharedLookUp(
  operators: OperatorStore,
  tokenHash: string,
  admit: (() => Promise<void> | undefined) | undefined,
): Promise<OperatorRecord | undefined> {
  let pending = pendingLookUps.get(operators);
  if (pending === undefined) {
    pending = new Map();
    pendingLookUps.set(operators, pending);
  }
  const joined = pending.get(tokenHash);
  if (joined !== undefined) return joined;
  const lookUp = (async () => {
    await admit?.();
    return operators.findByHash(tokenHash);
  })();
  const inFlight = pending;
  const done = () => {
    if (inFlight.get(tokenHash) === lookUp) inFlight.delete(tokenHash);
  };
  lookUp.then(done, done);
  inFlight.set(tokenHash, lookUp);
  return lookUp;
}

/** Checks the operator token of an admin request; customer keys are refused here. */
export async function authenticateOperator(
  request: FastifyRequest,
  operators: OperatorStore,
  hasher: KeyHasher,
  /** Called before a well-formed token is looked up; may refuse by rejecting (the throttle's reservation). */
  admit?: () => Promise<void> | undefined,
): Promise<OperatorRecord> {
  const header = request.headers.authorization;
  const token = header === undefined ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  if (token === undefined || !isWellFormedKey(token, OPERATOR_TOKEN_PREFIX)) {
    throw new LetheError(
      "LETHE_INVALID_OPERATOR_TOKEN",
      "This endpoint needs 'Authorization: Bearer <operator token>' (lethe operators create NAME).",
    );
  }
  const operator = await sharedLookUp(operators, hasher.hash(token), admit);
  if (operator === undefined || operator.revokedAt !== null) {
    throw new LetheError("LETHE_INVALID_OPERATOR_TOKEN", "The operator token is not valid.");
  }
  return operator;
}

/**
 * `authenticateOperator` behind the per-address throttle that customer keys get: operator
 * tokens can be guessed at like keys. Used by the admin API and, when
 * `server.metrics_auth` is `operator`, by `/metrics`.
 */
export async function authenticateThrottledOperator(
  request: FastifyRequest,
  gateway: Gateway,
): Promise<OperatorRecord> {
  const throttle = gateway.authThrottle;
  const address = clientAddress(gateway, request.headers, request.raw.socket);
  await throttle.check(address);
  // every look-up is counted as a failure before it starts (a burst would otherwise all pass
  // the check first), and given back when the token was good
  let reserved = false;
  const admit = async () => {
    await throttle.reserve(address);
    reserved = true;
  };
  try {
    const operator = await authenticateOperator(request, gateway.store.operators, gateway.hasher, admit);
    if (reserved) throttle.release(address);
    return operator;
  } catch (error) {
    if (error instanceof LetheError && error.kind === "authentication")
      await throttle.recordFailure(address, undefined, reserved);
    else if (reserved) throttle.release(address);
    throw error;
  }
}
