import { UpstreamError } from "../../errors/lethe-error.js";
import { nestsTooDeep } from "../../formats/validation/json-depth.js";
import type { JsonAnswer } from "../supplier.js";
import type { UpstreamResponse } from "./supplier-http-client.js";

/** A 200 whose body Lethe cannot use: retryable on another route. */
export function badUpstreamResponse(message: string): UpstreamError {
  return new UpstreamError("LETHE_UPSTREAM_BAD_RESPONSE", message, { upstreamStatus: 200, retryable: true });
}

/**
 * A supplier's answer that parsed but that Lethe could not render for its client (an entry
 * null where an object belongs): the supplier's garbage, retryable like any bad response.
 */
export function unreadableAnswer(): UpstreamError {
  return badUpstreamResponse("The supplier's answer does not have the shape its format requires.");
}

/**
 * One stream event's data as a JSON object, or LETHE_UPSTREAM_BAD_RESPONSE; `unit` names
 * the event in the supplier's own terms ("chunk" for OpenAI, "event" for Anthropic).
 */
export function parseStreamEvent(data: string, unit: "chunk" | "event"): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw badUpstreamResponse(`The supplier sent a stream ${unit} that is not JSON.`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw badUpstreamResponse(`The supplier sent a stream ${unit} that is not an object.`);
  }
  if (nestsTooDeep(parsed)) throw badUpstreamResponse(`The supplier sent a stream ${unit} nested too deep to read.`);
  return parsed as Record<string, unknown>;
}

/** Reads a whole upstream JSON body into an object (with its text), or throws LETHE_UPSTREAM_BAD_RESPONSE. */
export async function readJsonObject(response: UpstreamResponse): Promise<Required<JsonAnswer>> {
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw badUpstreamResponse("The supplier sent a response that is not JSON.");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw badUpstreamResponse("The supplier sent a response that is not a JSON object.");
  }
  if (nestsTooDeep(parsed)) throw badUpstreamResponse("The supplier sent a response nested too deep to read.");
  return { body: parsed as Record<string, unknown>, text };
}
