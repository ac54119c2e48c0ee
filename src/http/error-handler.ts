import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { LetheError, toLetheError } from "../errors/lethe-error.js";
import { renderAnthropicError } from "../formats/anthropic/anthropic-error.js";
import { renderOpenAIError } from "../formats/openai/openai-error.js";
import type { ClientFormat } from "../metering/metadata-record.js";
import { RejectedBySupplier } from "../routing/attempt-routes.js";
import { finishExchange, type Gateway } from "./gateway.js";

/** Fastify's own error codes that mean "bad input", mapped to Lethe codes. */
function fromFastifyError(error: FastifyError): LetheError | null {
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new LetheError("LETHE_BODY_TOO_LARGE", "The request body is larger than this gateway accepts.");
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new LetheError("LETHE_INVALID_JSON", "The request body is empty or incomplete; send a JSON object.");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new LetheError("LETHE_INVALID_REQUEST", "Send the request body as application/json.");
    default:
      return null;
  }
}

/** The client format a request speaks: Anthropic for /v1/messages and for requests carrying `anthropic-version`. */
export function clientFormatOf(request: FastifyRequest): ClientFormat {
  if (request.exchange) return request.exchange.clientFormat;
  return request.url.startsWith("/v1/messages") || request.headers["anthropic-version"] !== undefined
    ? "anthropic"
    : "openai";
}

/** Sends `error` in the caller's format; Anthropic reports overload as 529. */
export function sendError(request: FastifyRequest, reply: FastifyReply, error: LetheError, detail?: string): void {
  if (reply.sent || reply.raw.headersSent) return;
  const format = clientFormatOf(request);
  if (error.retryAfterSeconds !== null) {
    reply.header("retry-after", String(Math.ceil(error.retryAfterSeconds)));
  }
  const status = format === "anthropic" && error.kind === "overloaded" ? 529 : error.status;
  const body = format === "anthropic" ? renderAnthropicError(error, detail) : renderOpenAIError(error, detail);
  void reply.code(status).type("application/json").send(body);
}

/** Fastify's error handler: every failure becomes a coded error in the caller's format, metered once. */
export function errorHandler(gateway: Gateway) {
  return (thrown: unknown, request: FastifyRequest, reply: FastifyReply): void => {
    let error: LetheError;
    let detail: string | undefined;
    if (thrown instanceof RejectedBySupplier) {
      error = thrown.error;
      detail = thrown.detail;
    } else if (thrown instanceof LetheError) {
      error = thrown;
    } else {
      const fastifyError = thrown as FastifyError;
      error = (typeof fastifyError?.code === "string" && fromFastifyError(fastifyError)) || toLetheError(thrown);
    }
    if (error.code === "LETHE_INTERNAL")
      gateway.log.event("request_failed", { status: error.status, code: error.code });
    const exchange = request.exchange;
    if (exchange !== null) {
      finishExchange(gateway, exchange, error.status, error.code);
      if (exchange.attempts > 0 && exchange.supplier !== null && !reply.sent) {
        reply.header("x-lethe-supplier", exchange.supplier);
        reply.header("x-lethe-attempts", String(exchange.attempts));
      }
    }
    sendError(request, reply, error, detail);
  };
}
