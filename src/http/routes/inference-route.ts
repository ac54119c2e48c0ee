import type { OutgoingHttpHeaders } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import { estimateCost } from "../../billing/estimate-cost.js";
import { setRateLimitHeaders } from "../../billing/rate-limit-headers.js";
import { RateLimitedError } from "../../billing/rate-limits.js";
import { toLetheError } from "../../errors/lethe-error.js";
import type { ClientRequest, ClientSurface } from "../../formats/surface/client-surface.js";
import type { AuthContext } from "../../keys/authenticator.js";
import type { Exchange } from "../../metering/exchange.js";
import { type Attempted, attemptRoutes, pinnedRoute } from "../../routing/attempt-routes.js";
import { planRoutes, type RoutePlan } from "../../routing/plan-routes.js";
import type { RouteStats } from "../../routing/route-stats.js";
import { Cancellation } from "../../suppliers/cancellation.js";
import { finishExchange, type Gateway } from "../gateway.js";
import { pipeStream } from "../pipe-stream.js";

/** Cancels the upstream call when the client goes away before the response is complete. */
function cancelOnClientClose(reply: FastifyReply): Cancellation {
  const cancellation = new Cancellation();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) cancellation.abort();
  });
  return cancellation;
}

/** Feeds the route's health with how the answer went: latency on success, a failure otherwise. */
function recordOutcome(gateway: Gateway, stats: RouteStats, exchange: Exchange, errorCode: string | null): void {
  if (errorCode === "LETHE_CLIENT_CLOSED") stats.breaker.release();
  else if (errorCode !== null) stats.recordFailure(gateway.router.now());
  else {
    const record = exchange.timings();
    stats.recordSuccess(record.ttftMs ?? record.latencyMs, record.outputTokensPerSecond);
  }
}

/**
 * Holds the request's estimated tokens against its TPM limits and its estimated cost
 * against its credit, before anything is forwarded; both are settled when it ends.
 */
async function holdCredit(
  gateway: Gateway,
  surface: ClientSurface,
  request: ClientRequest,
  exchange: Exchange,
  plan: RoutePlan,
  reply: FastifyReply,
  contentLength: string | undefined,
): Promise<void> {
  const auth = exchange.auth as AuthContext;
  // a chunked body has no length header: then measure what was parsed
  const bodyBytes = Number(contentLength) || Buffer.byteLength(JSON.stringify(request.body));
  const estimate = estimateCost(request, plan.routes, gateway.config.billing.defaultOutputReserveTokens, bodyBytes);
  try {
    const tokens = await gateway.limits.reserveTokens(auth, estimate.tokens);
    exchange.tokenHold = tokens.hold;
    setRateLimitHeaders(reply, surface.format, "tokens", tokens.state);
  } catch (error) {
    if (error instanceof RateLimitedError) setRateLimitHeaders(reply, surface.format, error.limitKind, error.limit);
    throw error;
  }
  exchange.reservation = await gateway.credits.reserve(auth.accountId, estimate.upperBoundMicros, estimate.exactMicros);
}

/** Sends the answer of the route that served, as JSON or as a stream, and feeds the route's health. */
async function relay(
  gateway: Gateway,
  surface: ClientSurface,
  request: ClientRequest,
  exchange: Exchange,
  attempted: Attempted,
  reply: FastifyReply,
): Promise<void> {
  const { result, supplier, stats } = attempted;
  // the answer goes straight to the socket: Fastify's reply pipeline (hooks, serialisers)
  // has nothing to add to a body that is already text, and costs as much as the relay.
  // Hijacked only once nothing can throw any more: until then errors render as usual
  const headers = reply.getHeaders() as OutgoingHttpHeaders;
  headers["x-lethe-supplier"] = supplier.id;
  headers["x-lethe-attempts"] = String(exchange.attempts);
  headers["x-lethe-zdr"] = exchange.zdrEnforced ? "enforced" : "off";

  if (result.kind === "json") {
    const text = surface.jsonResponse(request, result.body, supplier.format, exchange);
    finishExchange(gateway, exchange, 200, null);
    recordOutcome(gateway, stats, exchange, null);
    headers["content-type"] = "application/json; charset=utf-8";
    headers["content-length"] = Buffer.byteLength(text);
    reply.hijack();
    reply.raw.writeHead(200, headers);
    reply.raw.end(text);
    return;
  }
  const translator = surface.streamTranslator(request, supplier.format, exchange);
  headers["content-type"] = "text/event-stream; charset=utf-8";
  headers["cache-control"] = "no-cache";
  headers.connection = "keep-alive";
  headers["x-accel-buffering"] = "no";
  reply.hijack();
  reply.raw.writeHead(200, headers);
  const errorCode = await pipeStream(gateway, exchange, result.events, translator, reply.raw);
  recordOutcome(gateway, stats, exchange, errorCode);
}

/** The handler of an inference endpoint, shared by every client surface. */
export function inferenceHandler(gateway: Gateway, surface: ClientSurface) {
  return async function handle(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const exchange = request.exchange as Exchange;
    const clientRequest = surface.parse(request.body, request.headers);
    exchange.streamed = clientRequest.stream;
    const zdrRequired = (exchange.auth?.zdrRequired ?? true) || request.headers["x-lethe-zdr"] === "required";
    const plan = planRoutes(gateway.config, clientRequest.model, zdrRequired);
    exchange.model = plan.model.id;
    exchange.zdrEnforced = plan.zdrEnforced;
    await holdCredit(gateway, surface, clientRequest, exchange, plan, reply, request.headers["content-length"]);
    const routeHeader = request.headers["x-lethe-route"];
    const pinned =
      gateway.config.routing.allowRouteHeader && routeHeader !== undefined ? pinnedRoute(plan, routeHeader) : null;
    const cancellation = cancelOnClientClose(reply);
    const attempted = await attemptRoutes(gateway, surface, clientRequest, exchange, plan, cancellation, pinned);
    try {
      await relay(gateway, surface, clientRequest, exchange, attempted, reply);
    } catch (thrown) {
      // the route answered but Lethe could not relay it: a verdict all the same, or a
      // half-open breaker would keep its probe claimed and never try the route again
      recordOutcome(gateway, attempted.stats, exchange, toLetheError(thrown).code);
      throw thrown;
    }
  };
}
