import type { IncomingHttpHeaders } from "node:http";
import type { RouteConfig } from "../../config/load-config.js";
import { fromAnthropicUsage } from "../../metering/anthropic-usage.js";
import { collectText, countTextsTokens, estimateInputTokens } from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";
import { fromOpenAIUsage, noTokens } from "../../metering/token-usage.js";
import type { JsonAnswer, WireFormat } from "../../suppliers/supplier.js";
import type { ClientRequest, ClientSurface, StreamTranslator, UpstreamBody } from "../surface/client-surface.js";
import { sentBody, spliceModel, spliceRequest } from "../surface/splice-model.js";
import { AnthropicToOpenAIStream } from "../translate/anthropic-to-openai-stream.js";
import { openAIToAnthropicRequest } from "../translate/openai-to-anthropic-request.js";
import { anthropicToOpenAICompletion } from "../translate/translate-response.js";
import { validateBody } from "../validation/request-validation.js";
import { chatRequestSchema } from "./chat-request-schema.js";
import { renderOpenAIError } from "./openai-error.js";
import { OpenAIStreamRelay } from "./openai-stream-relay.js";

/** The OpenAI Chat Completions surface, `POST /v1/chat/completions`. */
export const openAIChatSurface: ClientSurface = {
  format: "openai",
  endpoint: "/v1/chat/completions",

  parse(body: unknown, _headers: IncomingHttpHeaders, text?: string): ClientRequest {
    const request = validateBody(chatRequestSchema, body);
    return {
      model: request.model,
      stream: request.stream === true,
      wantsStreamUsage: request.stream_options?.include_usage === true,
      body: request,
      sent: sentBody(text, body as object, request.stream_options !== undefined, request.store),
    };
  },

  upstreamBody(request: ClientRequest, route: RouteConfig, supplierFormat: WireFormat): UpstreamBody {
    if (supplierFormat === "anthropic") return { body: openAIToAnthropicRequest(request.body, route.upstreamModel) };
    // the client's own text, edited, when it can be: every field then reaches the supplier as sent
    const text = forwardedText(request, route);
    // the client's body is forwarded as it is, changed in place rather than copied: copying a
    // parsed object field by field costs more than serialising it, and everything read from
    // it later (token estimates, a translation for another route) ignores what changes here
    const body = request.body as Record<string, unknown>;
    body.model = route.upstreamModel;
    // always ask for usage when streaming, so every stream is metered; the relay
    // strips the extra chunk again when the client did not ask for it (it was noted at parse)
    if (request.stream) {
      const options = body.stream_options;
      if (typeof options === "object" && options !== null) (options as Record<string, unknown>).include_usage = true;
      else body.stream_options = { include_usage: true };
    }
    return text === undefined ? { body } : { body, text };
  },

  jsonResponse(request: ClientRequest, answer: JsonAnswer, supplierFormat: WireFormat, exchange: Exchange): string {
    const body = answer.body;
    if (supplierFormat === "anthropic") {
      const usage = fromAnthropicUsage(body.usage);
      if (usage === null) exchange.tokensEstimated = true;
      exchange.usage = usage ?? {
        ...noTokens(),
        input: estimateInputTokens(request.body),
        output: exchange.estimatedOutput(estimateAnthropicOutput(body)),
      };
      return JSON.stringify(anthropicToOpenAICompletion(body, exchange.model, exchange.usage));
    }
    const usage = fromOpenAIUsage(body.usage);
    if (usage !== null) exchange.usage = usage;
    else {
      exchange.usage = {
        ...noTokens(),
        input: estimateInputTokens(request.body),
        output: exchange.estimatedOutput(estimateOpenAIOutput(body)),
      };
      exchange.tokensEstimated = true;
    }
    // clients see the model id they asked for, not the supplier's name for it
    const spliced = answer.text === undefined ? undefined : spliceModel(answer.text, body.model, exchange.model);
    if (spliced !== undefined) return spliced;
    body.model = exchange.model;
    return JSON.stringify(body);
  },

  streamTranslator(request: ClientRequest, supplierFormat: WireFormat, exchange: Exchange): StreamTranslator {
    if (supplierFormat === "anthropic") return new AnthropicToOpenAIStream(request, exchange);
    return new OpenAIStreamRelay(request, exchange);
  },

  renderError: renderOpenAIError,
};

const STREAM_USAGE_MEMBER = '"stream_options":{"include_usage":true}';
const STORE_FALSE_MEMBER = '"store":false';

/**
 * The client's text as an OpenAI-type supplier of `route` gets it: the route's model,
 * usage asked for when streaming, `store: false` when the supplier takes it. Undefined
 * (serialise the parse instead) when there is no text, or when a field to set was sent
 * with another value: only absent fields are added, the model alone is replaced.
 */
function forwardedText(request: ClientRequest, route: RouteConfig): string | undefined {
  const sent = request.sent;
  if (sent === undefined) return undefined;
  let members = "";
  if (request.stream && !request.wantsStreamUsage) {
    if (sent.hasStreamOptions) return undefined;
    members = STREAM_USAGE_MEMBER;
  }
  if (route.supplier.sendStoreFalse && sent.store !== false) {
    if (sent.store !== undefined) return undefined;
    members = members === "" ? STORE_FALSE_MEMBER : `${members},${STORE_FALSE_MEMBER}`;
  }
  return spliceRequest(sent.text, sent.keys, request.model, route.upstreamModel, members);
}

function estimateAnthropicOutput(body: Record<string, unknown>): number {
  const texts: string[] = [];
  collectText(body.content, texts);
  return countTextsTokens(texts);
}

function estimateOpenAIOutput(body: Record<string, unknown>): number {
  const choices = Array.isArray(body.choices) ? body.choices : [];
  const messages = choices.map((choice) => (choice as { message?: unknown }).message);
  return Math.max(0, estimateInputTokens({ messages }) - 3 - 3 * messages.length);
}
