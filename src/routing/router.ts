import type { RouteConfig, RoutingSettings } from "../config/load-config.js";
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

  /** Every route with a health record, for /metrics and `lethe routes`. */
  allStats(): IterableIterator<[string, RouteStats]> {
    return this.stats.entries();
  }

  /** The plan's routes in the order to try them, without those whose breaker is open. */
  order(plan: RoutePlan, expected: ExpectedTokens): RouteConfig[] {
    const now = this.now();
    const available = plan.routes.filter((route) => this.statsFor(route).breaker.isAvailable(now));
    switch (plan.model.strategy) {
      case "weighted":
        return this.byWeight(available);
      case "lowest-price":
        return stableSort(available, (route) => estimatedCost(route, expected));
      case "lowest-latency":
        return stableSort(available, (route) => this.latencyScore(route, expected));
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

  /** Expected milliseconds to the whole answer; routes never measured score 0 so they get tried. */
  private latencyScore(route: RouteConfig, expected: ExpectedTokens): number {
    const stats = this.statsFor(route);
    const ttft = stats.ttftEwmaMs ?? 0;
    const generation = stats.tokensPerSecondEwma === null ? 0 : (expected.output * 1000) / stats.tokensPerSecondEwma;
    return ttft + generation;
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
