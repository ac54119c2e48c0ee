import type { RouteConfig } from "../config/load-config.js";
import type { ClientRequest } from "../formats/surface/client-surface.js";
import { estimateInputTokens } from "../metering/count-tokens.js";

/** What a request is reserved at before it is forwarded. */
export interface CostEstimate {
  /** Tokens held against TPM: a cheap estimate of the input plus the output allowance. */
  tokens: number;
  /** The output the client itself asked for (`max_tokens` × choices), 0 when it set no limit. */
  askedOutputTokens: number;
  /** Micro-units, generous (input bounded by its byte size), cheap to compute. */
  upperBoundMicros: number;
  /** Micro-units with the input counted by the tokenizer; only computed when credit is tight. */
  exactMicros(): number;
}

/**
 * The most a route costs per input and per output token: reservations assume the dearest
 * route, and any input token may be a cache write (dearer than plain input at Anthropic).
 */
function dearest(routes: readonly RouteConfig[]): { input: number; output: number } {
  let input = 0;
  let output = 0;
  for (const route of routes) {
    input = Math.max(input, route.price.inputPerMtok, route.price.cacheWritePerMtok);
    output = Math.max(output, route.price.outputPerMtok);
  }
  return { input, output };
}

/**
 * The most input tokens one image is counted at by the suppliers Lethe speaks to: Anthropic
 * counts about 1,600 for its largest images (width × height / 750), OpenAI's patch-counted
 * models up to 1,536 patches times a model multiplier of at most 1.72 (2,642), its
 * tile-counted ones 1,105. An image sent by URL is a few bytes of the body, so the body's
 * size does not bound it, and the tokenizer sees no text in it: without this bound an
 * account short of credit could send images for nearly nothing reserved.
 */
export const IMAGE_INPUT_TOKENS_BOUND = 2_700;

/**
 * The most input tokens a document sent by reference (Anthropic's `document` block with a
 * `url` or `file` source) is counted at: Anthropic reads PDFs of up to 100 pages at about
 * 2,000 tokens a page (text and page image). An inline document is in the body, whose size
 * bounds it already.
 */
export const DOCUMENT_INPUT_TOKENS_BOUND = 200_000;

const IMAGE_PARTS = new Set(["image_url", "image", "input_image"]);
const REFERENCED_SOURCES = new Set(["url", "file"]);

/**
 * Input tokens of what the body's size does not bound: image parts (OpenAI `image_url`,
 * Anthropic `image`), documents sent by reference, tool results' own blocks included.
 * Also what a local count_tokens adds for them: the tokenizer sees no text in an image.
 */
export function mediaInputTokens(messages: unknown): number {
  if (!Array.isArray(messages)) return 0;
  let tokens = 0;
  for (const message of messages) {
    const content = (message as { content?: unknown } | null)?.content;
    // most messages are a string: one check each
    if (Array.isArray(content)) tokens += mediaIn(content);
  }
  return tokens;
}

function mediaIn(parts: unknown[]): number {
  let tokens = 0;
  for (const part of parts) {
    if (typeof part !== "object" || part === null) continue;
    const { type, content, source } = part as { type?: unknown; content?: unknown; source?: { type?: unknown } };
    if (typeof type === "string" && IMAGE_PARTS.has(type)) tokens += IMAGE_INPUT_TOKENS_BOUND;
    else if (type === "document" && REFERENCED_SOURCES.has(source?.type as string)) {
      tokens += DOCUMENT_INPUT_TOKENS_BOUND;
    }
    // an Anthropic tool_result holds blocks of its own
    else if (type === "tool_result" && Array.isArray(content)) tokens += mediaIn(content);
  }
  return tokens;
}

/**
 * Estimates a request's cost before it is forwarded: its input tokens plus
 * `max_tokens` (or the configured cap when the client set none) for each of the
 * `choices` answers it asks for (OpenAI's `n`; a supplier bounds each by `max_tokens`).
 */
export function estimateCost(
  request: ClientRequest,
  routes: readonly RouteConfig[],
  defaultOutputTokens: number,
  bodyBytes: number,
  choices: number,
): CostEstimate {
  const limit = request.body.max_completion_tokens ?? request.body.max_tokens;
  const asked = typeof limit === "number" && limit > 0 ? limit * choices : 0;
  const output = asked > 0 ? asked : defaultOutputTokens * choices;
  const price = dearest(routes);
  // a token of text is at least one byte, so the body's size bounds the text from above;
  // images and referenced documents are counted apart, at the most a supplier counts one
  const bytes = bodyBytes;
  const mediaTokens = mediaInputTokens(request.body.messages);
  return {
    tokens: Math.ceil(bytes / 4) + mediaTokens + output,
    askedOutputTokens: asked,
    upperBoundMicros: Math.ceil((bytes + mediaTokens) * price.input + output * price.output),
    // the text past what the tokenizer reads is counted at a token a byte: this decides
    // admission when credit is tight, where an estimate that falls short is an overdraw
    exactMicros: () =>
      Math.ceil((estimateInputTokens(request.body, "bound") + mediaTokens) * price.input + output * price.output),
  };
}
