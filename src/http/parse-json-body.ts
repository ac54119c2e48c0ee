import type { FastifyRequest } from "fastify";
import { LetheError } from "../errors/lethe-error.js";

/**
 * Parses a request body as JSON, then zero-fills the buffer it came in, so the raw
 * bytes do not linger in memory after parsing (JavaScript strings cannot be wiped;
 * see docs/zdr.md).
 */
export function parseJsonBuffer(buffer: Buffer): unknown {
  if (buffer.length === 0) {
    throw new LetheError("LETHE_INVALID_JSON", "The request body is empty; send a JSON object.");
  }
  try {
    return JSON.parse(buffer.toString("utf8"));
  } catch {
    throw new LetheError("LETHE_INVALID_JSON", "The request body is not valid JSON.");
  } finally {
    buffer.fill(0);
  }
}

/** `parseJsonBuffer` as Fastify's content-type parser, for the routes Fastify serves. */
export function parseJsonBody(
  _request: FastifyRequest,
  body: Buffer | string,
  done: (error: Error | null, value?: unknown) => void,
): void {
  let value: unknown;
  try {
    value = parseJsonBuffer(typeof body === "string" ? Buffer.from(body) : body);
  } catch (error) {
    done(error as Error);
    return;
  }
  done(null, value);
}
