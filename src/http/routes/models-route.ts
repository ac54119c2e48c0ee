import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ModelConfig } from "../../config/load-config.js";
import { LetheError } from "../../errors/lethe-error.js";
import { authenticate } from "../authenticate-caller.js";
import type { Gateway } from "../gateway.js";

/**
 * `GET /v1/models` and `GET /v1/models/{model}`: the configured models, in Anthropic's
 * shape when the request carries `anthropic-version`, else in OpenAI's. Both SDKs'
 * `models.list()` and `models.retrieve()` work unchanged.
 */
export function registerModelsRoute(app: FastifyInstance, gateway: Gateway): void {
  const onRequest = async (request: FastifyRequest) => {
    if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
    await authenticate(gateway, request.headers, request.raw.socket);
  };

  app.get("/v1/models", {
    onRequest,
    handler: async (request, reply) => {
      const anthropic = isAnthropic(request);
      const data = [...gateway.config.models.values()].map((model) => modelView(model, anthropic));
      const list = anthropic
        ? { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null }
        : { object: "list", data };
      return sendJson(reply, list);
    },
  });

  // a wildcard, not `:model`: model ids may hold `/` (`meta-llama/Llama-3.1-8B`), which a
  // client may send as it is or percent-encoded; Fastify decodes both into the same id
  app.get("/v1/models/*", {
    onRequest,
    handler: async (request, reply) => {
      const requested = (request.params as { "*": string })["*"];
      const model = gateway.config.models.get(requested);
      // the requested id is the client's own string: it goes in no message, log or metric
      if (model === undefined) {
        throw new LetheError(
          "LETHE_UNKNOWN_MODEL",
          "The requested model does not exist here; GET /v1/models lists the models.",
          { param: "model" },
        );
      }
      return sendJson(reply, modelView(model, isAnthropic(request)));
    },
  });
}

function isAnthropic(request: FastifyRequest): boolean {
  return request.headers["anthropic-version"] !== undefined;
}

/** One model as OpenAI's `Model` or Anthropic's `ModelInfo`, plus whether a ZDR supplier serves it. */
function modelView(model: ModelConfig, anthropic: boolean) {
  const zdr = model.routes.some((route) => route.supplier.zdr);
  if (anthropic) {
    return {
      type: "model",
      id: model.id,
      display_name: model.description ?? model.id,
      created_at: new Date(model.created * 1000).toISOString(),
      zdr,
    };
  }
  return { id: model.id, object: "model", created: model.created, owned_by: "lethe", zdr };
}

function sendJson(reply: FastifyReply, value: unknown) {
  return reply.type("application/json").send(JSON.stringify(value));
}
