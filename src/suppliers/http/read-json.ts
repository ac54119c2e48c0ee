import { UpstreamError } from "../../errors/lethe-error.js";
import type { JsonAnswer } from "../supplier.js";
import type { UpstreamResponse } from "./supplier-http-client.js";

/** A 200 whose body Lethe cannot use: retryable on another route. */
export function badUpstreamResponse(message: string): UpstreamError {
  return new UpstreamError("LETHE_UPSTREAM_BAD_RESPONSE", message, { upstreamStatus: 200, retryable: true });
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
  return { body: parsed as Record<string, unknown>, text };
}
