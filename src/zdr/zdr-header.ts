import { LetheError } from "../errors/lethe-error.js";

/**
 * Whether the request's `x-lethe-zdr` header asks for ZDR suppliers only. Read leniently
 * and failing closed: any case, surrounding spaces, and the header sent twice (Node
 * joins the copies with a comma) all still mean `required`; a value Lethe does not know
 * is refused rather than ignored, so a typo never sends a request to a supplier that
 * keeps data. The message does not quote the value.
 */
export function zdrRequiredByHeader(value: string | string[] | undefined): boolean {
  if (value === undefined) return false;
  if (value === "required") return true;
  for (const part of (Array.isArray(value) ? value.join(",") : value).split(",")) {
    if (part.trim().toLowerCase() !== "required") {
      throw new LetheError("LETHE_INVALID_REQUEST", "The x-lethe-zdr header accepts one value: 'required'.");
    }
  }
  return true;
}
