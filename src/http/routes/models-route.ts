import type { FastifyInstance } from "fastify";
import { LetheError } from "../../errors/lethe-error.js";
import { authenticate } from "../authenticate-caller.js";
import type { Gateway } from "../gateway.js";

/** `GET /v1/models`: the configured models, in Anthropic's shape when the request carries `anthropic-version`. */
export function registerModelsRoute(app: FastifyInstance, gateway: Gateway): void {
  app.get("/v1/models", {
    onRequest: async (request) => {
      if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
      await authenticate(gateway, request.headers, request.raw.socket, request.ip);
    },
    handler: async (request, reply) => {
      const models = [...gateway.config.models.values()];
      const zdr = (model: (typeof models)[number]) => model.routes.some((route) => route.supplier.zdr);
      if (request.headers["anthropic-version"] !== undefined) {
        const data = models.map((model) => ({
          type: "model",
          id: model.id,
          display_name: model.description ?? model.id,
          created_at: new Date(model.created * 1000).toISOString(),
          zdr: zdr(model),
        }));
        return reply
          .type("application/json")
          .send(
            JSON.stringify({ data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null }),
          );
      }
      const data = models.map((model) => ({
        id: model.id,
        object: "model",
        created: model.created,
        owned_by: "lethe",
        zdr: zdr(model),
      }));
      return reply.type("application/json").send(JSON.stringify({ object: "list", data }));
    },
  });
}
