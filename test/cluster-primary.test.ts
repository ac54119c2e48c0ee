import { describe, expect, it } from "vitest";
import { replacementDelayMs } from "../src/server/cluster-primary.js";

describe("replacing a dead worker", () => {
  it("at once after a worker that served, then backing off while replacements die before they listen", () => {
    expect(replacementDelayMs(0)).toBe(0);
    expect([1, 2, 3, 4, 5, 6].map(replacementDelayMs)).toEqual([250, 500, 1_000, 2_000, 4_000, 8_000]);
    // bounded: a database back after an hour away is found within 10 s
    expect(replacementDelayMs(7)).toBe(10_000);
    expect(replacementDelayMs(100)).toBe(10_000);
  });
});
