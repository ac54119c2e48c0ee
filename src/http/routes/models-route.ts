import type { FastifyInstance } from "fastify";
import { LetheError } from "../../errors/lethe-error.js";
import type { Gateway } from "../gateway.js";

/** `GET /v1/models`: the configured models, in OpenAI's list shape. */
export function registerModelsRoute(app: FastifyInstance, gateway: Gateway): void {
  app.get("/v1/models", {
    onRequest: async (request) => {
      request.exchange = null;
      if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
      await gateway.authenticator.authenticate(request.headers);
    },
    handler: async (_request, reply) => {
      const data = [...gateway.config.models.values()].map((model) => ({
        id: model.id,
        object: "model",
        created: model.created,
        owned_by: "lethe",
        zdr: model.routes.some((route) => route.supplier.zdr),
      }));
      return reply.type("application/json").send(JSON.stringify({ object: "list", data }));
    },
  });
}
