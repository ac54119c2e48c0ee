import { createRequire } from "node:module";

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

/** Tokens in a piece of text, by the o200k tokenizer: an estimate for non-OpenAI models. */
export function countTextTokens(text: string): number {
  return text === "" ? 0 : loadTokenizer().countTokens(text);
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
    if (typeof record.thinking === "string") into.push(record.thinking);
    if (record.content !== undefined) collectText(record.content, into);
    if (record.input !== undefined) into.push(JSON.stringify(record.input));
  }
}

// OpenAI's cookbook: every message costs about 3 tokens of framing, every reply 3 more
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_REPLY = 3;

/** Estimates the input tokens of an OpenAI or Anthropic request body (messages, system, tools). */
export function estimateInputTokens(body: Record<string, unknown>): number {
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
  let total = framing;
  for (const text of texts) total += countTextTokens(text);
  return total;
}
