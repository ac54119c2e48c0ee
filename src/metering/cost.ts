import type { RoutePrice } from "../config/load-config.js";
import type { TokenUsage } from "./token-usage.js";

/**
 * Prices are taken to billionths of a micro-unit per token: whole numbers, so a cost is
 * summed exactly and rounded once. In floating point, 50 tokens at 1.15 came to
 * 57.49999999999999 micro-units, and rounded down.
 */
const SCALE = 1_000_000_000;
const BIG_SCALE = BigInt(SCALE);

function scaled(pricePerMtok: number): number {
  return Math.round(pricePerMtok * SCALE);
}

/**
 * Cost in micro-units of the operator's currency, rounded half up once. Prices are per
 * million tokens, so tokens × price-per-million is exactly the cost in micro-units.
 */
export function costMicros(usage: TokenUsage, price: RoutePrice): number {
  const plain = Math.max(0, usage.input - usage.cachedInput - usage.cacheWrite);
  const input = scaled(price.inputPerMtok);
  const cached = scaled(price.cachedInputPerMtok);
  const written = scaled(price.cacheWritePerMtok);
  const output = scaled(price.outputPerMtok);
  const sum = plain * input + usage.cachedInput * cached + usage.cacheWrite * written + usage.output * output;
  if (Number.isSafeInteger(sum)) {
    // the quotient of a large sum may be rounded to the next whole number: the remainder says
    let whole = Math.floor(sum / SCALE);
    let rest = sum - whole * SCALE;
    if (rest < 0) {
      whole--;
      rest += SCALE;
    }
    return rest * 2 >= SCALE ? whole + 1 : whole;
  }
  // past 2^53 billionths (about nine units of currency in one request): exact in BigInt
  const big =
    whole(plain) * whole(input) +
    whole(usage.cachedInput) * whole(cached) +
    whole(usage.cacheWrite) * whole(written) +
    whole(usage.output) * whole(output);
  const units = big / BIG_SCALE;
  return Number((big % BIG_SCALE) * 2n >= BIG_SCALE ? units + 1n : units);
}

/** A count or scaled price as a BigInt (they are whole numbers; anything else counts as none). */
function whole(value: number): bigint {
  return BigInt(Number.isFinite(value) ? Math.trunc(value) : 0);
}
