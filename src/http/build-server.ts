import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { registerAdminRoutes } from "../admin/admin-routes.js";
import { LetheError } from "../errors/lethe-error.js";
import { anthropicMessagesSurface } from "../formats/anthropic/anthropic-surface.js";
import { openAIChatSurface } from "../formats/openai/openai-surface.js";
import type { AuthContext } from "../keys/authenticator.js";
import { mintRequestId } from "../metering/exchange.js";
import { answerClientError, answerConnect, answerExpectationFailed } from "./client-error.js";
import { capConnectionsPerAddress } from "./connections-per-address.js";
import { answerAfterBody, closesAfterAnswer, dropRestOfBody, UNREAD_BODY_BYTES } from "./drain-body.js";
import { errorHandler, sendError } from "./error-handler.js";
import type { Gateway } from "./gateway.js";
import { MeteredCall, type MeteredEndpoint } from "./metered-call.js";
import { parseJsonBody } from "./parse-json-body.js";
import { countTokensEndpoint } from "./routes/count-tokens-route.js";
import { registerHealthRoutes } from "./routes/health-routes.js";
import { inferenceEndpoint } from "./routes/inference-route.js";
import { registerModelsRoute } from "./routes/models-route.js";
import { registerUsageRoute } from "./routes/usage-route.js";
import { registerZdrRoutes } from "./routes/zdr-routes.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Who called a route that is not metered (models, usage). */
    auth: AuthContext | null;
  }
}

const KEEP_ALIVE_TIMEOUT_MS = 72_000;
/** At most this long for a request's headers (within limits.request_timeout_ms). */
const HEADERS_TIMEOUT_MS = 20_000;
/** How often Node looks for requests past those timeouts (its default is 30 s). */
const TIMEOUT_CHECK_MS = 5_000;

/**
 * Bodies for the routes Fastify serves (the admin API's small JSON objects): the metered
 * endpoints, which take prompts, read theirs themselves under limits.max_body_bytes.
 */
const FASTIFY_BODY_LIMIT = 1024 * 1024;

/** The metered endpoints, by path: every one is a POST. */
const METERED = new Map<string, MeteredEndpoint>(
  [inferenceEndpoint(openAIChatSurface), inferenceEndpoint(anthropicMessagesSurface), countTokensEndpoint].map(
    (endpoint) => [endpoint.path, endpoint],
  ),
);

/** The metered endpoint a request is for, ignoring a query string and a trailing slash, as Fastify's router does. */
function meteredEndpointOf(request: IncomingMessage): MeteredEndpoint | undefined {
  return request.method === "POST" ? meteredEndpointAt(request.url ?? "") : undefined;
}

function meteredEndpointAt(url: string): MeteredEndpoint | undefined {
  const exact = METERED.get(url);
  if (exact !== undefined) return exact;
  const target = originForm(url);
  const query = target.indexOf("?");
  let path = query === -1 ? target : target.slice(0, query);
  if (path.length > 1 && path.endsWith("/")) path = path.slice(0, -1);
  return METERED.get(path);
}

/**
 * A request target in absolute form (`http://host/v1/messages`, which RFC 9112 has servers
 * accept) as its path and query, as Fastify's router reads it; any other target as it is.
 */
function originForm(url: string): string {
  if (url.startsWith("/")) return url;
  const scheme = /^https?:\/\/[^/?#]+/i.exec(url);
  if (scheme === null) return url;
  const rest = url.slice(scheme[0].length);
  // an authority followed by a query alone (`http://host?x=/v1/...`) is the path `/`
  return rest.startsWith("/") ? rest : `/${rest}`;
}

/**
 * The HTTP server: metered endpoints are served on Node's request and response directly
 * (MeteredCall), everything else by Fastify.
 */
function gatewayServer(gateway: Gateway) {
  return (fastifyHandler: (request: IncomingMessage, response: ServerResponse) => void) => {
    const requestTimeoutMs = gateway.config.limits.requestTimeoutMs;
    const checkEvery = Math.min(TIMEOUT_CHECK_MS, Math.max(250, requestTimeoutMs / 2));
    // a request without `Host` is served: Lethe routes by path alone, and Node's own refusal
    // of it was a bare 400 with no code and no request id
    const server = createServer(
      { connectionsCheckingInterval: checkEvery, requireHostHeader: false },
      (request, response) => {
        // pipelined behind a refusal whose answer closes the connection: never answered, so not served
        if (closesAfterAnswer(request)) {
          request.resume();
          return;
        }
        // a browser's preflight from an allowed origin; from any other, the route answers (405, 404)
        if (gateway.cors?.answerPreflight(request, response) === true) return;
        const endpoint = meteredEndpointOf(request);
        if (endpoint === undefined) fastifyHandler(request, response);
        else new MeteredCall(gateway, endpoint, request, response).start();
      },
    );
    // `Expect: 100-continue` (curl sends it for bodies over 1 MiB): Node would say "continue"
    // at once, and a caller whose key or limit refuses it would upload its whole body first.
    // A metered endpoint says it only once the request is admitted (MeteredCall); the other
    // routes as Node would.
    server.on("checkContinue", (request, response) => {
      const endpoint = meteredEndpointOf(request);
      if (endpoint !== undefined && !closesAfterAnswer(request)) {
        new MeteredCall(gateway, endpoint, request, response).start();
        return;
      }
      response.writeContinue();
      server.emit("request", request, response);
    });
    // any other expectation: none is defined, and Node's own 417 had no code and no request id
    server.on("checkExpectation", (request, response) => {
      if (closesAfterAnswer(request)) {
        request.resume();
        return;
      }
      const endpoint = meteredEndpointOf(request);
      if (endpoint !== undefined) new MeteredCall(gateway, endpoint, request, response).refuseExpectation();
      else answerExpectationFailed(request, response);
    });
    // a proxy's tunnel request: Node would close the connection without a word
    server.on("connect", (_request, socket: Duplex) => answerConnect(socket));
    server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
    // a client that sends slowly (or not at all) holds a connection only this long
    server.requestTimeout = requestTimeoutMs;
    server.headersTimeout = Math.min(HEADERS_TIMEOUT_MS, requestTimeoutMs);
    // bounded below the process's open-file limit, which every client connection and every
    // pooled supplier connection counts against: past it, accept() itself fails (EMFILE)
    server.maxConnections = gateway.config.limits.maxConnections;
    capConnectionsPerAddress(server, gateway.config.limits.maxConnectionsPerAddress, (address) =>
      gateway.clientAddresses.isTrustedProxy(address),
    );
    return server;
  };
}

/** The request id, under both SDKs' header names (the metered endpoints set theirs in MeteredCall). */
function sendRequestId(reply: FastifyReply, id: string): void {
  reply.header("x-request-id", id);
  reply.header("request-id", id);
}

/** True when a request announces a body (a length above zero, or chunks). */
function hasBody(request: IncomingMessage): boolean {
  const length = request.headers["content-length"];
  return request.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

/** True when a request announced a body that has not been read to its end. */
function bodyLeftUnread(request: IncomingMessage): boolean {
  return !request.complete && hasBody(request);
}

/** The answer for a request no route serves: 405 on a metered endpoint asked with another method, else 404. */
function answerNotFound(request: FastifyRequest, reply: FastifyReply): void {
  // a metered endpoint asked with another method (GET /v1/chat/completions): say which one it takes
  if (meteredEndpointAt(request.url) !== undefined) {
    reply.header("allow", "POST");
    sendError(request, reply, new LetheError("LETHE_METHOD_NOT_ALLOWED", "This endpoint takes POST requests."));
    return;
  }
  // a client built for another API (OpenAI's Responses or embeddings, say) is told what is served here
  const message = originForm(request.url).startsWith("/v1/") ? API_NOT_FOUND : "No such endpoint.";
  sendError(request, reply, new LetheError("LETHE_NOT_FOUND", message));
}

const ADMIN_PREFIX = "/admin/v1/";

const API_NOT_FOUND =
  "No such endpoint. This gateway serves POST /v1/chat/completions (OpenAI Chat Completions, not the Responses API), " +
  "POST /v1/messages and POST /v1/messages/count_tokens (Anthropic Messages), and GET /v1/models.";

/** Builds the HTTP server with every route; it is not listening yet. */
export function buildServer(gateway: Gateway): FastifyInstance {
  const app = Fastify({
    // Fastify's logger would serialise requests and errors: Lethe logs allow-listed events only
    logger: false,
    bodyLimit: FASTIFY_BODY_LIMIT,
    // while draining, requests reach our own handler and get LETHE_SHUTTING_DOWN in their format
    return503OnClosing: false,
    serverFactory: gatewayServer(gateway),
    routerOptions: { ignoreTrailingSlash: true },
    // every id is Lethe's own; a client's x-request-id is never adopted
    genReqId: () => mintRequestId(),
    // a request Node's parser refused: answered in a shape both SDKs read, with a code
    clientErrorHandler: answerClientError,
    // a URL the router cannot decode (bad percent-encoding, an over-long parameter): Fastify's
    // own answer would quote the path, which may hold a client's model id
    frameworkErrors: (error, request, reply) => {
      sendRequestId(reply, request.id);
      const refusal =
        error.code === "FST_ERR_BAD_URL"
          ? new LetheError("LETHE_INVALID_REQUEST", "The request URL is not valid.")
          : new LetheError("LETHE_NOT_FOUND", "No such endpoint.");
      sendError(request, reply, refusal);
    },
  });
  app.decorateRequest("auth", null);
  // a callback hook, not an async one: no promise per request for two headers
  app.addHook("onRequest", (request, reply, done) => {
    sendRequestId(reply, request.id);
    if (gateway.cors !== null) {
      const headers: (string | number)[] = [];
      gateway.cors.addTo(headers, request.headers.origin);
      for (let index = 0; index < headers.length; index += 2) reply.header(String(headers[index]), headers[index + 1]);
    }
    // a request for no route is answered before its body is read: Fastify would read it
    // whole and parse it first (up to its body limit, for anyone, without a key). Under the
    // admin API, the operator's token is asked for first (its own not-found handler), so that
    // no one without one learns which admin paths exist
    if (request.is404 && !originForm(request.url).startsWith(ADMIN_PREFIX)) {
      if (hasBody(request.raw)) {
        answerAfterBody(request.raw, UNREAD_BODY_BYTES, () => {
          reply.header("connection", "close");
          answerNotFound(request, reply);
        });
      } else {
        // at once: an OPTIONS or PUT with a content type but no body would go on to the body
        // parser, and be refused as empty JSON rather than as a method or path not served
        answerNotFound(request, reply);
      }
      return;
    }
    done();
  });
  // a body its route left unread (a GET with one, a request refused before its body was
  // parsed) is read no further than UNREAD_BODY_BYTES after the answer, which closes
  // the connection: Node would read it to the end, for as long as a caller keeps sending
  // (a request with no body is not `complete` yet when its answer is sent in the tick its
  // headers arrived: it has nothing left to read, and its connection stays open)
  app.addHook("onSend", (request, reply, payload, done) => {
    if (bodyLeftUnread(request.raw)) reply.header("connection", "close");
    done(null, payload);
  });
  app.addHook("onResponse", (request, _reply, done) => {
    if (bodyLeftUnread(request.raw) && !request.raw.destroyed) dropRestOfBody(request.raw);
    done();
  });
  app.removeAllContentTypeParsers();
  // every body is read as JSON whatever its content type (curl -d sends form encoding)
  app.addContentTypeParser("*", { parseAs: "buffer" }, parseJsonBody);

  registerModelsRoute(app, gateway);
  registerUsageRoute(app, gateway);
  registerAdminRoutes(app, gateway, gateway.hasher);
  registerHealthRoutes(app, gateway);
  registerZdrRoutes(app, gateway);

  app.setNotFoundHandler(answerNotFound);
  app.setErrorHandler(errorHandler(gateway));
  return app;
}
