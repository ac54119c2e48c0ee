import { Counter, Gauge, Registry } from "prom-client";
import type { CreditGuard } from "../billing/credit-guard.js";
import type { ModelId, SupplierId } from "../config/ids.js";
import type { Router } from "../routing/router.js";
import type { RedisLink } from "../shared-state/redis-link.js";
import type { Store } from "../store/store.js";
import type { ClientFormat, MetadataRecord } from "./metadata-record.js";
import type { Meter } from "./meter.js";
import { CounterFamily, type CounterSeries, HistogramFamily, type HistogramSeries } from "./metric-families.js";

/** What the dependency gauges read. */
export interface DependencyState {
  store: Store;
  redis: RedisLink | null;
  credits: CreditGuard;
  meter: Meter;
  /** Metered requests begun and not yet finished (Gateway's count). */
  readonly openExchanges: number;
}

/**
 * Prometheus metrics. Labels come only from closed sets (configured model and
 * supplier ids, status codes, formats): never from anything a client sent.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  // the per-request families: a series is looked up once and cached below
  private readonly requests = new CounterFamily({
    name: "lethe_requests_total",
    help: "Requests served, by model, supplier, status and client format.",
    registry: this.registry,
  });
  private readonly tokens = new CounterFamily({
    name: "lethe_tokens_total",
    help: "Tokens metered, by model, supplier and direction.",
    registry: this.registry,
  });
  private readonly latency = new HistogramFamily({
    name: "lethe_request_duration_seconds",
    help: "Request latency, from arrival to the last byte.",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registry: this.registry,
  });
  private readonly ttft = new HistogramFamily({
    name: "lethe_time_to_first_token_seconds",
    help: "Time to first token of streamed responses.",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registry: this.registry,
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

  /**
   * Publishes each route's breaker state, rest, recent error rate and TTFT p50, read at scrape
   * time from the router in use (a config reload replaces it, and drops removed routes).
   */
  watchRoutes(routerOf: () => Router): void {
    const states = { closed: 0, "half-open": 1, open: 2 } as const;
    new Gauge({
      name: "lethe_route_state",
      help: "Circuit breaker state per route: 0 closed, 1 half-open, 2 open.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        const router = routerOf();
        this.reset();
        for (const [route, stats] of router.allStats()) this.set({ route }, states[stats.breaker.state(router.now())]);
      },
    });
    new Gauge({
      name: "lethe_route_rest_seconds",
      help: "Seconds left of each resting route's rest, asked for by its supplier's retry-after.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        const router = routerOf();
        this.reset();
        for (const [route, stats] of router.allStats()) {
          const restMs = stats.msUntilRested(router.now());
          if (restMs > 0) this.set({ route }, Math.ceil(restMs / 1000));
        }
      },
    });
    new Gauge({
      name: "lethe_route_error_rate",
      help: "Share of failed attempts among each route's recent attempts.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [route, stats] of routerOf().allStats()) this.set({ route }, stats.errorRate());
      },
    });
    new Gauge({
      name: "lethe_route_ttft_p50_seconds",
      help: "Median time to first token of each route's recent answers.",
      labelNames: ["route"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [route, stats] of routerOf().allStats()) {
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
      name: "lethe_open_requests",
      help: "Metered requests in progress: their body being read, waiting on a supplier, or streaming the answer (a JSON answer counts until it is handed to the socket).",
      registers: [this.registry],
      collect() {
        this.set(state.openExchanges);
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

  /**
   * The series of each model, supplier, format and status, nested so that no key string
   * is built per request (ids are config strings whose hashes V8 keeps). Bounded: model
   * and supplier are configured ids (or "unknown"/null), format one of two, status an
   * HTTP status.
   */
  private readonly byModel = new Map<ModelId, Map<SupplierId | null, Map<ClientFormat, Map<number, RecordSeries>>>>();

  private series(record: MetadataRecord): RecordSeries {
    const byStatus = innerMap(innerMap(innerMap(this.byModel, record.model), record.supplier), record.client_format);
    let series = byStatus.get(record.status);
    if (series === undefined) {
      const model = record.model;
      const supplier = record.supplier ?? "none";
      const format = record.client_format;
      series = {
        requests: this.requests.series({ model, supplier, status: record.status, format }),
        input: this.tokens.series({ model, supplier, direction: "input" }),
        output: this.tokens.series({ model, supplier, direction: "output" }),
        latency: this.latency.series({ model, supplier, format }),
        ttft: this.ttft.series({ model, supplier, format }),
      };
      byStatus.set(record.status, series);
    }
    return series;
  }

  /** Counts one finished request: its status, tokens, latency and TTFT. */
  observe(record: MetadataRecord): void {
    const series = this.series(record);
    this.requests.inc(series.requests, 1);
    if (record.input_tokens > 0) this.tokens.inc(series.input, record.input_tokens);
    if (record.output_tokens > 0) this.tokens.inc(series.output, record.output_tokens);
    this.latency.observe(series.latency, record.latency_ms / 1000);
    if (record.ttft_ms !== null) this.ttft.observe(series.ttft, record.ttft_ms / 1000);
  }
}

interface RecordSeries {
  requests: CounterSeries;
  input: CounterSeries;
  output: CounterSeries;
  latency: HistogramSeries;
  ttft: HistogramSeries;
}

/** The map under `key`, created empty on first use. */
function innerMap<K, L, V>(outer: Map<K, Map<L, V>>, key: K): Map<L, V> {
  let inner = outer.get(key);
  if (inner === undefined) {
    inner = new Map();
    outer.set(key, inner);
  }
  return inner;
}
