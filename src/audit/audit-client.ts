import { Agent, request } from "undici";

/** What a request the audit sent came back with. `status` is 0 when no response arrived. */
export interface AuditResponse {
  status: number;
  text: string;
  headers: Record<string, string | string[] | undefined>;
  /** The audit itself hung up (a client abort it meant to make). */
  aborted: boolean;
  /** No complete answer within the audit's own deadline. */
  timedOut: boolean;
}

/** One request the audit sends to Lethe. */
export interface AuditRequest {
  method?: "GET" | "POST";
  /** Path and query, e.g. `/v1/chat/completions`. */
  path: string;
  /** An object is sent as JSON; a string or buffer as it is (malformed on purpose). */
  body?: unknown;
  headers?: Record<string, string>;
  /** Hangs up as soon as the response text so far passes this test: a client abort mid-stream. */
  abortWhen?: (textSoFar: string) => boolean;
}

const REQUEST_TIMEOUT_MS = 15_000;

/** The audit's HTTP client: raw requests, so it can send what no SDK would. */
export class AuditClient {
  private readonly agent = new Agent({ keepAliveTimeout: 1_000, connect: { timeout: 5_000 } });

  constructor(private readonly baseUrl: string) {}

  /** Sends one request and reads its whole answer (or up to the abort). */
  async send(options: AuditRequest): Promise<AuditResponse> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, REQUEST_TIMEOUT_MS);
    const headers: Record<string, string> = { ...options.headers };
    let body: string | Buffer | undefined;
    if (typeof options.body === "string" || Buffer.isBuffer(options.body)) body = options.body;
    else if (options.body !== undefined) body = JSON.stringify(options.body);
    if (body !== undefined) headers["content-type"] ??= "application/json";
    let status = 0;
    let responseHeaders: AuditResponse["headers"] = {};
    let text = "";
    let aborted = false;
    try {
      const response = await request(`${this.baseUrl}${options.path}`, {
        dispatcher: this.agent,
        method: options.method ?? (body === undefined ? "GET" : "POST"),
        headers,
        body,
        signal: controller.signal,
      });
      status = response.statusCode;
      responseHeaders = response.headers;
      const decoder = new TextDecoder();
      for await (const chunk of response.body) {
        text += decoder.decode(chunk as Buffer, { stream: true });
        if (options.abortWhen?.(text)) {
          aborted = true;
          controller.abort();
          break;
        }
      }
    } catch {
      // a reset, a refused connection or a timeout: the status and text say what arrived
    } finally {
      clearTimeout(timer);
    }
    return { status, text, headers: responseHeaders, aborted, timedOut };
  }

  async close(): Promise<void> {
    await this.agent.destroy();
  }
}
