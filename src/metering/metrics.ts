import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CreditGuard } from "../billing/credit-guard.js";
import type { Router } from "../routing/router.js";
import type { RedisLink } from "../shared-state/redis-link.js";
import type { Store } from "../store/store.js";
import type { Meter } from "./meter.js";

/** What the dependency gauges read. */
export interface DependencyState {
  store: Store;
  redis: RedisLink | null;
  credits: CreditGuard;
  meter: Meter;
}

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
  private readonly upstreamErrors = new Counter({
    name: "lethe_upstream_errors_total",
    help: "Failed supplier attempts, by supplier and Lethe error code.",
    labelNames: ["supplier", "code"] as const,
    registers: [this.registry],
  });

  /** Counts one failed supplier attempt. */
  upstreamError(supplier: string, code: string): void {
    this.upstreamErrors.inc({ supplier, code });
  }

  /** Publishes each route's breaker state, recent error rate and TTFT p50, read at scrape time. */
  watchRoutes(router: Router): void {
    const states = { closed: 0, "half-open": 1, open: 2 } as const;
    new Gauge({
      name: "lethe_route_state",
      help: "Circuit breaker state per route: 0 closed, 1 half-open, 2 open.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        for (const [route, stats] of router.allStats()) this.set({ route }, states[stats.breaker.state(router.now())]);
      },
    });
    new Gauge({
      name: "lethe_route_error_rate",
      help: "Share of failed attempts among each route's recent attempts.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        for (const [route, stats] of router.allStats()) this.set({ route }, stats.errorRate());
      },
    });
    new Gauge({
      name: "lethe_route_ttft_p50_seconds",
      help: "Median time to first token of each route's recent answers.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        for (const [route, stats] of router.allStats()) {
          const p50 = stats.ttftP50Ms();
          if (p50 !== null) this.set({ route }, p50 / 1000);
        }
      },
    });
  }

  /** Publishes dependency health and buffer depths, read at scrape time. */
  watchDependencies(state: DependencyState): void {
    new Gauge({
      name: "lethe_dependency_up",
      help: "Whether a dependency answers: 1 up, 0 down.",
      labelNames: ["dependency"] as const,
      registers: [this.registry],
      async collect() {
        this.set({ dependency: "database" }, (await state.store.ping()) ? 1 : 0);
        if (state.redis !== null) this.set({ dependency: "redis" }, state.redis.ready ? 1 : 0);
      },
    });
    new Gauge({
      name: "lethe_ledger_pending_charges",
      help: "Settled charges waiting to be written to the ledger.",
      registers: [this.registry],
      collect() {
        this.set(state.credits.pendingCount);
      },
    });
    new Gauge({
      name: "lethe_meter_buffered_records",
      help: "Metadata records waiting to be written (requests are refused with 503 at the bound).",
      registers: [this.registry],
      collect() {
        this.set(state.meter.pending);
      },
    });
  }

  /** Labelled children per (model, supplier, status, format): prom-client hashes labels on every call otherwise. */
  private readonly children = new Map<string, ObservedSeries>();

  private series(record: MetadataRecord): ObservedSeries {
    const supplier = record.supplier ?? "none";
    const name = `${record.model}\u0000${supplier}\u0000${record.status}\u0000${record.client_format}`;
    let series = this.children.get(name);
    if (series === undefined) {
      const model = record.model;
      const format = record.client_format;
      series = {
        requests: this.requests.labels({ model, supplier, status: record.status, format }),
        input: this.tokens.labels({ model, supplier, direction: "input" }),
        output: this.tokens.labels({ model, supplier, direction: "output" }),
        latency: this.latency.labels({ model, supplier, format }),
        ttft: this.ttft.labels({ model, supplier, format }),
      };
      this.children.set(name, series);
    }
    return series;
  }

  observe(record: MetadataRecord): void {
    const series = this.series(record);
    series.requests.inc();
    if (record.input_tokens > 0) series.input.inc(record.input_tokens);
    if (record.output_tokens > 0) series.output.inc(record.output_tokens);
    series.latency.observe(record.latency_ms / 1000);
    if (record.ttft_ms !== null) series.ttft.observe(record.ttft_ms / 1000);
  }
}

interface ObservedSeries {
  requests: { inc(value?: number): void };
  input: { inc(value?: number): void };
  output: { inc(value?: number): void };
  latency: { observe(value: number): void };
  ttft: { observe(value: number): void };
}
