import { createRequire } from "node:module";
import { mediaInputTokens } from "./media-tokens.js";

type Tokenizer = typeof import("gpt-tokenizer");

let tokenizer: Tokenizer | null = null;

/**
 * gpt-tokenizer, loaded on first use rather than at start-up: its o200k tables cost
 * about 60 MB of RSS, and a gateway whose suppliers report usage never needs them.
 * The first count pays a one-off load (about 0.3 s on a small machine).
 */
function loadTokenizer(): Tokenizer {
  if (tokenizer === null) {
    tokenizer = createRequire(import.meta.url)("gpt-tokenizer") as Tokenizer;
    // the tokenizer's merge cache would keep fragments of prompts in memory past the request
    tokenizer.setMergeCacheSize(0);
  }
  return tokenizer;
}

/**
 * Loads the tokenizer now, when a moment of stopped event loop is cheaper than later: the
 * shutdown deadline cuts streams whose output Lethe then counts, and a first count then
 * held their endings back by the load.
 */
export function warmTokenizer(): void {
  loadTokenizer();
}

/**
 * Byte-pair merging costs the square of a word's length: a 200 KB run of letters (a DNA
 * sequence, a pasted blob) took seconds, with the event loop stopped. Runs longer than
 * this are counted a slice at a time (an estimate off by at most a token per slice).
 */
const LONGEST_RUN = 128;
// of anything: letters (a DNA sequence), or whitespace (a page of spaces or newlines is one word too)
const LONG_RUN = /\S{129,}|\s{129,}/g;
/**
 * The text the tokenizer reads per count (256 K characters: a few milliseconds of prose,
 * about 0.2 s of random letters); the rest is estimated at four characters a token.
 * Counting is linear past the slicing above, but a body of tens of megabytes would still
 * hold the event loop for seconds.
 */
export const MAX_COUNTED_CHARACTERS = 1 << 18;
export const CHARACTERS_PER_TOKEN = 4;

/** Tokens in a piece of text, by the o200k tokenizer: an estimate for non-OpenAI models. */
export function countTextTokens(text: string): number {
  return countTextsTokens([text]);
}

/**
 * How the text past the tokenizer's MAX_COUNTED_CHARACTERS is counted: `estimate`, at
 * CHARACTERS_PER_TOKEN (metering a supplier's answer that came without usage); `bound`,
 * a token per byte, which no tokenizer exceeds (a credit reservation, which must not
 * fall short: four characters a token is a quarter of what a supplier counts for CJK).
 */
export type UncountedText = "estimate" | "bound";

/**
 * Tokens in several pieces of text (a request's messages, a stream's deltas), the
 * tokenizer reading at most MAX_COUNTED_CHARACTERS of them all.
 */
export function countTextsTokens(
  texts: readonly string[],
  uncounted: UncountedText = "estimate",
  /** Characters the tokenizer reads at most; 0 estimates everything without loading it. */
  tokenizerBudget = MAX_COUNTED_CHARACTERS,
): number {
  let budget = tokenizerBudget;
  let total = 0;
  for (const text of texts) {
    if (text === "") continue;
    const counted = text.length > budget ? text.slice(0, budget) : text;
    budget -= counted.length;
    if (counted.length < text.length) {
      total +=
        uncounted === "bound"
          ? Buffer.byteLength(text.slice(counted.length), "utf8")
          : Math.ceil((text.length - counted.length) / CHARACTERS_PER_TOKEN);
    }
    if (counted !== "") total += countSliced(counted);
  }
  return total;
}

/** The tokenizer's count, with runs of non-space (or of space) characters longer than LONGEST_RUN counted a slice at a time. */
function countSliced(text: string): number {
  const tokenizer = loadTokenizer();
  if (text.length <= LONGEST_RUN) return tokenizer.countTokens(text);
  let total = 0;
  let from = 0;
  for (const run of text.matchAll(LONG_RUN)) {
    const start = run.index;
    if (start > from) total += tokenizer.countTokens(text.slice(from, start));
    const end = start + run[0].length;
    for (let at = start; at < end; at += LONGEST_RUN) {
      total += tokenizer.countTokens(text.slice(at, Math.min(end, at + LONGEST_RUN)));
    }
    from = end;
  }
  if (from < text.length) total += tokenizer.countTokens(from === 0 ? text : text.slice(from));
  return total;
}

/** Cuts `text` to at most `maxTokens` tokens; used by the demo supplier's max-tokens cut-off. */
export function truncateToTokens(text: string, maxTokens: number): string {
  const { encode, decode } = loadTokenizer();
  const tokens = encode(text);
  return tokens.length <= maxTokens ? text : decode(tokens.slice(0, maxTokens));
}

/** Appends every string found in a content value (a string, or parts with `text`). */
export function collectText(content: unknown, into: string[]): void {
  if (typeof content === "string") {
    into.push(content);
    return;
  }
  if (!Array.isArray(content)) return;
  for (const part of content) {
    if (typeof part !== "object" || part === null) continue;
    const record = part as Record<string, unknown>;
    if (typeof record.text === "string") into.push(record.text);
    // an Anthropic document of text, or of content blocks: its text is read like any other
    if (record.type === "document") collectDocumentText(record.source, into);
    if (typeof record.thinking === "string") into.push(record.thinking);
    if (record.content !== undefined) collectText(record.content, into);
    if (record.input !== undefined) into.push(JSON.stringify(record.input));
  }
}

function collectDocumentText(source: unknown, into: string[]): void {
  if (typeof source !== "object" || source === null) return;
  const { type, data, content } = source as { type?: unknown; data?: unknown; content?: unknown };
  if (type === "text" && typeof data === "string") into.push(data);
  else if (type === "content") collectText(content, into);
}

// OpenAI's cookbook: every message costs about 3 tokens of framing, every reply 3 more
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_REPLY = 3;

/**
 * Estimates the input tokens of an OpenAI or Anthropic request body (messages, system,
 * tools), its images and documents included (media-tokens.ts; `bound` counts them as a
 * credit reservation must, `estimate` as metering may).
 */
export function estimateInputTokens(
  body: Record<string, unknown>,
  uncounted: UncountedText = "estimate",
  tokenizerBudget = MAX_COUNTED_CHARACTERS,
): number {
  const texts: string[] = [];
  let framing = TOKENS_PER_REPLY;
  collectText(body.system, texts);
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (const message of messages) {
    if (typeof message !== "object" || message === null) continue;
    const record = message as Record<string, unknown>;
    framing += TOKENS_PER_MESSAGE;
    collectText(record.content, texts);
    if (Array.isArray(record.tool_calls)) texts.push(JSON.stringify(record.tool_calls));
  }
  if (Array.isArray(body.tools)) texts.push(JSON.stringify(body.tools));
  return framing + countTextsTokens(texts, uncounted, tokenizerBudget) + mediaInputTokens(messages, uncounted);
}
