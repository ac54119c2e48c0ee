import type { CreditGuard } from "../billing/credit-guard.js";
import type { RateLimits } from "../billing/rate-limits.js";
import type { SupplierId } from "../config/ids.js";
import type { LetheConfig } from "../config/load-config.js";
import type { ErrorCode, UpstreamError } from "../errors/lethe-error.js";
import type { KeyHasher } from "../keys/api-key.js";
import type { AuthThrottle } from "../keys/auth-throttle.js";
import type { Authenticator } from "../keys/authenticator.js";
import type { EventLog } from "../logging/event-log.js";
import type { Exchange } from "../metering/exchange.js";
import type { Meter } from "../metering/meter.js";
import type { GatewayMetrics } from "../metering/metrics.js";
import type { Router } from "../routing/router.js";
import type { RedisLink } from "../shared-state/redis-link.js";
import type { Store } from "../store/store.js";
import type { InFlight } from "../suppliers/cancellation.js";
import type { SupplierRegistry } from "../suppliers/registry.js";
import type { SignedStatement } from "../zdr/retention-statement.js";
import type { BodyBudget } from "./body-budget.js";
import type { ClientAddresses } from "./client-address.js";
import type { CorsPolicy } from "./cors.js";

/** Everything the HTTP layer needs, built once at start-up. */
export interface Gateway {
  config: LetheConfig;
  store: Store;
  /** Shared state across replicas, when LETHE_REDIS_URL is set. */
  redis: RedisLink | null;
  authenticator: Authenticator;
  /** HMACs keys and operator tokens under the server secret. */
  hasher: KeyHasher;
  authThrottle: AuthThrottle;
  /** The client behind a connection: its peer, or whom a trusted reverse proxy forwarded for. */
  clientAddresses: ClientAddresses;
  /** Which browser origins may call (server.cors_origins); null: none, no CORS headers at all. */
  cors: CorsPolicy | null;
  limits: RateLimits;
  credits: CreditGuard;
  suppliers: SupplierRegistry;
  router: Router;
  meter: Meter;
  metrics: GatewayMetrics;
  log: EventLog;
  /** The signed retention statement served at /v1/zdr, built from the running config. */
  statement: SignedStatement;
  /** Set when shutdown begins: readiness fails and new requests get 503. */
  draining: boolean;
  /** Metered requests begun and not yet finished: shutdown flushes records once none is left. */
  openExchanges: number;
  /** Request bytes each account has in memory at once (large bodies only). */
  bodies: BodyBudget;
  /** The cancellations of requests waiting on or relaying a supplier: the shutdown deadline cuts them. */
  inFlight: InFlight;
}

/**
 * Counts and logs a supplier's failure: its status and Lethe's code only, never what the
 * supplier said (that may echo the prompt).
 */
export function reportUpstreamError(
  gateway: Gateway,
  supplier: SupplierId,
  exchange: Exchange,
  error: UpstreamError,
): void {
  gateway.metrics.upstreamError(supplier, error.code);
  gateway.log.event("upstream_error", {
    supplier,
    model: exchange.model,
    status: error.upstreamStatus,
    code: error.code,
  });
}

/** Ends an exchange exactly once: its record goes to the meter and the metrics. */
export function finishExchange(
  gateway: Gateway,
  exchange: Exchange,
  status: number,
  errorCode: ErrorCode | null,
): void {
  if (exchange.finished) return;
  exchange.finished = true;
  gateway.openExchanges--;
  if (exchange.heldBodyBytes > 0 && exchange.auth !== null) {
    gateway.bodies.release(exchange.auth.accountId, exchange.heldBodyBytes);
    exchange.heldBodyBytes = 0;
  }
  const record = exchange.toRecord(status, errorCode);
  exchange.record = record;
  gateway.meter.record(record);
  gateway.metrics.observe(record);
  // bill what the supplier produced, on errors and aborts too, and free what was held
  if (exchange.reservation !== null)
    gateway.credits.settle(exchange.reservation, record.cost_micros, exchange.requestId);
  if (exchange.tokenHold !== null)
    gateway.limits.settleTokens(exchange.tokenHold, record.input_tokens + record.output_tokens);
}
