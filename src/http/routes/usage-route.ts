import type { FastifyInstance } from "fastify";
import { LetheError } from "../../errors/lethe-error.js";
import type { AuthContext } from "../../keys/authenticator.js";
import { usageForAccount } from "../../usage/usage-query.js";
import { authenticate } from "../authenticate-caller.js";
import type { Gateway } from "../gateway.js";

/** `GET /v1/usage?from=&to=&group_by=day|model|key`: the calling account's own usage, from metadata only. */
export function registerUsageRoute(app: FastifyInstance, gateway: Gateway): void {
  app.get("/v1/usage", {
    onRequest: async (request) => {
      if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
      request.auth = await authenticate(gateway, request.headers, request.raw.socket);
    },
    handler: async (request, reply) => {
      const auth = request.auth as AuthContext;
      const report = await usageForAccount(gateway.store, auth.accountId, request.query);
      return reply.type("application/json").send(JSON.stringify(report));
    },
  });
}
