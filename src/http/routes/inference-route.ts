import type { OutgoingHttpHeaders } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { ClientSurface } from "../../formats/surface/client-surface.js";
import type { Exchange } from "../../metering/exchange.js";
import { attemptRoutes, pinnedRoute } from "../../routing/attempt-routes.js";
import { planRoutes } from "../../routing/plan-routes.js";
import type { RouteStats } from "../../routing/route-stats.js";
import { finishExchange, type Gateway } from "../gateway.js";
import { pipeStream } from "../pipe-stream.js";

/** Aborts the upstream call when the client goes away before the response is complete. */
function abortOnClientClose(reply: FastifyReply): AbortController {
  const controller = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller;
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
    const routeHeader = request.headers["x-lethe-route"];
    const pinned =
      gateway.config.routing.allowRouteHeader && routeHeader !== undefined ? pinnedRoute(plan, routeHeader) : null;
    const controller = abortOnClientClose(reply);
    const attempted = await attemptRoutes(gateway, surface, clientRequest, exchange, plan, controller.signal, pinned);
    const { result, supplier, stats } = attempted;
    reply.header("x-lethe-supplier", supplier.id);
    reply.header("x-lethe-attempts", String(exchange.attempts));
    reply.header("x-lethe-zdr", exchange.zdrEnforced ? "enforced" : "off");

    if (result.kind === "json") {
      const text = surface.jsonResponse(clientRequest, result.body, supplier.format, exchange);
      finishExchange(gateway, exchange, 200, null);
      recordOutcome(gateway, stats, exchange, null);
      await reply.code(200).type("application/json").send(text);
      return;
    }
    const translator = surface.streamTranslator(clientRequest, supplier.format, exchange);
    reply.hijack();
    reply.raw.writeHead(200, {
      ...(reply.getHeaders() as OutgoingHttpHeaders),
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    const errorCode = await pipeStream(gateway, exchange, result.events, translator, reply.raw);
    recordOutcome(gateway, stats, exchange, errorCode);
  };
}
