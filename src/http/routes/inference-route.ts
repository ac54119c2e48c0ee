import { estimateCost } from "../../billing/estimate-cost.js";
import { addRateLimitHeaders } from "../../billing/rate-limit-headers.js";
import { toLetheError } from "../../errors/lethe-error.js";
import type { ClientRequest, ClientSurface } from "../../formats/surface/client-surface.js";
import type { AuthContext } from "../../keys/authenticator.js";
import { after, type MaybePromise } from "../../lang/maybe-promise.js";
import type { Exchange } from "../../metering/exchange.js";
import { type Attempted, attemptRoutes, pinnedRoute } from "../../routing/attempt-routes.js";
import { findModel, type RoutePlan, routesOf } from "../../routing/plan-routes.js";
import { zdrRequiredByHeader } from "../../zdr/zdr-header.js";
import { cancelOnClientClose } from "../cancel-on-close.js";
import { finishExchange, type Gateway } from "../gateway.js";
import type { MeteredCall, MeteredEndpoint } from "../metered-call.js";
import { endAnswer, pipeStream } from "../pipe-stream.js";
import type { ResponseHeaders } from "../response-headers.js";

/** Feeds the route's health with how the answer went: latency on success, a failure otherwise. */
function recordOutcome(gateway: Gateway, attempted: Attempted, exchange: Exchange, errorCode: string | null): void {
  const stats = attempted.stats;
  // neither a client that left, Lethe's own failure nor its shutdown says anything about the route
  if (
    errorCode === "LETHE_CLIENT_CLOSED" ||
    errorCode === "LETHE_CLIENT_STALLED" ||
    errorCode === "LETHE_INTERNAL" ||
    errorCode === "LETHE_SHUTTING_DOWN"
  ) {
    if (attempted.probe) stats.breaker.release();
  } else if (errorCode !== null) stats.recordFailure(gateway.router.now());
  // a success has always been finished: its record holds the figures, timed once
  else if (exchange.record !== null) stats.recordSuccess(gateway.router.now(), exchange.record, attempted.sentAfterMs);
}

/** OpenAI's `n`: how many answers the supplier writes, each up to `max_tokens` (validated as a positive integer). */
function choicesOf(n: unknown): number {
  return typeof n === "number" && n > 1 ? n : 1;
}

/**
 * Holds the request's estimated tokens against its TPM limits and its estimated cost
 * against its credit, before anything is forwarded; both are settled when it ends.
 * Synchronous while limits and balance are in memory.
 */
function holdCredit(gateway: Gateway, call: MeteredCall, request: ClientRequest, plan: RoutePlan): MaybePromise<void> {
  const exchange = call.exchange;
  const auth = exchange.auth as AuthContext;
  exchange.choices = call.format === "openai" ? choicesOf(request.body.n) : 1;
  const estimate = estimateCost(
    request,
    plan.routes,
    gateway.config.billing.defaultOutputReserveTokens,
    call.bodyBytes,
    exchange.choices,
  );
  // the output the client allowed (max_tokens × choices) also bounds Lethe's own counts of it
  if (estimate.askedOutputTokens > 0) exchange.outputCap = estimate.askedOutputTokens;
  return after(gateway.limits.reserveTokens(auth, estimate.tokens, estimate.askedOutputTokens), (tokens) => {
    exchange.tokenHold = tokens.hold;
    addRateLimitHeaders(call.headers, call.format, "tokens", tokens.state);
    return after(
      gateway.credits.reserve(auth.accountId, estimate.upperBoundMicros, estimate.exactMicros),
      (reservation) => {
        exchange.reservation = reservation;
      },
    );
  });
}

/** Which supplier served, after how many attempts, and whether ZDR was enforced. */
function pushRouteHeaders(headers: ResponseHeaders, exchange: Exchange, supplier: string): void {
  headers.push(
    "x-lethe-supplier",
    supplier,
    "x-lethe-attempts",
    exchange.attempts,
    "x-lethe-zdr",
    exchange.zdrEnforced ? "enforced" : "off",
  );
}

/** Sends the answer of the route that served, as JSON or as a stream, and feeds the route's health. */
async function relay(
  gateway: Gateway,
  surface: ClientSurface,
  request: ClientRequest,
  call: MeteredCall,
  attempted: Attempted,
): Promise<void> {
  const { result, supplier } = attempted;
  const { exchange, response } = call;
  const headers: ResponseHeaders = call.headers;

  if (result.kind === "json") {
    const text = attempted.answer as string;
    finishExchange(gateway, exchange, 200, null);
    recordOutcome(gateway, attempted, exchange, null);
    pushRouteHeaders(headers, exchange, supplier.id);
    headers.push("content-type", "application/json; charset=utf-8", "content-length", Buffer.byteLength(text));
    response.writeHead(200, headers);
    await endAnswer(response, text, attempted.route.timeouts.idleMs);
    return;
  }
  const translator = surface.streamTranslator(request, supplier.format, exchange);
  // only once nothing can fail before writeHead: a failure's answer names the supplier itself
  pushRouteHeaders(headers, exchange, supplier.id);
  headers.push(
    "content-type",
    "text/event-stream; charset=utf-8",
    "cache-control",
    "no-cache",
    "connection",
    "keep-alive",
    "x-accel-buffering",
    "no",
  );
  response.writeHead(200, headers);
  const errorCode = await pipeStream(
    gateway,
    exchange,
    result.events,
    translator,
    response,
    attempted.route.timeouts.idleMs,
  );
  recordOutcome(gateway, attempted, exchange, errorCode);
}

/** An inference endpoint (chat completions, messages) of one client surface. */
export function inferenceEndpoint(surface: ClientSurface): MeteredEndpoint {
  return { path: surface.endpoint, format: surface.format, serve: (call) => serveInference(surface, call) };
}

async function serveInference(surface: ClientSurface, call: MeteredCall): Promise<void> {
  const { gateway, exchange } = call;
  const headers = call.request.headers;
  const clientRequest = surface.parse(call.body, headers, call.takeBodyText());
  exchange.streamed = clientRequest.stream;
  const zdrRequired = zdrRequiredByHeader(headers["x-lethe-zdr"]) || (exchange.auth?.zdrRequired ?? true);
  const model = findModel(gateway.config, clientRequest.model);
  // known before the ZDR refusal that may follow: its record names the model it refused
  exchange.model = model.id;
  exchange.zdrEnforced = zdrRequired;
  const plan = routesOf(model, zdrRequired);
  // watched from before the first await: a client that leaves while its hold waits on the
  // database must not have its request forwarded (a close event does not come twice)
  const cancellation = cancelOnClientClose(gateway, call.response);
  const held = holdCredit(gateway, call, clientRequest, plan);
  if (held instanceof Promise) await held;
  const routeHeader = headers["x-lethe-route"];
  const pinned =
    gateway.config.routing.allowRouteHeader && routeHeader !== undefined ? pinnedRoute(plan, routeHeader) : null;
  const attempted = await attemptRoutes(gateway, surface, clientRequest, exchange, plan, cancellation, pinned);
  // nothing more goes upstream: the client's text need not outlive the attempts (a stream may run long)
  clientRequest.sent = undefined;
  try {
    await relay(gateway, surface, clientRequest, call, attempted);
  } catch (thrown) {
    // the route answered but Lethe could not relay it: a verdict all the same, or a
    // half-open breaker would keep its probe claimed and never try the route again
    recordOutcome(gateway, attempted, exchange, toLetheError(thrown).code);
    throw thrown;
  }
}
