import type { OutgoingHttpHeaders } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import { LetheError, UpstreamError } from "../../errors/lethe-error.js";
import type { ClientRequest, ClientSurface } from "../../formats/surface/client-surface.js";
import type { Exchange } from "../../metering/exchange.js";
import { planRoutes } from "../../routing/plan-routes.js";
import type { SupplierResult } from "../../suppliers/supplier.js";
import { finishExchange, type Gateway } from "../gateway.js";
import { pipeStream } from "../pipe-stream.js";

/** A supplier's rejection on its way to the caller: the detail is the caller's own data. */
export class RejectedBySupplier extends Error {
  constructor(
    readonly error: UpstreamError,
    readonly detail: string | undefined,
  ) {
    super(error.message);
  }
}

/** Aborts the upstream call when the client goes away before the response is complete. */
function abortOnClientClose(reply: FastifyReply): AbortController {
  const controller = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller;
}

/**
 * Sends the request along the planned routes in order. A retryable failure before
 * any byte reached the client moves on to the next route; anything else is final.
 */
async function sendAlongRoutes(
  gateway: Gateway,
  surface: ClientSurface,
  request: ClientRequest,
  exchange: Exchange,
  zdrRequired: boolean,
  signal: AbortSignal,
): Promise<SupplierResult> {
  const plan = planRoutes(gateway.config, request.model, zdrRequired);
  exchange.model = plan.model.id;
  exchange.zdrEnforced = plan.zdrEnforced;
  let lastFailure: unknown = null;
  for (let index = 0; index < plan.routes.length; index++) {
    const route = plan.routes[index];
    if (route === undefined) break;
    const supplier = gateway.suppliers.get(route.supplier.id);
    exchange.supplier = supplier.id;
    exchange.price = route.price;
    const hasNext = index + 1 < plan.routes.length;
    try {
      const body = surface.upstreamBody(request, route, supplier.format);
      const result = await supplier.send({
        body,
        stream: request.stream,
        signal,
        ...(request.headers !== undefined && { headers: request.headers }),
      });
      if (result.kind !== "rejected") return result;
      gateway.log.event("upstream_error", {
        supplier: supplier.id,
        model: exchange.model,
        status: result.error.upstreamStatus,
        code: result.error.code,
      });
      lastFailure = new RejectedBySupplier(result.error, result.detail);
      if (!(result.error.retryable && hasNext)) break;
    } catch (thrown) {
      if (!(thrown instanceof UpstreamError)) throw thrown;
      if (thrown.code !== "LETHE_CLIENT_CLOSED") {
        gateway.log.event("upstream_error", {
          supplier: supplier.id,
          model: exchange.model,
          status: thrown.upstreamStatus,
          code: thrown.code,
        });
      }
      lastFailure = thrown;
      if (!(thrown.retryable && hasNext) || signal.aborted) break;
    }
  }
  throw lastFailure ?? new LetheError("LETHE_INTERNAL", "No route was tried.");
}

/** The handler of an inference endpoint, shared by every client surface. */
export function inferenceHandler(gateway: Gateway, surface: ClientSurface) {
  return async function handle(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const exchange = request.exchange as Exchange;
    const clientRequest = surface.parse(request.body, request.headers);
    exchange.streamed = clientRequest.stream;
    const zdrRequired = (exchange.auth?.zdrRequired ?? true) || request.headers["x-lethe-zdr"] === "required";
    const controller = abortOnClientClose(reply);
    const result = await sendAlongRoutes(gateway, surface, clientRequest, exchange, zdrRequired, controller.signal);
    const supplier = gateway.suppliers.get(exchange.supplier as NonNullable<Exchange["supplier"]>);
    reply.header("x-lethe-supplier", exchange.supplier);
    reply.header("x-lethe-zdr", exchange.zdrEnforced ? "enforced" : "off");

    if (result.kind === "json") {
      const text = surface.jsonResponse(clientRequest, result.body, supplier.format, exchange);
      finishExchange(gateway, exchange, 200, null);
      await reply.code(200).type("application/json").send(text);
      return;
    }
    if (result.kind !== "stream") throw new LetheError("LETHE_INTERNAL", "Unexpected supplier result.");
    const translator = surface.streamTranslator(clientRequest, supplier.format, exchange);
    reply.hijack();
    const headers = reply.getHeaders() as OutgoingHttpHeaders;
    reply.raw.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    await pipeStream(gateway, exchange, result.events, translator, reply.raw);
  };
}
