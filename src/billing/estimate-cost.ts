import type { RouteConfig } from "../config/load-config.js";
import type { ClientRequest } from "../formats/surface/client-surface.js";
import { estimateInputTokens } from "../metering/count-tokens.js";
import { mediaInputTokens } from "../metering/media-tokens.js";

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
  // images and documents are counted apart, at the most a supplier counts them (a PDF's
  // pages each cost a page image, however few bytes they take)
  const bytes = bodyBytes;
  const mediaTokens = mediaInputTokens(request.body.messages, "bound");
  return {
    tokens: Math.ceil(bytes / 4) + mediaTokens + output,
    askedOutputTokens: asked,
    upperBoundMicros: Math.ceil((bytes + mediaTokens) * price.input + output * price.output),
    // the text past what the tokenizer reads is counted at a token a byte: this decides
    // admission when credit is tight, where an estimate that falls short is an overdraw
    // (media included, as above)
    exactMicros: () => Math.ceil(estimateInputTokens(request.body, "bound") * price.input + output * price.output),
  };
}
