import type { FastifyInstance } from "fastify";
import { authenticateThrottledOperator } from "../../admin/operator-auth.js";
import type { Gateway } from "../gateway.js";

/** `GET /healthz` (the process is alive), `GET /readyz` (it should get traffic), `GET /metrics`. */
export function registerHealthRoutes(app: FastifyInstance, gateway: Gateway): void {
  app.get("/healthz", async (_request, reply) => reply.send({ status: "ok" }));

  app.get("/readyz", async (_request, reply) => {
    const database = await gateway.store.ping();
    const redis = gateway.redis === null ? "not configured" : gateway.redis.ready ? "up" : "down";
    const meterFull = gateway.meter.pending >= gateway.config.metering.maxBuffered;
    // Redis down is degraded, not unready: limits fall back to this replica's memory
    const ready = database && !gateway.draining && !meterFull;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? "ready" : "unready",
      draining: gateway.draining,
      // which database (`lethe audit --target` checks it is told where to search)
      store: gateway.store.kind,
      dependencies: { database: database ? "up" : "down", redis },
      metering: { buffered: gateway.meter.pending, bound: gateway.config.metering.maxBuffered },
    });
  });

  app.get("/metrics", async (request, reply) => {
    if (gateway.config.server.metricsAuth === "operator") await authenticateThrottledOperator(request, gateway);
    const text = await gateway.metrics.registry.metrics();
    return reply.type(gateway.metrics.registry.contentType).send(text);
  });
}
