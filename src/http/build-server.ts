import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { LetheError, toLetheError, UpstreamError } from "../errors/lethe-error.js";
import { renderAnthropicError } from "../formats/anthropic/anthropic-error.js";
import { renderOpenAIError } from "../formats/openai/openai-error.js";
import { openAIChatSurface } from "../formats/openai/openai-surface.js";
import type { ClientSurface } from "../formats/surface/client-surface.js";
import { Exchange, mintRequestId } from "../metering/exchange.js";
import { finishExchange, type Gateway } from "./gateway.js";
import { parseJsonBody } from "./parse-json-body.js";
import { registerHealthRoutes } from "./routes/health-routes.js";
import { inferenceHandler, RejectedBySupplier } from "./routes/inference-route.js";
import { registerModelsRoute } from "./routes/models-route.js";

declare module "fastify" {
  interface FastifyRequest {
    exchange: Exchange | null;
  }
}

/** Fastify's own error codes that mean "bad input", mapped to Lethe codes. */
function fromFastifyError(error: FastifyError): LetheError | null {
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new LetheError("LETHE_BODY_TOO_LARGE", "The request body is larger than this gateway accepts.");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new LetheError("LETHE_INVALID_JSON", "The request body is empty or incomplete; send a JSON object.");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new LetheError("LETHE_INVALID_REQUEST", "Send the request body as application/json.");
    default:
      return null;
  }
}

/** The error renderer of the surface a URL belongs to: Anthropic's for /v1/messages, OpenAI's otherwise. */
function rendererFor(url: string): (error: LetheError, detail?: string) => string {
  return url.startsWith("/v1/messages") ? renderAnthropicError : renderOpenAIError;
}

/** Builds the HTTP server with every route; it is not listening yet. */
export function buildServer(gateway: Gateway): FastifyInstance {
  const app = Fastify({
    // Fastify's logger would serialise requests and errors: Lethe logs allow-listed events only
    logger: false,
    bodyLimit: gateway.config.limits.maxBodyBytes,
    return503OnClosing: true,
    forceCloseConnections: false,
    keepAliveTimeout: 72_000,
    routerOptions: { ignoreTrailingSlash: true },
  });
  app.decorateRequest("exchange", null);
  app.removeAllContentTypeParsers();
  // every body is read as JSON whatever its content type (curl -d sends form encoding)
  app.addContentTypeParser("*", { parseAs: "buffer" }, parseJsonBody);

  const surfaces: ClientSurface[] = [openAIChatSurface];
  for (const surface of surfaces) {
    app.post(surface.endpoint, {
      onRequest: async (request, reply) => {
        const exchange = new Exchange(mintRequestId(), surface.endpoint, surface.format);
        request.exchange = exchange;
        reply.header("x-request-id", exchange.requestId);
        reply.header("request-id", exchange.requestId);
        if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
        exchange.auth = await gateway.authenticator.authenticate(request.headers);
      },
      handler: inferenceHandler(gateway, surface),
    });
  }
  registerModelsRoute(app, gateway);
  registerHealthRoutes(app, gateway);

  app.setNotFoundHandler((request, reply) => {
    const error = new LetheError("LETHE_NOT_FOUND", "No such endpoint.");
    void reply.code(404).type("application/json").send(rendererFor(request.url)(error));
  });

  app.setErrorHandler((thrown: unknown, request: FastifyRequest, reply: FastifyReply) => {
    let error: LetheError;
    let detail: string | undefined;
    if (thrown instanceof RejectedBySupplier) {
      error = thrown.error;
      detail = thrown.detail;
    } else if (thrown instanceof LetheError) {
      error = thrown;
    } else {
      const fastifyError = thrown as FastifyError;
      error = (typeof fastifyError?.code === "string" && fromFastifyError(fastifyError)) || toLetheError(thrown);
    }
    if (error.code === "LETHE_INTERNAL")
      gateway.log.event("request_failed", { status: error.status, code: error.code });
    const exchange = request.exchange;
    if (exchange !== null) finishExchange(gateway, exchange, error.status, error.code);
    if (reply.sent || reply.raw.headersSent) return;
    if (error instanceof UpstreamError && error.retryAfterSeconds !== null) {
      reply.header("retry-after", String(Math.ceil(error.retryAfterSeconds)));
    }
    void reply.code(error.status).type("application/json").send(rendererFor(request.url)(error, detail));
  });
  return app;
}
