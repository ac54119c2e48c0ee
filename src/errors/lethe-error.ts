/**
 * Lethe's error hierarchy. Every error has a stable `code`, an HTTP status and a
 * message Lethe wrote. None of them ever carries a request or response body, a
 * supplier's message or a `cause`: errors belong to the metadata plane.
 */

/** The error categories of both client formats; each surface maps them to its own type names. */
export type ErrorKind =
  | "invalid_request"
  | "authentication"
  | "permission"
  | "not_found"
  | "request_too_large"
  | "rate_limit"
  | "insufficient_quota"
  | "api_error"
  | "overloaded"
  | "timeout";

/** Every error code Lethe can emit. A closed set: metadata records and metrics hold these. */
export const ERROR_CODES = {
  LETHE_INVALID_JSON: { status: 400, kind: "invalid_request" },
  LETHE_INVALID_REQUEST: { status: 400, kind: "invalid_request" },
  LETHE_BODY_TOO_LARGE: { status: 413, kind: "request_too_large" },
  LETHE_UNSUPPORTED_ENCODING: { status: 415, kind: "invalid_request" },
  /** An `Expect` header other than `100-continue`: no other expectation is defined. */
  LETHE_EXPECTATION_FAILED: { status: 417, kind: "invalid_request" },
  LETHE_HEADERS_TOO_LARGE: { status: 431, kind: "request_too_large" },
  LETHE_REQUEST_TIMEOUT: { status: 408, kind: "timeout" },
  LETHE_MISSING_API_KEY: { status: 401, kind: "authentication" },
  LETHE_INVALID_API_KEY: { status: 401, kind: "authentication" },
  LETHE_REVOKED_API_KEY: { status: 401, kind: "authentication" },
  LETHE_INVALID_OPERATOR_TOKEN: { status: 401, kind: "authentication" },
  LETHE_UNKNOWN_ACCOUNT: { status: 404, kind: "not_found" },
  LETHE_UNKNOWN_KEY: { status: 404, kind: "not_found" },
  LETHE_CONFLICT: { status: 409, kind: "invalid_request" },
  LETHE_UNKNOWN_MODEL: { status: 404, kind: "not_found" },
  LETHE_ZDR_UNAVAILABLE: { status: 403, kind: "permission" },
  LETHE_NOT_FOUND: { status: 404, kind: "not_found" },
  LETHE_METHOD_NOT_ALLOWED: { status: 405, kind: "invalid_request" },
  LETHE_INSUFFICIENT_CREDIT: { status: 402, kind: "insufficient_quota" },
  LETHE_RATE_LIMITED: { status: 429, kind: "rate_limit" },
  LETHE_AUTH_THROTTLED: { status: 429, kind: "rate_limit" },
  LETHE_UPSTREAM_UNAVAILABLE: { status: 502, kind: "api_error" },
  LETHE_UPSTREAM_ERROR: { status: 502, kind: "api_error" },
  LETHE_UPSTREAM_BAD_RESPONSE: { status: 502, kind: "api_error" },
  LETHE_UPSTREAM_TIMEOUT: { status: 504, kind: "timeout" },
  LETHE_UPSTREAM_OVERLOADED: { status: 503, kind: "overloaded" },
  LETHE_NO_HEALTHY_ROUTE: { status: 503, kind: "overloaded" },
  LETHE_UPSTREAM_RATE_LIMITED: { status: 429, kind: "rate_limit" },
  LETHE_UPSTREAM_REJECTED: { status: 400, kind: "invalid_request" },
  LETHE_CLIENT_CLOSED: { status: 499, kind: "invalid_request" },
  /** A streaming client read nothing for the route's idle_ms: Lethe closed its connection. */
  LETHE_CLIENT_STALLED: { status: 499, kind: "timeout" },
  LETHE_SHUTTING_DOWN: { status: 503, kind: "overloaded" },
  LETHE_METERING_UNAVAILABLE: { status: 503, kind: "overloaded" },
  LETHE_INTERNAL: { status: 500, kind: "api_error" },
} as const satisfies Record<string, { status: number; kind: ErrorKind }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Base class of every error Lethe raises on purpose. */
export class LetheError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly kind: ErrorKind;
  /** Dotted path of the offending request field, drawn from Lethe's schema (never client text). */
  readonly param: string | null;
  /** Seconds the caller should wait before retrying (sent as `retry-after`), when known. */
  readonly retryAfterSeconds: number | null;
  /** Anthropic's machine-readable `error.details`, when Lethe has one to give (constants Lethe wrote). */
  readonly details: Readonly<Record<string, string | readonly string[]>> | null;
  /**
   * The same request would fail the same way however long the caller waits, though its
   * status (a 429) invites a retry: the answer says `x-should-retry: false`, which both SDKs honour.
   */
  readonly hopeless: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      status?: number;
      param?: string | null;
      retryAfterSeconds?: number | null;
      details?: Readonly<Record<string, string | readonly string[]>> | null;
      hopeless?: boolean;
    } = {},
  ) {
    super(message);
    this.name = "LetheError";
    this.code = code;
    this.status = options.status ?? ERROR_CODES[code].status;
    this.kind = ERROR_CODES[code].kind;
    this.param = options.param ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds ?? null;
    this.details = options.details ?? null;
    this.hopeless = options.hopeless ?? false;
  }
}

/**
 * A failure talking to a supplier. Retry and fallback logic reads only `status`,
 * `retryable` and `code`; it never carries the supplier's body or message.
 */
export class UpstreamError extends LetheError {
  /** HTTP status the supplier answered with, or 0 when no response arrived. */
  readonly upstreamStatus: number;
  readonly retryable: boolean;
  /** False only when the request never left Lethe (the client went while it waited for a connection). */
  readonly sent: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    options: {
      upstreamStatus: number;
      retryable: boolean;
      status?: number;
      retryAfterSeconds?: number | null;
      sent?: boolean;
    },
  ) {
    super(code, message, {
      ...(options.status !== undefined && { status: options.status }),
      retryAfterSeconds: options.retryAfterSeconds ?? null,
    });
    this.name = "UpstreamError";
    this.upstreamStatus = options.upstreamStatus;
    this.retryable = options.retryable;
    this.sent = options.sent ?? true;
  }
}

/** Turns anything thrown into a LetheError without looking at its message. */
export function toLetheError(error: unknown): LetheError {
  if (error instanceof LetheError) return error;
  return new LetheError("LETHE_INTERNAL", "Lethe hit an internal error while handling this request.");
}
