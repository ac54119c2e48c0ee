import type { IncomingHttpHeaders } from "node:http";
import type { FastifyRequest } from "fastify";
import { LetheError } from "../errors/lethe-error.js";
import { MAX_JSON_DEPTH } from "../formats/validation/json-depth.js";
import { jsonTextShape } from "../formats/validation/json-text-shape.js";

/**
 * Values in a body Fastify reads (the admin API's small objects, at most 1 MiB): the
 * metered endpoints use limits.max_json_values.
 */
const ADMIN_MAX_JSON_VALUES = 10_000;

/**
 * Parses a request body as JSON, then zero-fills the buffer it came in, so the raw
 * bytes do not linger in memory after parsing (JavaScript strings cannot be wiped;
 * see docs/zdr.md).
 */
export function parseJsonBuffer(buffer: Buffer, maxValues: number): unknown {
  return parseJsonText(bodyText(buffer), maxValues);
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

/**
 * Parses a request body's text as JSON, or throws LETHE_INVALID_JSON (LETHE_INVALID_REQUEST
 * when it nests too deep, LETHE_BODY_TOO_LARGE when it holds more than `maxValues` values).
 * Both bounds are checked on the text, before JSON.parse builds anything (json-text-shape.ts).
 */
export function parseJsonText(text: string, maxValues: number): unknown {
  const shape = jsonTextShape(text, maxValues);
  if (shape === "too-deep") {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      `The request body nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep.`,
    );
  }
  if (shape === "too-many-values") {
    throw new LetheError(
      "LETHE_BODY_TOO_LARGE",
      `The request body holds more than ${maxValues} JSON values, more than this gateway accepts.`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new LetheError("LETHE_INVALID_JSON", "The request body is not valid JSON.");
  }
  return value;
}

/**
 * The refusal of a body sent compressed, which would be parsed as garbage: a content coding
 * other than identity, or a transfer coding before `chunked` (`gzip, chunked`). Null when
 * the body comes as it is. The header's value is not repeated back.
 */
export function encodingRefusal(headers: IncomingHttpHeaders): LetheError | null {
  const encoding = headers["content-encoding"];
  const transfer = headers["transfer-encoding"];
  if (
    (encoding !== undefined && encoding !== "" && encoding.toLowerCase() !== "identity") ||
    (transfer !== undefined && transfer.trim().toLowerCase() !== "chunked")
  ) {
    return new LetheError(
      "LETHE_UNSUPPORTED_ENCODING",
      "Compressed request bodies are not accepted; send the JSON uncompressed (no content-encoding).",
    );
  }
  return null;
}

/** `parseJsonBuffer` as Fastify's content-type parser, for the routes Fastify serves. */
export function parseJsonBody(
  request: FastifyRequest,
  body: Buffer | string,
  done: (error: Error | null, value?: unknown) => void,
): void {
  // a DELETE (or GET) takes no body: clients that send `content-type: application/json` on
  // every request send it with none, and that is no bad JSON
  if (body.length === 0 && (request.method === "DELETE" || request.method === "GET")) {
    done(null, undefined);
    return;
  }
  const refusal = encodingRefusal(request.headers);
  if (refusal !== null) {
    done(refusal);
    return;
  }
  let value: unknown;
  try {
    value = parseJsonBuffer(typeof body === "string" ? Buffer.from(body) : body, ADMIN_MAX_JSON_VALUES);
  } catch (error) {
    done(error as Error);
    return;
  }
  done(null, value);
}
