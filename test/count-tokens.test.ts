import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { countTextsTokens, countTextTokens } from "../src/metering/count-tokens.js";
import { seededRandom } from "./support/seeded-random.js";

// the tokenizer itself, to compare Lethe's count with
const tokenizer = createRequire(import.meta.url)("gpt-tokenizer") as typeof import("gpt-tokenizer");

describe("the local token count", () => {
  const random = seededRandom(7);
  const letters = (length: number, alphabet: string) =>
    Array.from({ length }, () => alphabet[random.int(0, alphabet.length - 1)]).join("");

  it("is the tokenizer's own count for text without long runs of non-space characters", () => {
    const prose = "The quick brown fox jumps over the lazy dog, twice; then it rests. ".repeat(500);
    expect(countTextTokens(prose)).toBe(tokenizer.countTokens(prose));
    expect(countTextTokens("short")).toBe(tokenizer.countTokens("short"));
    expect(countTextTokens("")).toBe(0);
  });

  it("counts a long unbroken run a slice at a time, within a few percent of the whole count", () => {
    // byte-pair merging is quadratic in a word's length: a 200 KB DNA sequence held the event loop for seconds
    // whitespace runs too (a page of spaces or newlines is one word to the tokenizer), counted less closely
    for (const [run, within] of [
      [letters(8_000, "ACGT"), 0.05],
      [letters(8_000, "abcdefghijklmnopqrstuvwxyz"), 0.05],
      [" ".repeat(8_000), 0.15],
      ["\r\n".repeat(4_000), 0.15],
    ] as const) {
      const text = `A sequence follows: ${run} and that was it.`;
      const exact = tokenizer.countTokens(text);
      const counted = countTextTokens(text);
      expect(Math.abs(counted - exact) / exact).toBeLessThan(within);
    }
  });

  it("reads at most 256 K characters of all the texts and estimates the rest at four characters a token", () => {
    const block = "word ".repeat(50_000); // 250,000 characters
    const first = tokenizer.countTokens(block);
    const rest = "abc ".repeat(10_000); // 40,000 characters
    // the second text is read only up to the budget left (262,144 − 250,000 = 12,144 characters)
    const readOfRest = tokenizer.countTokens(rest.slice(0, 12_144));
    expect(countTextsTokens([block, rest])).toBe(first + readOfRest + Math.ceil((40_000 - 12_144) / 4));
    expect(countTextsTokens([block, rest, "more text"])).toBe(
      first + readOfRest + Math.ceil((40_000 - 12_144) / 4) + Math.ceil(9 / 4),
    );
  });
});
