import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { registerAdminRoutes } from "../admin/admin-routes.js";
import { setRateLimitHeaders } from "../billing/rate-limit-headers.js";
import { RateLimitedError } from "../billing/rate-limits.js";
import type { RequestId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import { anthropicMessagesSurface } from "../formats/anthropic/anthropic-surface.js";
import { openAIChatSurface } from "../formats/openai/openai-surface.js";
import type { ClientSurface } from "../formats/surface/client-surface.js";
import type { AuthContext } from "../keys/authenticator.js";
import { Exchange, mintRequestId } from "../metering/exchange.js";
import type { ClientFormat, Endpoint } from "../metering/metadata-record.js";
import { errorHandler, sendError } from "./error-handler.js";
import type { Gateway } from "./gateway.js";
import { parseJsonBody } from "./parse-json-body.js";
import { registerCountTokensRoute } from "./routes/count-tokens-route.js";
import { registerHealthRoutes } from "./routes/health-routes.js";
import { inferenceHandler } from "./routes/inference-route.js";
import { registerModelsRoute } from "./routes/models-route.js";
import { registerUsageRoute } from "./routes/usage-route.js";
import { registerZdrRoutes } from "./routes/zdr-routes.js";

declare module "fastify" {
  interface FastifyRequest {
    exchange: Exchange | null;
    /** Who called a route that is not metered (models, usage). */
    auth: AuthContext | null;
  }
}

/**
 * The onRequest hook of a metered endpoint: opens its Exchange, refuses work while
 * draining, and authenticates before the body is even read.
 */
export function meteredRequest(gateway: Gateway, endpoint: Endpoint, format: ClientFormat) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const exchange = new Exchange(request.id as RequestId, endpoint, format);
    request.exchange = exchange;
    if (gateway.draining) throw new LetheError("LETHE_SHUTTING_DOWN", "This gateway is shutting down; retry.");
    // never serve unmetered: with the database away and the buffer full, refuse instead
    if (gateway.meter.pending >= gateway.config.metering.maxBuffered) {
      throw new LetheError("LETHE_METERING_UNAVAILABLE", "Metering is unavailable; retry shortly.", {
        retryAfterSeconds: 5,
      });
    }
    const auth = await authenticate(gateway, request);
    exchange.auth = auth;
    try {
      setRateLimitHeaders(reply, format, "requests", await gateway.limits.admitRequest(auth));
    } catch (error) {
      if (error instanceof RateLimitedError) setRateLimitHeaders(reply, format, error.limitKind, error.limit);
      throw error;
    }
  };
}

/** Authenticates a request, refusing addresses that failed too often and counting new failures. */
export async function authenticate(gateway: Gateway, request: FastifyRequest): Promise<AuthContext> {
  const throttled = gateway.authThrottle.check(request.ip);
  if (throttled !== undefined) await throttled;
  try {
    return await gateway.authenticator.authenticate(request.headers, request.raw.socket);
  } catch (error) {
    if (error instanceof LetheError && error.kind === "authentication")
      await gateway.authThrottle.recordFailure(request.ip);
    throw error;
  }
}

/** Builds the HTTP server with every route; it is not listening yet. */
export function buildServer(gateway: Gateway): FastifyInstance {
  const app = Fastify({
    // Fastify's logger would serialise requests and errors: Lethe logs allow-listed events only
    logger: false,
    bodyLimit: gateway.config.limits.maxBodyBytes,
    // while draining, requests reach our own handler and get LETHE_SHUTTING_DOWN in their format
    return503OnClosing: false,
    keepAliveTimeout: 72_000,
    routerOptions: { ignoreTrailingSlash: true },
    // every id is Lethe's own; a client's x-request-id is never adopted
    genReqId: () => mintRequestId(),
  });
  app.decorateRequest("exchange", null);
  app.decorateRequest("auth", null);
  // a callback hook, not an async one: no promise per request for two headers
  app.addHook("onRequest", (request, reply, done) => {
    reply.header("x-request-id", request.id);
    reply.header("request-id", request.id);
    done();
  });
  app.removeAllContentTypeParsers();
  // every body is read as JSON whatever its content type (curl -d sends form encoding)
  app.addContentTypeParser("*", { parseAs: "buffer" }, parseJsonBody);

  const surfaces: ClientSurface[] = [openAIChatSurface, anthropicMessagesSurface];
  for (const surface of surfaces) {
    app.post(surface.endpoint, {
      onRequest: meteredRequest(gateway, surface.endpoint, surface.format),
      handler: inferenceHandler(gateway, surface),
    });
  }
  registerCountTokensRoute(app, gateway);
  registerModelsRoute(app, gateway);
  registerUsageRoute(app, gateway);
  registerAdminRoutes(app, gateway, gateway.hasher);
  registerHealthRoutes(app, gateway);
  registerZdrRoutes(app, gateway);

  app.setNotFoundHandler((request, reply) => {
    sendError(request, reply, new LetheError("LETHE_NOT_FOUND", "No such endpoint."));
  });
  app.setErrorHandler(errorHandler(gateway));
  return app;
}
