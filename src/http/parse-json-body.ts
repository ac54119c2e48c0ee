import type { FastifyRequest } from "fastify";
import { LetheError } from "../errors/lethe-error.js";
import { MAX_JSON_DEPTH, nestsTooDeep } from "../formats/validation/json-depth.js";

/**
 * Parses a request body as JSON, then zero-fills the buffer it came in, so the raw
 * bytes do not linger in memory after parsing (JavaScript strings cannot be wiped;
 * see docs/zdr.md).
 */
export function parseJsonBuffer(buffer: Buffer): unknown {
  return parseJsonText(bodyText(buffer));
}

/** A request body's text, after which the buffer it came in is zero-filled. */
export function bodyText(buffer: Buffer): string {
  if (buffer.length === 0) {
    throw new LetheError("LETHE_INVALID_JSON", "The request body is empty; send a JSON object.");
  }
  try {
    return buffer.toString("utf8");
  } finally {
    buffer.fill(0);
  }
}

/** Parses a request body's text as JSON, or throws LETHE_INVALID_JSON (LETHE_INVALID_REQUEST when it nests too deep). */
export function parseJsonText(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new LetheError("LETHE_INVALID_JSON", "The request body is not valid JSON.");
  }
  if (nestsTooDeep(value)) {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      `The request body nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep.`,
    );
  }
  return value;
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
