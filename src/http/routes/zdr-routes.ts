import type { FastifyInstance } from "fastify";
import type { Gateway } from "../gateway.js";

/**
 * `GET /v1/zdr`: the signed statement of what this deployment retains; `GET /v1/zdr/key`:
 * the Ed25519 public key that verifies it. Both are public, no key needed.
 */
export function registerZdrRoutes(app: FastifyInstance, gateway: Gateway): void {
  // serialised once per statement: a config reload signs a new one
  let served = gateway.statement;
  let statement = JSON.stringify(served);
  const current = () => {
    if (gateway.statement !== served) {
      served = gateway.statement;
      statement = JSON.stringify(served);
    }
    return statement;
  };
  const key = JSON.stringify({ algorithm: "ed25519", public_key: gateway.statement.public_key });
  app.get("/v1/zdr", async (_request, reply) => reply.type("application/json").send(current()));
  app.get("/v1/zdr/key", async (_request, reply) => reply.type("application/json").send(key));
}
