import type { RouteConfig, RoutingSettings } from "../config/load-config.js";
import { LetheError } from "../errors/lethe-error.js";
import type { RoutePlan } from "./plan-routes.js";
import { RouteStats } from "./route-stats.js";

/** What a request is expected to cost in tokens, for the price and latency strategies. */
export interface ExpectedTokens {
  input: number;
  output: number;
}

/** Orders a model's routes for one request, by its strategy and the routes' health. */
export class Router {
  private readonly stats = new Map<string, RouteStats>();

  constructor(
    readonly settings: RoutingSettings,
    /** Milliseconds; injectable so breaker tests control time. */
    readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {}

  /** The health record of a route (routes sharing supplier and model share it). */
  statsFor(route: RouteConfig): RouteStats {
    let stats = this.stats.get(route.key);
    if (stats === undefined) {
      stats = new RouteStats(this.settings.breaker);
      this.stats.set(route.key, stats);
    }
    return stats;
  }

  /**
   * The router of a reloaded config whose routing settings changed. It keeps the health
   * records of the routes still configured (a failing route stays failing, a measured one
   * measured) when the breaker settings are the same, since each record's breaker holds them.
   */
  successor(settings: RoutingSettings, routeKeys: ReadonlySet<string>): Router {
    const next = new Router(settings, this.now, this.random);
    if (JSON.stringify(settings.breaker) === JSON.stringify(this.settings.breaker)) {
      for (const [key, stats] of this.stats) if (routeKeys.has(key)) next.stats.set(key, stats);
    }
    return next;
  }

  /** Every route with a health record, for /metrics and `lethe routes`. */
  allStats(): IterableIterator<[string, RouteStats]> {
    return this.stats.entries();
  }

  /**
   * The refusal for a request none of whose routes takes requests now, with a `retry-after`
   * of when the first one does again (a breaker lets a probe through, a supplier's
   * `retry-after` passes; at least a second), so clients' retries wait for it rather than
   * spend themselves on the wait. When every route rests on a 429's `retry-after`, it is
   * the suppliers' rate limit (429), not a failure (503).
   */
  noHealthyRoute(plan: RoutePlan): LetheError {
    const now = this.now();
    let soonestMs = Number.POSITIVE_INFINITY;
    let rateLimited = plan.routes.length > 0;
    for (const route of plan.routes) {
      const stats = this.statsFor(route);
      const breakerMs = stats.breaker.msUntilAvailable(now);
      soonestMs = Math.min(soonestMs, Math.max(breakerMs, stats.msUntilRested(now)));
      if (breakerMs > 0 || !stats.restingForRateLimit(now)) rateLimited = false;
    }
    const retryAfterSeconds = Number.isFinite(soonestMs) ? Math.max(1, Math.ceil(soonestMs / 1000)) : 1;
    if (rateLimited) {
      const message = "Every supplier of this model is rate limiting requests; retry after the time given.";
      return new LetheError("LETHE_UPSTREAM_RATE_LIMITED", message, { retryAfterSeconds });
    }
    return new LetheError("LETHE_NO_HEALTHY_ROUTE", "Every route of this model is failing right now; retry shortly.", {
      retryAfterSeconds,
    });
  }

  /** The plan's routes in the order to try them, without those whose breaker is open or that rest on a `retry-after`. */
  order(plan: RoutePlan, expected: ExpectedTokens): RouteConfig[] {
    const now = this.now();
    const available = plan.routes.filter((route) => this.statsFor(route).takesRequests(now));
    switch (plan.model.strategy) {
      case "weighted":
        return this.byWeight(available);
      case "lowest-price":
        return stableSort(available, (route) => estimatedCost(route, expected));
      case "lowest-latency":
        return this.byLatency(available, expected, now);
      default:
        return available;
    }
  }

  /** Weighted random order without replacement (Efraimidis–Spirakis keys). */
  private byWeight(routes: RouteConfig[]): RouteConfig[] {
    const keyed = routes.map((route) => ({
      route,
      key: route.weight > 0 ? this.random() ** (1 / route.weight) : -1,
    }));
    keyed.sort((a, b) => b.key - a.key);
    return keyed.map((entry) => entry.route);
  }

  /**
   * Routes by the expected time to the whole answer, with one exception: a route to be
   * measured goes first, so one slow spell does not exile a route for good. That is a
   * route that never answered, and, while the model has traffic (some route answered
   * within STALE_AFTER_MS), one whose figures are older than that. It gets one request
   * at a time: once sent, an unmeasured route waits at the back and a stale one keeps its
   * old figures until the answer comes. With no recent traffic, old figures are all
   * there is, and measuring would cost the few requests there are.
   */
  private byLatency(routes: RouteConfig[], expected: ExpectedTokens, now: number): RouteConfig[] {
    const traffic = this.hasTraffic(routes, now);
    return stableSort(routes, (route) => this.latencyScore(this.statsFor(route), expected, now, traffic));
  }

  /**
   * A request is about to be sent on `route`: if it measures the route (lowest-latency),
   * the route's next requests wait for its answer rather than measure it too. Noted at
   * sending, not at ordering: a route ordered first but passed over (its breaker, a format
   * it cannot carry) measured nothing.
   */
  sending(plan: RoutePlan, route: RouteConfig): void {
    if (plan.model.strategy !== "lowest-latency") return;
    const now = this.now();
    const stats = this.statsFor(route);
    const available = plan.routes.filter((candidate) => this.statsFor(candidate).takesRequests(now));
    if (this.wantsMeasuring(stats, now, this.hasTraffic(available, now))) stats.probeSentAt = now;
  }

  /** Some route of the model answered within STALE_AFTER_MS. */
  private hasTraffic(routes: RouteConfig[], now: number): boolean {
    return routes.some((route) => !this.statsFor(route).isStale(now));
  }

  private wantsMeasuring(stats: RouteStats, now: number, traffic: boolean): boolean {
    if (stats.isProbing(now)) return false;
    return stats.ttftEwmaMs === null || (traffic && stats.isStale(now));
  }

  /** Expected milliseconds to the whole answer: time to the first token, then the expected output at the route's pace. */
  private latencyScore(stats: RouteStats, expected: ExpectedTokens, now: number, traffic: boolean): number {
    if (this.wantsMeasuring(stats, now, traffic)) return -1;
    if (stats.ttftEwmaMs === null) return Number.POSITIVE_INFINITY;
    return stats.ttftEwmaMs + (stats.msPerTokenEwma ?? 0) * expected.output;
  }
}

function estimatedCost(route: RouteConfig, expected: ExpectedTokens): number {
  return expected.input * route.price.inputPerMtok + expected.output * route.price.outputPerMtok;
}

function stableSort(routes: RouteConfig[], score: (route: RouteConfig) => number): RouteConfig[] {
  return routes
    .map((route, index) => ({ route, index, score: score(route) }))
    .sort((a, b) => a.score - b.score || a.index - b.index)
    .map((entry) => entry.route);
}
