import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { MetadataRecord } from "./metadata-record.js";

/**
 * Prometheus metrics. Labels come only from closed sets (configured model and
 * supplier ids, status codes, formats): never from anything a client sent.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: "lethe_requests_total",
    help: "Requests served, by model, supplier, status and client format.",
    labelNames: ["model", "supplier", "status", "format"] as const,
    registers: [this.registry],
  });
  private readonly tokens = new Counter({
    name: "lethe_tokens_total",
    help: "Tokens metered, by model, supplier and direction.",
    labelNames: ["model", "supplier", "direction"] as const,
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: "lethe_request_duration_seconds",
    help: "Request latency, from arrival to the last byte.",
    labelNames: ["model", "supplier", "format"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  private readonly ttft = new Histogram({
    name: "lethe_time_to_first_token_seconds",
    help: "Time to first token of streamed responses.",
    labelNames: ["model", "supplier", "format"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly meterPending = new Gauge({
    name: "lethe_meter_pending_records",
    help: "Metadata records waiting to be written.",
    registers: [this.registry],
  });

  observe(record: MetadataRecord): void {
    const supplier = record.supplier ?? "none";
    this.requests.inc({ model: record.model, supplier, status: record.status, format: record.client_format });
    if (record.input_tokens > 0)
      this.tokens.inc({ model: record.model, supplier, direction: "input" }, record.input_tokens);
    if (record.output_tokens > 0)
      this.tokens.inc({ model: record.model, supplier, direction: "output" }, record.output_tokens);
    this.latency.observe({ model: record.model, supplier, format: record.client_format }, record.latency_ms / 1000);
    if (record.ttft_ms !== null) {
      this.ttft.observe({ model: record.model, supplier, format: record.client_format }, record.ttft_ms / 1000);
    }
  }
}
