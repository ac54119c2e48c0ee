import type { ErrorKind, LetheError } from "../../errors/lethe-error.js";
import type { SupplierSaid } from "../../suppliers/supplier.js";
import { withSupplierMessage } from "../surface/supplier-message.js";

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
 * OpenAI's error envelope. `detail` is what a supplier said, returned to the caller as
 * their data (its message, and the field it named when Lethe names none); it is passed in
 * here, in the content plane, and never stored on the error.
 */
export function renderOpenAIError(error: LetheError, detail?: SupplierSaid): string {
  return JSON.stringify({
    error: {
      message: withSupplierMessage(error.message, detail),
      type: OPENAI_TYPES[error.kind],
      param: error.param ?? detail?.param ?? null,
      code: error.code,
    },
  });
}
