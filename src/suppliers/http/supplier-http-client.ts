import { Pool } from "undici";
import type { AttemptTimeouts, SupplierConfig } from "../../config/load-config.js";
import type { UpstreamError } from "../../errors/lethe-error.js";
import { nestsTooDeep } from "../../formats/validation/json-depth.js";
import type { Cancellation } from "../cancellation.js";
import type { SupplierSaid } from "../supplier.js";
import { type PoolLoad, UpstreamCall } from "./upstream-call.js";
import { upstreamStatusError } from "./upstream-failure.js";

/** An upstream answer whose status was 2xx; read it with `text()` or `stream()`. */
export type UpstreamResponse = UpstreamCall;

/** A non-2xx answer: the mapped error and what the supplier said, for the caller. */
export interface UpstreamRejection {
  error: UpstreamError;
  detail: SupplierSaid | undefined;
}

/**
 * The headers every supplier request starts with (the supplier's own config headers come
 * after them). `accept-encoding: identity`: without the header any coding is acceptable
 * (RFC 9110), and Lethe reads answers as they come, uncompressed.
 */
export const BASE_REQUEST_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "content-type": "application/json",
  accept: "application/json",
  "accept-encoding": "identity",
});

const MAX_ERROR_BODY_BYTES = 64 * 1024;
/**
 * How long a failed answer's body may take once its status came (or the route's idle_ms,
 * when shorter). Only a rejection's body reaches the caller, and a supplier that trickles
 * it (a byte a second) would otherwise hold the request, and its fallback to the next
 * route, until the total timeout.
 */
const ERROR_BODY_WITHIN_MS = 2_000;

/**
 * The HTTP side of every network supplier: one keep-alive undici pool per supplier,
 * connect / first-byte / idle timeouts from its config, a total deadline, and
 * abort when the client goes away.
 */
export class SupplierHttpClient {
  private readonly pool: Pool;
  private readonly basePath: string;
  /** Calls in progress against the pool's connections: a call past them waits for one (upstream-call.ts). */
  private readonly load: PoolLoad;

  constructor(private readonly config: SupplierConfig) {
    const url = new URL(config.baseUrl ?? "");
    this.basePath = url.pathname.replace(/\/+$/, "");
    this.load = { inFlight: 0, connections: config.maxConnections };
    this.pool = new Pool(url.origin, {
      connections: config.maxConnections,
      pipelining: 1,
      keepAliveTimeout: config.keepAliveMs,
      // a supplier's `Keep-Alive: timeout=N` hint replaces keepAliveTimeout, capped by this
      // (600 s by default): a load balancer in front may close idle connections sooner than
      // the server behind it says, so keep_alive_ms is the most a connection idles whatever the hint
      keepAliveMaxTimeout: config.keepAliveMs,
      connect: { timeout: config.timeouts.connectMs },
    });
  }

  /** True while every connection of the pool is taken by calls in progress. */
  get full(): boolean {
    return this.load.inFlight >= this.load.connections;
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
      const call = new UpstreamCall(cancellation, timeouts, this.config.maxResponseBytes, resolve, reject, this.load);
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
    const text = await response.boundedText(MAX_ERROR_BODY_BYTES, Math.min(ERROR_BODY_WITHIN_MS, timeouts.idleMs));
    return { error, detail: error.code === "LETHE_UPSTREAM_REJECTED" ? supplierSaid(text) : undefined };
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

const MAX_SAID_CHARS = 2000;

/** A string of the error object, cut short; undefined when absent or not a string. */
function saidString(value: unknown): string | undefined {
  return typeof value === "string" ? value.slice(0, MAX_SAID_CHARS) : undefined;
}

/**
 * What a supplier's error body says: OpenAI and Anthropic both put the message at
 * `error.message`; OpenAI names the field at `error.param`, Anthropic gives `error.details`.
 * Kept as found (bounded), for the caller; undefined when the body is not such an object.
 */
function supplierSaid(text: string | undefined): SupplierSaid | undefined {
  if (text === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    const error = typeof parsed === "object" && parsed !== null && "error" in parsed ? parsed.error : undefined;
    if (typeof error === "string") return { message: error.slice(0, MAX_SAID_CHARS) };
    if (typeof error !== "object" || error === null) return undefined;
    const fields = error as Record<string, unknown>;
    const said: SupplierSaid = {};
    const message = saidString(fields.message);
    if (message !== undefined) said.message = message;
    const param = saidString(fields.param);
    if (param !== undefined) said.param = param;
    const details = fields.details;
    // rendered again into the caller's error: nesting deep enough to overflow JSON.stringify is left out
    if (typeof details === "object" && details !== null && !Array.isArray(details) && !nestsTooDeep(details)) {
      said.details = details as Record<string, unknown>;
    }
    return said;
  } catch {
    return undefined;
  }
}

/** True when `post` answered with a rejection rather than a 2xx response. */
export function isRejection(value: UpstreamResponse | UpstreamRejection): value is UpstreamRejection {
  return "error" in value;
}
