import type { IncomingHttpHeaders } from "node:http";
import type { RouteConfig } from "../../config/load-config.js";
import { LetheError } from "../../errors/lethe-error.js";
import { fromAnthropicUsage, toAnthropicUsage } from "../../metering/anthropic-usage.js";
import { collectText, countTextsTokens, estimateInputTokens } from "../../metering/count-tokens.js";
import type { Exchange } from "../../metering/exchange.js";
import { fromOpenAIUsage, noTokens, type TokenUsage } from "../../metering/token-usage.js";
import type { JsonAnswer, WireFormat } from "../../suppliers/supplier.js";
import type { ClientRequest, ClientSurface, StreamTranslator, UpstreamBody } from "../surface/client-surface.js";
import { sentBody, spliceModel, spliceRequest } from "../surface/splice-model.js";
import { anthropicToOpenAIRequest } from "../translate/anthropic-to-openai-request.js";
import { OpenAIToAnthropicStream } from "../translate/openai-to-anthropic-stream.js";
import { openAIToAnthropicMessage } from "../translate/translate-response.js";
import { validateBody } from "../validation/request-validation.js";
import { renderAnthropicError } from "./anthropic-error.js";
import { AnthropicStreamRelay } from "./anthropic-stream-relay.js";
import { refuseThreadFor } from "./message-threads.js";
import { messagesRequestSchema } from "./messages-request-schema.js";

const FORWARDED_HEADERS = ["anthropic-version", "anthropic-beta"] as const;

/** The Anthropic headers a supplier must see, copied from the client's request. */
export function anthropicHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FORWARDED_HEADERS) {
    const value = headers[name];
    if (typeof value === "string" && value !== "") out[name] = value;
  }
  return out;
}

const NO_USAGE: TokenUsage = noTokens();

/** Usage counted locally: the request's input, and the answer's content blocks as output. */
function estimateUsage(requestBody: Record<string, unknown>, content: unknown, exchange: Exchange): TokenUsage {
  const texts: string[] = [];
  collectText(content, texts);
  const output = exchange.estimatedOutput(countTextsTokens(texts));
  return { ...noTokens(), input: estimateInputTokens(requestBody), output };
}

/** Checks what the schema cannot: the conversation starts with a user turn. */
function checkRoleOrder(messages: { role: string }[]): void {
  const first = messages.find((message) => message.role !== "system");
  if (first === undefined || first.role !== "user") {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      "The first message (after any system message) must have the role 'user'.",
      {
        param: "messages[0].role",
      },
    );
  }
}

/** The Anthropic Messages surface, `POST /v1/messages`. */
export const anthropicMessagesSurface: ClientSurface = {
  format: "anthropic",
  endpoint: "/v1/messages",

  parse(body: unknown, headers: IncomingHttpHeaders, text?: string): ClientRequest {
    const request = validateBody(messagesRequestSchema, body);
    checkRoleOrder(request.messages);
    return {
      model: request.model,
      stream: request.stream === true,
      wantsStreamUsage: true,
      body: request,
      headers: anthropicHeaders(headers),
      sent: sentBody(text, body as object, false, undefined),
    };
  },

  upstreamBody(request: ClientRequest, route: RouteConfig, supplierFormat: WireFormat): UpstreamBody {
    refuseThreadFor(request.body, route, supplierFormat);
    if (supplierFormat === "openai") {
      return { body: anthropicToOpenAIRequest(request.body, route.upstreamModel, route.supplier.maxTokensField) };
    }
    // forwarded as it is: as the client's own text but for the model (see the OpenAI
    // surface), and the parse changed in place rather than copied in case it cannot be
    const body = request.body as Record<string, unknown>;
    const text =
      request.sent === undefined
        ? undefined
        : spliceRequest(request.sent.text, request.sent.keys, request.model, route.upstreamModel, "");
    body.model = route.upstreamModel;
    return text === undefined ? { body } : { body, text };
  },

  jsonResponse(request: ClientRequest, answer: JsonAnswer, supplierFormat: WireFormat, exchange: Exchange): string {
    const body = answer.body;
    const fromOpenAI = supplierFormat === "openai";
    const reported = fromOpenAI ? fromOpenAIUsage(body.usage) : fromAnthropicUsage(body.usage);
    const message = fromOpenAI
      ? openAIToAnthropicMessage(body, exchange.model, NO_USAGE, request.body.stop_sequences)
      : body;
    // a supplier that reports no usage is still billed: Lethe counts both sides itself and says so
    exchange.usage = reported ?? estimateUsage(request.body, message.content, exchange);
    if (reported === null) exchange.tokensEstimated = true;
    if (fromOpenAI) message.usage = toAnthropicUsage(exchange.usage);
    else if (answer.text !== undefined) {
      // passed on as it came but for the model id (see splice-model.ts)
      const spliced = spliceModel(answer.text, body.model, exchange.model);
      if (spliced !== undefined) return spliced;
    }
    message.model = exchange.model;
    return JSON.stringify(message);
  },

  streamTranslator(request: ClientRequest, supplierFormat: WireFormat, exchange: Exchange): StreamTranslator {
    if (supplierFormat === "openai") return new OpenAIToAnthropicStream(request, exchange);
    return new AnthropicStreamRelay(request, exchange);
  },

  renderError: renderAnthropicError,
};
