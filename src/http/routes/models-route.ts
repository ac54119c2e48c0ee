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
      const models = [...gateway.config.models.values()];
      if (!isAnthropic(request)) {
        return sendJson(reply, { object: "list", data: models.map((model) => modelView(model, false)) });
      }
      const { from, to, hasMore } = anthropicPage(models, request.query as Record<string, unknown>);
      const data = models.slice(from, to).map((model) => modelView(model, true));
      return sendJson(reply, {
        data,
        has_more: hasMore,
        first_id: data[0]?.id ?? null,
        last_id: data.at(-1)?.id ?? null,
      });
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

const DEFAULT_PAGE = 20;
const MAX_PAGE = 1000;

/** A page of the model list: `models.slice(from, to)`, and whether more lie beyond it in its direction. */
interface Page {
  from: number;
  to: number;
  hasMore: boolean;
}

function badQuery(param: string, message: string): LetheError {
  return new LetheError("LETHE_INVALID_REQUEST", message, { param });
}

/**
 * The slice of the model list Anthropic's pagination asks for: `limit` models (1 to 1,000,
 * 20 by default) after `after_id` or before `before_id`, as its API pages them (the SDK's
 * auto-pagination follows `last_id` while `has_more`). The ids are the client's own strings:
 * matched against the configured ids, never repeated in a message.
 */
function anthropicPage(models: ModelConfig[], query: Record<string, unknown>): Page {
  const { limit: given, after_id: afterId, before_id: beforeId } = query;
  const limit = given === undefined ? DEFAULT_PAGE : typeof given === "string" ? Number(given) : Number.NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw badQuery("limit", "limit must be given once, as an integer from 1 to 1000.");
  }
  if (afterId !== undefined && beforeId !== undefined) {
    throw badQuery("before_id", "Give after_id or before_id, not both.");
  }
  const indexOf = (id: unknown, param: string): number => {
    const index = typeof id === "string" ? models.findIndex((model) => model.id === id) : -1;
    if (index === -1) throw badQuery(param, `${param} names no model listed here.`);
    return index;
  };
  if (beforeId !== undefined) {
    const to = indexOf(beforeId, "before_id");
    const from = Math.max(0, to - limit);
    return { from, to, hasMore: from > 0 };
  }
  const from = afterId === undefined ? 0 : indexOf(afterId, "after_id") + 1;
  const to = Math.min(models.length, from + limit);
  return { from, to, hasMore: to < models.length };
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
