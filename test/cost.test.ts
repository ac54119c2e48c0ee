import { describe, expect, it } from "vitest";
import type { RoutePrice } from "../src/config/load-config.js";
import { costMicros } from "../src/metering/cost.js";
import { seededRandom } from "./support/seeded-random.js";

/** A price per million tokens in the config's terms, as a RoutePrice with every part set apart. */
function price(input: number, output: number, cached = input, written = input): RoutePrice {
  return { inputPerMtok: input, outputPerMtok: output, cachedInputPerMtok: cached, cacheWritePerMtok: written };
}

function usage(input: number, output: number, cachedInput = 0, cacheWrite = 0) {
  return { input, output, cachedInput, cacheWrite, reasoning: 0 };
}

/** The exact cost from prices written in decimal: BigInt sums of tokens × price in millionths, rounded half up. */
function reference(
  tokens: { plain: number; cached: number; written: number; output: number },
  millionths: { input: number; cached: number; written: number; output: number },
): number {
  const sum =
    BigInt(tokens.plain) * BigInt(millionths.input) +
    BigInt(tokens.cached) * BigInt(millionths.cached) +
    BigInt(tokens.written) * BigInt(millionths.written) +
    BigInt(tokens.output) * BigInt(millionths.output);
  const whole = sum / 1_000_000n;
  return Number((sum % 1_000_000n) * 2n >= 1_000_000n ? whole + 1n : whole);
}

describe("costMicros", () => {
  it("rounds a cost of half a micro-unit up, whatever the price's binary form (50 × 1.15 is 57.5)", () => {
    expect([50, 90, 110].map((output) => costMicros(usage(0, output), price(0, 1.15)))).toEqual([58, 104, 127]);
    expect(costMicros(usage(3, 0), price(0.5, 0))).toBe(2);
    expect(costMicros(usage(1, 0), price(0.4, 0))).toBe(0);
    expect(costMicros(usage(1, 1), price(0.3, 0.2))).toBe(1);
  });

  it("sums every part exactly before the one rounding", () => {
    // 700 plain at 0.1, 200 cached at 0.05, 100 written at 0.125, 5 output at 0.3: 70 + 10 + 12.5 + 1.5 = 94
    expect(costMicros(usage(1000, 5, 200, 100), price(0.1, 0.3, 0.05, 0.125))).toBe(94);
  });

  it("stays exact past 2^53 billionths of a micro-unit (a request costing thousands)", () => {
    expect(costMicros(usage(0, 2_000_000_000), price(0, 1000))).toBe(2_000_000_000_000);
    expect(costMicros(usage(0, 3_000_000_001), price(0, 0.5))).toBe(1_500_000_001);
    expect(costMicros(usage(9_000_000_001, 0), price(1.5, 0))).toBe(13_500_000_002);
  });

  it("agrees with exact decimal arithmetic on 20,000 random requests and prices", () => {
    const random = seededRandom(20261124);
    const int = (below: number) => random.int(0, below - 1);
    for (let round = 0; round < 20_000; round++) {
      // prices of up to six decimals, as configs write them; token counts up to ten million
      const millionths = {
        input: int(20_000_000),
        cached: int(20_000_000),
        written: int(20_000_000),
        output: int(80_000_000),
      };
      const tokens = { plain: int(10_000_000), cached: int(1_000_000), written: int(1_000_000), output: int(500_000) };
      const configured = price(
        millionths.input / 1e6,
        millionths.output / 1e6,
        millionths.cached / 1e6,
        millionths.written / 1e6,
      );
      const counted = usage(
        tokens.plain + tokens.cached + tokens.written,
        tokens.output,
        tokens.cached,
        tokens.written,
      );
      expect(costMicros(counted, configured)).toBe(reference(tokens, millionths));
    }
  });
});
