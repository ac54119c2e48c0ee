import type { FastifyInstance } from "fastify";
import type { Gateway } from "../gateway.js";

/** `GET /healthz` (the process is alive), `GET /readyz` (it should get traffic), `GET /metrics`. */
export function registerHealthRoutes(app: FastifyInstance, gateway: Gateway): void {
  app.get("/healthz", async (_request, reply) => reply.send({ status: "ok" }));

  app.get("/readyz", async (_request, reply) => {
    const database = await gateway.store.ping();
    const ready = database && !gateway.draining;
    return reply.code(ready ? 200 : 503).send({
      status: ready ? "ready" : "unready",
      draining: gateway.draining,
      dependencies: { database: database ? "up" : "down" },
    });
  });

  app.get("/metrics", async (_request, reply) => {
    gateway.metrics.meterPending.set(gateway.meter.pending);
    const text = await gateway.metrics.registry.metrics();
    return reply.type(gateway.metrics.registry.contentType).send(text);
  });
}
