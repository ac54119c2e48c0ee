import type { FastifyRequest } from "fastify";
import { LetheError } from "../errors/lethe-error.js";

/**
 * Parses a request body as JSON, then zero-fills the buffer it came in, so the raw
 * bytes do not linger in memory after parsing (JavaScript strings cannot be wiped;
 * see docs/zdr.md).
 */
export function parseJsonBody(
  _request: FastifyRequest,
  body: Buffer | string,
  done: (error: Error | null, value?: unknown) => void,
): void {
  const buffer = typeof body === "string" ? Buffer.from(body) : body;
  if (buffer.length === 0) {
    done(new LetheError("LETHE_INVALID_JSON", "The request body is empty; send a JSON object."));
    return;
  }
  let value: unknown;
  try {
    value = JSON.parse(buffer.toString("utf8"));
  } catch {
    done(new LetheError("LETHE_INVALID_JSON", "The request body is not valid JSON."));
    return;
  } finally {
    buffer.fill(0);
  }
  done(null, value);
}
