import type { RoutePrice } from "../config/load-config.js";
import type { TokenUsage } from "./token-usage.js";

/**
 * Cost in micro-units of the operator's currency. Prices are per million tokens, so
 * tokens × price-per-million is exactly the cost in micro-units.
 */
export function costMicros(usage: TokenUsage, price: RoutePrice): number {
  const plain = Math.max(0, usage.input - usage.cachedInput - usage.cacheWrite);
  return Math.round(
    plain * price.inputPerMtok +
      usage.cachedInput * price.cachedInputPerMtok +
      usage.cacheWrite * price.cacheWritePerMtok +
      usage.output * price.outputPerMtok,
  );
}
