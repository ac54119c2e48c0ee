import { UpstreamError } from "../../errors/lethe-error.js";

/**
 * Why Lethe itself aborted an upstream call, so the failure maps to the right error.
 * `slow-error-body` ends the read of a failed answer's body, whose status already decided
 * the error (`boundedText`): its own failure is never surfaced.
 */
export type AbortCause = "client-closed" | "shutdown" | "total-timeout" | "deadline" | "too-large" | "slow-error-body";

/**
 * Maps whatever undici threw into an UpstreamError by its code alone; the thrown
 * error's message and cause are dropped here and never go further.
 */
export function upstreamFailure(
  error: unknown,
  abortedBecause: AbortCause | null,
  midAnswer = false,
  sent = true,
): UpstreamError {
  if (error instanceof UpstreamError) return error;
  if (abortedBecause === "total-timeout") {
    return new UpstreamError("LETHE_UPSTREAM_TIMEOUT", "The supplier did not finish within the total time allowed.", {
      upstreamStatus: 0,
      retryable: true,
    });
  }
  if (abortedBecause === "deadline") {
    return new UpstreamError("LETHE_UPSTREAM_TIMEOUT", "The supplier did not start answering in time.", {
      upstreamStatus: 0,
      retryable: true,
    });
  }
  if (abortedBecause === "client-closed") {
    return new UpstreamError("LETHE_CLIENT_CLOSED", "The client closed the connection.", {
      upstreamStatus: 0,
      retryable: false,
      sent,
    });
  }
  if (abortedBecause === "shutdown") return shutdownCut(sent);
  if (abortedBecause === "too-large") {
    return new UpstreamError("LETHE_UPSTREAM_BAD_RESPONSE", "The supplier's answer was too large.", {
      upstreamStatus: 0,
      retryable: true,
    });
  }
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  switch (code) {
    case "UND_ERR_CONNECT_TIMEOUT":
      return new UpstreamError("LETHE_UPSTREAM_TIMEOUT", "Connecting to the supplier timed out.", {
        upstreamStatus: 0,
        retryable: true,
      });
    case "UND_ERR_HEADERS_TIMEOUT":
      return new UpstreamError("LETHE_UPSTREAM_TIMEOUT", "The supplier did not start answering in time.", {
        upstreamStatus: 0,
        retryable: true,
      });
    case "UND_ERR_BODY_TIMEOUT":
      return new UpstreamError("LETHE_UPSTREAM_TIMEOUT", "The supplier stopped sending in the middle of its answer.", {
        upstreamStatus: 0,
        retryable: true,
      });
    default:
      return new UpstreamError(
        "LETHE_UPSTREAM_UNAVAILABLE",
        midAnswer ? "The connection to the supplier broke during its answer." : "The supplier could not be reached.",
        {
          upstreamStatus: 0,
          retryable: true,
        },
      );
  }
}

/**
 * The longest `retry-after` taken from a supplier, in seconds. A wrong or hostile value (an
 * hour, a year) would keep clients away that long and the route resting (route-stats.ts);
 * past it, Lethe asks the supplier again, and tells its clients no longer a wait.
 */
export const MAX_RETRY_AFTER_SECONDS = 60;

function parseRetryAfter(value: string | string[] | undefined): number | null {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return null;
  let seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) {
    const date = Date.parse(raw);
    if (Number.isNaN(date)) return null;
    seconds = Math.max(0, (date - Date.now()) / 1000);
  }
  return Math.min(seconds, MAX_RETRY_AFTER_SECONDS);
}

/** Maps a supplier's non-2xx status to an UpstreamError; the body is handled elsewhere. */
export function upstreamStatusError(status: number, retryAfter: string | string[] | undefined): UpstreamError {
  const retryAfterSeconds = parseRetryAfter(retryAfter);
  if (status === 429) {
    return new UpstreamError("LETHE_UPSTREAM_RATE_LIMITED", "The supplier is rate limiting requests.", {
      upstreamStatus: status,
      retryable: true,
      retryAfterSeconds,
    });
  }
  if (status === 409) {
    return new UpstreamError("LETHE_UPSTREAM_ERROR", "The supplier reported a conflict.", {
      upstreamStatus: status,
      retryable: true,
    });
  }
  if (status === 408) {
    return new UpstreamError("LETHE_UPSTREAM_TIMEOUT", "The supplier timed out.", {
      upstreamStatus: status,
      retryable: true,
    });
  }
  if (status === 529 || status === 503) {
    return new UpstreamError("LETHE_UPSTREAM_OVERLOADED", "The supplier is overloaded.", {
      upstreamStatus: status,
      retryable: true,
      retryAfterSeconds,
    });
  }
  if (status >= 500) {
    return new UpstreamError("LETHE_UPSTREAM_ERROR", "The supplier failed to answer.", {
      upstreamStatus: status,
      retryable: true,
      retryAfterSeconds,
    });
  }
  if (status < 400) {
    // a redirect (or another status that is neither success nor failure): Lethe follows none,
    // since a supplier's base_url is the operator's to set, and its body speaks of the
    // operator's side (hosts, accounts), not of the caller's request
    return new UpstreamError(
      "LETHE_UPSTREAM_ERROR",
      "The supplier answered with a redirect, which Lethe does not follow.",
      {
        upstreamStatus: status,
        retryable: true,
      },
    );
  }
  if (status === 401 || status === 403 || status === 404) {
    // the operator's credentials or model mapping are wrong, not the caller's request
    return new UpstreamError("LETHE_UPSTREAM_ERROR", "The supplier refused Lethe's request.", {
      upstreamStatus: status,
      retryable: true,
    });
  }
  return new UpstreamError("LETHE_UPSTREAM_REJECTED", "The supplier rejected the request.", {
    upstreamStatus: status,
    retryable: false,
    status: status >= 400 && status < 500 ? status : 400,
  });
}

/**
 * A supplier status that says the operator's side is wrong (a redirected base URL, Lethe's
 * credentials or model name refused): the same call answers alike until the config changes,
 * so the route is not retried in the same request and the caller is told not to retry.
 */
export function refusesAgain(status: number): boolean {
  return (status >= 300 && status < 400) || status === 401 || status === 403 || status === 404;
}

/**
 * A failure that, once a stream's answer is whole (its stop reason and final usage came),
 * took only the end marker: the connection broke, or went silent (a proxy holding it open).
 * The client's stream gets the marker from Lethe and ends cleanly.
 */
export function lostOnlyTheEnd(thrown: unknown): boolean {
  return (
    thrown instanceof UpstreamError &&
    (thrown.code === "LETHE_UPSTREAM_UNAVAILABLE" || thrown.code === "LETHE_UPSTREAM_TIMEOUT")
  );
}

/**
 * A call the gateway's shutdown deadline cut (shutdown.deadline_ms): the client is told so in
 * its format, the route is not blamed, and the request is not worth retrying elsewhere here.
 */
export function shutdownCut(sent = true): UpstreamError {
  return new UpstreamError("LETHE_SHUTTING_DOWN", "This gateway shut down before the answer was complete; retry.", {
    upstreamStatus: 0,
    retryable: false,
    sent,
  });
}
