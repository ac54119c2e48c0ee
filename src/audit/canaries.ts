import { randomBytes } from "node:crypto";

/**
 * Where a canary goes decides what it may contain: `text` (JSON strings) carries a
 * space, a quote, a slash and non-ASCII letters, so that every encoding of it looks
 * different; `header` stays within what an HTTP header value may hold; `token` is
 * the bare unique core, for slots that take no spaces (an API key).
 */
export type CanaryForm = "text" | "header" | "token";

/** A unique marker the audit sends through Lethe and then looks for in every store. */
export interface Canary {
  /** The unique core: `cnry` and 20 random hex digits, present in every form. */
  core: string;
  /** What is sent. */
  text: string;
}

/** The encoding families every canary is searched in; each has one or more variants. */
export const ENCODING_FAMILIES = ["raw", "JSON-escaped", "base64", "URL-encoded", "hex", "UTF-16"] as const;

/** One byte pattern a canary could leave behind. */
export interface CanaryPattern {
  /** The variant's name, e.g. `base64 (offset 1)`: never the canary itself. */
  variant: string;
  bytes: Buffer;
}

/** Mints a fresh canary in the given form. */
export function mintCanary(form: CanaryForm = "text"): Canary {
  const core = `cnry${randomBytes(10).toString("hex")}`;
  if (form === "token") return { core, text: core };
  if (form === "header") return { core, text: `${core} "zdr/audit"` };
  return { core, text: `${core} "Léthé/zdr"` };
}

/** JSON string escaping with every non-ASCII character as `\uXXXX`, as some encoders write it. */
function asciiJson(text: string): string {
  return JSON.stringify(text)
    .slice(1, -1)
    .replace(/[^\x20-\x7e]/g, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * The part of base64 that depends only on the canary when it starts `offset` bytes
 * into a 3-byte group: the characters mixed with neighbouring bytes are cut off.
 */
function stableBase64(raw: Buffer, offset: number, alphabet: "base64" | "base64url"): string {
  const encoded = Buffer.concat([Buffer.alloc(offset), raw]).toString(alphabet);
  const start = [0, 2, 3][offset] as number;
  // the last group is cut too: it mixes in padding or whatever bytes follow the canary
  return encoded.slice(start, -4);
}

/** The variants that encode bytes (hex, UTF-16, base64): they apply to any text, escaped or not. */
function binaryVariants(text: string, suffix: string): [string, Buffer][] {
  const raw = Buffer.from(text, "utf8");
  const variants: [string, Buffer][] = [
    [`raw${suffix}`, raw],
    [`hex (lower case)${suffix}`, Buffer.from(raw.toString("hex"))],
    [`hex (upper case)${suffix}`, Buffer.from(raw.toString("hex").toUpperCase())],
    [`UTF-16LE${suffix}`, Buffer.from(text, "utf16le")],
    [`UTF-16BE${suffix}`, Buffer.from(text, "utf16le").swap16()],
  ];
  for (const alphabet of ["base64", "base64url"] as const) {
    for (let offset = 0; offset < 3; offset++) {
      variants.push([`${alphabet} (offset ${offset})${suffix}`, Buffer.from(stableBase64(raw, offset, alphabet))]);
    }
  }
  return variants;
}

/**
 * Every variant of every encoding family a canary is searched in, without duplicates.
 * The byte encodings are applied to the whole canary and to its unique core: the
 * core reads the same JSON-escaped or URL-encoded, so a leak that escapes first and
 * then base64-encodes (or hex-dumps) is still found.
 */
export function canaryPatterns(canary: Canary): CanaryPattern[] {
  const variants: [string, Buffer][] = [
    ...binaryVariants(canary.text, ""),
    ...binaryVariants(canary.core, " of the unique core"),
    ["JSON-escaped", Buffer.from(JSON.stringify(canary.text).slice(1, -1))],
    ["JSON-escaped (ASCII)", Buffer.from(asciiJson(canary.text))],
    ["URL-encoded (%20)", Buffer.from(encodeURIComponent(canary.text))],
    ["URL-encoded (+)", Buffer.from(new URLSearchParams({ v: canary.text }).toString().slice(2))],
  ];
  const seen = new Set<string>();
  const patterns: CanaryPattern[] = [];
  for (const [variant, bytes] of variants) {
    const key = bytes.toString("latin1");
    if (seen.has(key)) continue;
    seen.add(key);
    patterns.push({ variant, bytes });
  }
  return patterns;
}

/** Every variant name a text canary is searched in (the figure the report prints). */
export function encodingVariants(): string[] {
  return canaryPatterns(mintCanary("text")).map((pattern) => pattern.variant);
}

/** True when `text` holds the canary in any encoding: how a path checks that it flowed back. */
export function mentions(text: string, canary: Canary): boolean {
  const bytes = Buffer.from(text, "utf8");
  return canaryPatterns(canary).some((pattern) => bytes.includes(pattern.bytes));
}
