import type { ErrorKind, LetheError } from "../../errors/lethe-error.js";

const OPENAI_TYPES: Record<ErrorKind, string> = {
  invalid_request: "invalid_request_error",
  authentication: "authentication_error",
  permission: "permission_error",
  not_found: "not_found_error",
  request_too_large: "invalid_request_error",
  rate_limit: "rate_limit_error",
  insufficient_quota: "insufficient_quota",
  api_error: "server_error",
  overloaded: "server_error",
  timeout: "timeout_error",
};

/**
 * OpenAI's error envelope. `detail` is a supplier's own message, returned to the caller
 * as their data; it is passed in here, in the content plane, and never stored on the error.
 */
export function renderOpenAIError(error: LetheError, detail?: string): string {
  return JSON.stringify({
    error: {
      message: detail === undefined ? error.message : `${error.message} Supplier said: ${detail}`,
      type: OPENAI_TYPES[error.kind],
      param: error.param,
      code: error.code,
    },
  });
}
