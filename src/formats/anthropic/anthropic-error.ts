import type { ErrorKind, LetheError } from "../../errors/lethe-error.js";
import type { SupplierSaid } from "../../suppliers/supplier.js";
import { withSupplierMessage } from "../surface/supplier-message.js";

const ANTHROPIC_TYPES: Record<ErrorKind, string> = {
  invalid_request: "invalid_request_error",
  authentication: "authentication_error",
  permission: "permission_error",
  not_found: "not_found_error",
  request_too_large: "request_too_large",
  rate_limit: "rate_limit_error",
  insufficient_quota: "billing_error",
  api_error: "api_error",
  overloaded: "overloaded_error",
  timeout: "timeout_error",
};

/**
 * Anthropic's error object, shared by the JSON body and the SSE `error` event. `details`
 * (which the SDK reads `error_code` from) is Lethe's own when it wrote one, else the
 * supplier's, relayed as the caller's data.
 */
export function anthropicErrorObject(error: LetheError, detail?: SupplierSaid): object {
  const details = error.details ?? detail?.details;
  return {
    type: "error",
    error: {
      // a supplier's 413 is relayed as a rejection of kind invalid_request; Anthropic names every 413 request_too_large
      type: error.status === 413 ? "request_too_large" : ANTHROPIC_TYPES[error.kind],
      message: withSupplierMessage(error.message, detail),
      code: error.code,
      ...(details !== undefined && details !== null && { details }),
    },
  };
}

/** Anthropic's error envelope as a JSON body. */
export function renderAnthropicError(error: LetheError, detail?: SupplierSaid): string {
  return JSON.stringify(anthropicErrorObject(error, detail));
}
