import type { z } from "zod";
import { LetheError } from "../../errors/lethe-error.js";

/** `messages[0].role` from zod's path: schema keys and indices only, never client text. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else out += out === "" ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

/**
 * Whether the body holds a value at a zod issue's path. zod leaves the value out of its
 * issues (unless asked to report it, which would carry client text), so it is looked up.
 */
function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let value = body;
  for (const segment of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

/**
 * A size bound from the schema, as a sentence: `must be at least 1`, `must have at most 4
 * items`. The numbers are the schema's own, never the client's value.
 */
function bound(origin: string, limit: number | bigint, inclusive: boolean | undefined, side: "least" | "most"): string {
  const value = Number(limit);
  if (origin === "array" || origin === "set") return `must have at ${side} ${value} item${value === 1 ? "" : "s"}`;
  if (origin === "string") return `must be at ${side} ${value} character${value === 1 ? "" : "s"} long`;
  if (inclusive === false) return `must be ${side === "least" ? "greater" : "less"} than ${value}`;
  return `must be at ${side} ${value}`;
}

/** A message Lethe wrote for a zod issue; it names the field and the expected type, never the value. */
function describe(issue: z.core.$ZodIssue, param: string, body: unknown): string {
  const where = param === "" ? "The request body" : `'${param}'`;
  switch (issue.code) {
    case "invalid_type": {
      const value = param === "" ? body : valueAt(body, issue.path);
      if (param !== "" && value === undefined) return `${where} is required.`;
      // JSON's 1e999 parses to Infinity: a number, but none a field can take
      if (
        (issue.expected === "number" || issue.expected === "int") &&
        typeof value === "number" &&
        !Number.isFinite(value)
      )
        return `${where} must be a finite number.`;
      return `${where} must be of type ${issue.expected}.`;
    }
    case "too_small":
      return `${where} ${bound(issue.origin, issue.minimum, issue.inclusive, "least")}.`;
    case "too_big":
      return `${where} ${bound(issue.origin, issue.maximum, issue.inclusive, "most")}.`;
    case "invalid_value":
      return `${where} must be one of: ${issue.values.map((value) => JSON.stringify(value)).join(", ")}.`;
    case "invalid_format":
      // the pattern's message is Lethe's own schema text, never the value
      return `${where} has the wrong format: ${issue.message}.`;
    case "invalid_union":
      return `${where} does not have any of the accepted shapes.`;
    default:
      return `${where} is invalid.`;
  }
}

/** Validates a parsed body against a schema; throws LETHE_INVALID_REQUEST naming the first bad field. */
export function validateBody<Schema extends z.ZodType>(schema: Schema, body: unknown): z.infer<Schema> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new LetheError("LETHE_INVALID_REQUEST", "The request body must be a JSON object.");
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0] as z.core.$ZodIssue;
  const param = formatPath(issue.path);
  const message = issue.code === "unrecognized_keys" ? unknownFields(schema, param) : describe(issue, param, body);
  throw new LetheError("LETHE_INVALID_REQUEST", message, { param: param === "" ? null : param });
}

/**
 * A field the (strict) schema does not know: the field's name is the client's text, so the
 * message lists the accepted ones instead, from the schema, when the object is the body itself.
 */
function unknownFields(schema: z.ZodType, param: string): string {
  const where = param === "" ? "The request body" : `'${param}'`;
  const shape = param === "" ? (schema as { shape?: Record<string, unknown> }).shape : undefined;
  if (shape === undefined) return `${where} has a field that is not accepted here.`;
  return `${where} has a field that is not accepted here; the accepted fields are: ${Object.keys(shape).join(", ")}.`;
}
