import type { FastifyRequest } from "fastify";
import { LetheError } from "../errors/lethe-error.js";
import { isWellFormedKey, type KeyHasher, OPERATOR_TOKEN_PREFIX } from "../keys/api-key.js";
import type { OperatorRecord, OperatorStore } from "../store/operator-store.js";

/** Checks the operator token of an admin request; customer keys are refused here. */
export async function authenticateOperator(
  request: FastifyRequest,
  operators: OperatorStore,
  hasher: KeyHasher,
): Promise<OperatorRecord> {
  const header = request.headers.authorization;
  const token = header === undefined ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  if (token === undefined || !isWellFormedKey(token, OPERATOR_TOKEN_PREFIX)) {
    throw new LetheError("LETHE_INVALID_OPERATOR_TOKEN", "Admin routes need 'Authorization: Bearer <operator token>'.");
  }
  const operator = await operators.findByHash(hasher.hash(token));
  if (operator === undefined || operator.revokedAt !== null) {
    throw new LetheError("LETHE_INVALID_OPERATOR_TOKEN", "The operator token is not valid.");
  }
  return operator;
}
