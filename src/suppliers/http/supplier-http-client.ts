import { Pool } from "undici";
import type { AttemptTimeouts, SupplierConfig } from "../../config/load-config.js";
import type { UpstreamError } from "../../errors/lethe-error.js";
import { TOTAL_TIMEOUT, upstreamFailure, upstreamStatusError } from "./upstream-failure.js";

type ResponseBody = Awaited<ReturnType<Pool["request"]>>["body"];

/** An upstream response whose status was 2xx; `finish` must run once the body is consumed. */
export interface UpstreamResponse {
  status: number;
  body: ResponseBody;
  signal: AbortSignal;
  finish(): void;
}

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
    clientSignal: AbortSignal,
    timeouts: AttemptTimeouts = this.config.timeouts,
  ): Promise<UpstreamResponse | UpstreamRejection> {
    const controller = new AbortController();
    const abortFromClient = () => controller.abort(clientSignal.reason);
    if (clientSignal.aborted) abortFromClient();
    else clientSignal.addEventListener("abort", abortFromClient, { once: true });
    const timer = setTimeout(() => controller.abort(TOTAL_TIMEOUT), timeouts.totalMs);
    const finish = () => {
      clearTimeout(timer);
      clientSignal.removeEventListener("abort", abortFromClient);
    };
    try {
      const response = await this.pool.request({
        method: "POST",
        path: this.basePath + path,
        headers,
        body,
        signal: controller.signal,
        headersTimeout: timeouts.firstByteMs,
        bodyTimeout: timeouts.idleMs,
      });
      if (response.statusCode >= 200 && response.statusCode < 300) {
        return { status: response.statusCode, body: response.body, signal: controller.signal, finish };
      }
      const error = upstreamStatusError(response.statusCode, response.headers["retry-after"]);
      // only a rejection of the caller's own request is theirs to read; any other status talks
      // about the operator's account (a key fragment, an organisation, the upstream model name)
      const detail =
        error.code === "LETHE_UPSTREAM_REJECTED" ? await readErrorDetail(response.body) : await discard(response.body);
      finish();
      return { error, detail };
    } catch (thrown) {
      finish();
      throw upstreamFailure(thrown, controller.signal);
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

/**
 * Reads a supplier's error body (bounded) and returns its human message for the
 * caller. OpenAI puts it at `error.message`, Anthropic at `error.message` too.
 */
async function readErrorDetail(body: ResponseBody): Promise<string | undefined> {
  let size = 0;
  const parts: Buffer[] = [];
  try {
    for await (const chunk of body) {
      size += chunk.length;
      if (size > MAX_ERROR_BODY_BYTES) {
        body.destroy();
        return undefined;
      }
      parts.push(chunk);
    }
    const parsed: unknown = JSON.parse(Buffer.concat(parts).toString("utf8"));
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

/** Reads and drops an error body, so the kept-alive connection can serve the next request. */
async function discard(body: ResponseBody): Promise<undefined> {
  await body.dump({ limit: MAX_ERROR_BODY_BYTES }).catch(() => undefined);
  return undefined;
}

/** True when `post` answered with a rejection rather than a 2xx response. */
export function isRejection(value: UpstreamResponse | UpstreamRejection): value is UpstreamRejection {
  return "error" in value;
}
