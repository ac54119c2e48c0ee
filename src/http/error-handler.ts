import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { LetheError, toLetheError } from "../errors/lethe-error.js";
import { renderAnthropicError } from "../formats/anthropic/anthropic-error.js";
import { renderOpenAIError } from "../formats/openai/openai-error.js";
import type { ClientFormat } from "../metering/metadata-record.js";
import { RejectedBySupplier } from "../routing/attempt-routes.js";
import type { SupplierSaid } from "../suppliers/supplier.js";
import type { Gateway } from "./gateway.js";

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

/** What went wrong, as a LetheError; `detail` is what a supplier said when it rejected the request. */
export interface Failure {
  error: LetheError;
  detail: SupplierSaid | undefined;
}

/** Turns anything thrown while serving a request into a coded error; unknown errors become LETHE_INTERNAL. */
export function toFailure(thrown: unknown): Failure {
  if (thrown instanceof RejectedBySupplier) return { error: thrown.error, detail: thrown.detail };
  if (thrown instanceof LetheError) return { error: thrown, detail: undefined };
  const fastifyError = thrown as FastifyError;
  const error = (typeof fastifyError?.code === "string" && fromFastifyError(fastifyError)) || toLetheError(thrown);
  return { error, detail: undefined };
}

/** The status the caller is answered with: Anthropic's API reports overload as 529. */
export function failureStatus(format: ClientFormat, error: LetheError): number {
  return format === "anthropic" && error.kind === "overloaded" ? 529 : error.status;
}

/** The status and JSON body of an error in the caller's format. */
export function renderFailure(format: ClientFormat, { error, detail }: Failure): { status: number; body: string } {
  const status = failureStatus(format, error);
  return {
    status,
    body: format === "anthropic" ? renderAnthropicError(error, detail) : renderOpenAIError(error, detail),
  };
}

/** The client format a request speaks: Anthropic for /v1/messages and for requests carrying `anthropic-version`. */
export function clientFormatOf(request: FastifyRequest): ClientFormat {
  return request.url.startsWith("/v1/messages") || request.headers["anthropic-version"] !== undefined
    ? "anthropic"
    : "openai";
}

/** Sends `error` in the caller's format. */
export function sendError(request: FastifyRequest, reply: FastifyReply, error: LetheError): void {
  if (reply.sent || reply.raw.headersSent) return;
  if (error.retryAfterSeconds !== null) {
    reply.header("retry-after", String(Math.ceil(error.retryAfterSeconds)));
  }
  const { status, body } = renderFailure(clientFormatOf(request), { error, detail: undefined });
  void reply.code(status).type("application/json").send(body);
}

/**
 * Fastify's error handler, for the routes that are not metered (models, usage, admin,
 * health): every failure becomes a coded error in the caller's format.
 */
export function errorHandler(gateway: Gateway) {
  return (thrown: unknown, request: FastifyRequest, reply: FastifyReply): void => {
    // a client that left mid-body (an aborted upload) is not Lethe failing: no error event,
    // or anyone could fill the log with "internal" failures and set off alerts
    if (request.raw.readableAborted) {
      reply.raw.destroy();
      return;
    }
    const { error } = toFailure(thrown);
    if (error.code === "LETHE_INTERNAL")
      gateway.log.event("request_failed", { status: error.status, code: error.code });
    sendError(request, reply, error);
  };
}
