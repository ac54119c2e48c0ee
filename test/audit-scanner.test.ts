import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { type Canary, mintCanary } from "../src/audit/canaries.js";
import { CanaryRegistry } from "../src/audit/canary-registry.js";
import { PatternMatcher } from "../src/audit/pattern-matcher.js";
import { redisStore } from "../src/audit/stores/redis-store.js";

// the audit is only as good as its scanner: every encoding a leak could use must be found

/** Real encoders applied to a document that holds the canary somewhere in its middle. */
const ENCODERS: [string, (canary: Canary) => Buffer][] = [
  ["raw", (canary) => Buffer.from(`{"prompt":"..${canary.text}.."}`)],
  ["JSON-escaped", (canary) => Buffer.from(JSON.stringify({ prompt: `..${canary.text}..` }))],
  [
    "JSON-escaped with \\u escapes",
    (canary) =>
      Buffer.from(
        JSON.stringify({ prompt: canary.text }).replace(
          /[^\x20-\x7e]/g,
          (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`,
        ),
      ),
  ],
  ["base64, aligned", (canary) => Buffer.from(Buffer.from(`abc${canary.text}!`).toString("base64"))],
  ["base64, shifted by 1", (canary) => Buffer.from(Buffer.from(`abcd${canary.text}!`).toString("base64"))],
  ["base64, shifted by 2", (canary) => Buffer.from(Buffer.from(`abcde${canary.text}!?`).toString("base64"))],
  ["URL-encoded (%20)", (canary) => Buffer.from(`/v1/x?q=${encodeURIComponent(`a ${canary.text} b`)}`)],
  ["URL-encoded (+)", (canary) => Buffer.from(new URLSearchParams({ q: `a ${canary.text} b` }).toString())],
  ["hex, lower case", (canary) => Buffer.from(Buffer.from(`<${canary.text}>`).toString("hex"))],
  ["hex, upper case", (canary) => Buffer.from(Buffer.from(`<${canary.text}>`).toString("hex").toUpperCase())],
  ["UTF-16LE", (canary) => Buffer.from(`<${canary.text}>`, "utf16le")],
  ["UTF-16BE", (canary) => Buffer.from(`<${canary.text}>`, "utf16le").swap16()],
  [
    "JSON-escaped, then base64",
    (canary) => Buffer.from(Buffer.from(JSON.stringify({ p: canary.text })).toString("base64")),
  ],
  [
    "URL-encoded, then hex",
    (canary) => Buffer.from(Buffer.from(`q=${encodeURIComponent(canary.text)}`).toString("hex")),
  ],
];

describe("audit scanner", () => {
  it.each(ENCODERS)("finds a canary written %s, amid other bytes, fed in small chunks", (_name, encode) => {
    const registry = new CanaryRegistry();
    registry.mint(0);
    const canary = registry.mint(7);
    registry.mint(3, "header");
    const data = Buffer.concat([randomBytes(500), encode(canary), randomBytes(500)]);
    const found = new Set<number>();
    const session = registry.matcher().session(found);
    for (let offset = 0; offset < data.length; offset += 13) session.feed(data.subarray(offset, offset + 13));
    expect([...registry.canariesOf(found)].map((index) => registry.pathOf(index))).toEqual([7]);
  });

  it("says so when the configured Redis cannot be reached", async () => {
    expect(await redisStore("redis://:secret@127.0.0.1:1", "lethe:").unavailable()).toBe(
      "cannot reach Redis at 127.0.0.1:1",
    );
  });

  it("finds exactly what a search for each pattern on its own finds", () => {
    const patterns = [
      ...Array.from({ length: 20 }, () => Buffer.from(mintCanary().text)),
      ...["abcab", "bcabd", "cab", "aaaa", "\0c\0n"].map((text) => Buffer.from(text)),
    ];
    const matcher = new PatternMatcher(patterns);
    for (let round = 0; round < 10; round++) {
      const parts = Array.from({ length: 40 }, (_, index) =>
        index % 4 === 0 ? (patterns[(round * 7 + index) % patterns.length] as Buffer) : randomBytes(index * 3),
      );
      parts.push(Buffer.from("abcabcabdaaaaa\0c\0n"));
      const data = Buffer.concat(parts);
      const found = new Set<number>();
      matcher.session(found).feed(data);
      const expected = patterns.flatMap((pattern, index) => (data.includes(pattern) ? [index] : []));
      expect([...found].sort((a, b) => a - b)).toEqual(expected);
    }
  });
});
