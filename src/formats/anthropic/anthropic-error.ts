import type { ErrorKind, LetheError } from "../../errors/lethe-error.js";

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

/** Anthropic's error object, shared by the JSON body and the SSE `error` event. */
export function anthropicErrorObject(error: LetheError, detail?: string): object {
  return {
    type: "error",
    error: {
      // a supplier's 413 is relayed as a rejection of kind invalid_request; Anthropic names every 413 request_too_large
      type: error.status === 413 ? "request_too_large" : ANTHROPIC_TYPES[error.kind],
      message: detail === undefined ? error.message : `${error.message} Supplier said: ${detail}`,
      code: error.code,
    },
  };
}

/** Anthropic's error envelope as a JSON body. */
export function renderAnthropicError(error: LetheError, detail?: string): string {
  return JSON.stringify(anthropicErrorObject(error, detail));
}
