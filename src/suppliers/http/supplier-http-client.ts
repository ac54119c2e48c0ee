import { Pool } from "undici";
import type { AttemptTimeouts, SupplierConfig } from "../../config/load-config.js";
import type { UpstreamError } from "../../errors/lethe-error.js";
import type { Cancellation } from "../cancellation.js";
import { UpstreamCall } from "./upstream-call.js";
import { upstreamStatusError } from "./upstream-failure.js";

/** An upstream answer whose status was 2xx; read it with `text()` or `stream()`. */
export type UpstreamResponse = UpstreamCall;

/** A non-2xx answer: the mapped error and the supplier's message for the caller. */
export interface UpstreamRejection {
  error: UpstreamError;
  detail: string | undefined;
}

const MAX_ERROR_BODY_BYTES = 64 * 1024;

/**
 * The HTTP side of every network supplier: one keep-alive undici pool per supplier,
 * connect / first-byte / idle timeouts from its config, a total deadline, and
 * abort when the client goes away.
 */
export class SupplierHttpClient {
  private readonly pool: Pool;
  private readonly basePath: string;

  constructor(private readonly config: SupplierConfig) {
    const url = new URL(config.baseUrl ?? "");
    this.basePath = url.pathname.replace(/\/+$/, "");
    this.pool = new Pool(url.origin, {
      connections: config.maxConnections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: { timeout: config.timeouts.connectMs },
    });
  }

  /** POSTs a JSON body; resolves with a 2xx response or a rejection, throws UpstreamError otherwise. */
  async post(
    path: string,
    body: string,
    headers: Record<string, string>,
    cancellation: Cancellation,
    timeouts: AttemptTimeouts = this.config.timeouts,
  ): Promise<UpstreamResponse | UpstreamRejection> {
    const response = await new Promise<UpstreamCall>((resolve, reject) => {
      const call = new UpstreamCall(cancellation, timeouts, this.config.maxResponseBytes, resolve, reject);
      // a client that left already has its answer (LETHE_CLIENT_CLOSED): nothing to send
      if (call.aborted) return;
      this.pool.dispatch(
        {
          method: "POST",
          path: this.basePath + path,
          headers,
          body,
          headersTimeout: timeouts.firstByteMs,
          bodyTimeout: timeouts.idleMs,
        },
        call,
      );
    });
    if (response.status < 300) return response;
    const error = upstreamStatusError(response.status, response.header("retry-after"));
    // only a rejection of the caller's own request is theirs to read; any other status talks
    // about the operator's account (a key fragment, an organisation, the upstream model name)
    const text = await response.boundedText(MAX_ERROR_BODY_BYTES);
    return { error, detail: error.code === "LETHE_UPSTREAM_REJECTED" ? errorMessage(text) : undefined };
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

/** The human message of a supplier's error body: OpenAI and Anthropic both put it at `error.message`. */
function errorMessage(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    const error = typeof parsed === "object" && parsed !== null && "error" in parsed ? parsed.error : undefined;
    if (typeof error === "string") return error.slice(0, 2000);
    if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
      return error.message.slice(0, 2000);
    }
    return undefined;
  } catch {
    return undefined;
  }
}

/** True when `post` answered with a rejection rather than a 2xx response. */
export function isRejection(value: UpstreamResponse | UpstreamRejection): value is UpstreamRejection {
  return "error" in value;
}
