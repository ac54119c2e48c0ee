import type { IncomingMessage, ServerResponse } from "node:http";

/** How long a browser may reuse a preflight's answer, in seconds. */
const PREFLIGHT_MAX_AGE_S = 600;
/** A header list a browser asks for in a preflight: names and commas only, bounded. */
const HEADER_LIST = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$/;
const MAX_HEADER_LIST = 2048;

/** `*`, or an origin as browsers send it: scheme, host and port, no path. */
export function isCorsOrigin(entry: string): boolean {
  if (entry === "*") return true;
  try {
    const url = new URL(entry);
    return (url.protocol === "https:" || url.protocol === "http:") && url.origin === entry;
  } catch {
    return false;
  }
}

/**
 * Cross-origin access for browser apps (`server.cors_origins`): none unless the operator
 * lists origins, or `*`. Only CORS' own headers are added; a browser's `Origin` is compared
 * and echoed back to it, never kept. Requests carry keys in headers, never cookies, so no
 * credentialed mode is offered: `*` is a plain wildcard.
 */
export class CorsPolicy {
  private readonly any: boolean;
  private readonly origins: ReadonlySet<string>;

  constructor(origins: readonly string[]) {
    this.any = origins.includes("*");
    this.origins = new Set(origins);
  }

  /** A policy, or null when no origin is allowed (the default: nothing added anywhere). */
  static of(origins: readonly string[]): CorsPolicy | null {
    return origins.length === 0 ? null : new CorsPolicy(origins);
  }

  /** The `access-control-allow-origin` value for a request from `origin`, or null when it is not allowed. */
  allowedOrigin(origin: string | undefined): string | null {
    if (origin === undefined) return null;
    if (this.any) return "*";
    return this.origins.has(origin) ? origin : null;
  }

  /** Adds the headers an allowed origin's answer carries to a flat header list. */
  addTo(headers: (string | number)[], origin: string | undefined): void {
    const allowed = this.allowedOrigin(origin);
    if (allowed === null) return;
    headers.push("access-control-allow-origin", allowed, "access-control-expose-headers", "*");
    if (allowed !== "*") headers.push("vary", "origin");
  }

  /**
   * Answers a browser's preflight (OPTIONS with `access-control-request-method`) from an
   * allowed origin with 204; returns false, answering nothing, for any other request.
   */
  answerPreflight(request: IncomingMessage, response: ServerResponse): boolean {
    if (request.method !== "OPTIONS" || request.headers["access-control-request-method"] === undefined) return false;
    const allowed = this.allowedOrigin(request.headers.origin);
    if (allowed === null) return false;
    const headers: (string | number)[] = [
      "access-control-allow-origin",
      allowed,
      "access-control-allow-methods",
      "GET, POST",
      "access-control-max-age",
      PREFLIGHT_MAX_AGE_S,
    ];
    // the headers the page's request will send (authorization, x-api-key, the SDKs' own):
    // allowed as asked, when the list is a list of header names
    const asked = request.headers["access-control-request-headers"];
    if (asked !== undefined && asked.length <= MAX_HEADER_LIST && HEADER_LIST.test(asked.trim())) {
      headers.push("access-control-allow-headers", asked.trim());
    }
    if (allowed !== "*") headers.push("vary", "origin");
    headers.push("content-length", 0);
    response.writeHead(204, headers);
    response.end();
    return true;
  }
}
