/**
 * How deeply objects and arrays may nest in a JSON value Lethe accepts: from a client
 * (its body, a tool call's arguments) or from a supplier (an answer, a stream event).
 * Real requests stay far below it (a tool's JSON schema nests a few levels per
 * property); far beyond it, the recursive walks of the request path (token counting,
 * JSON.stringify, format translation) would overflow the stack and turn a bad request
 * into a 500 that counts against the route.
 */
export const MAX_JSON_DEPTH = 128;

// reused by every walk (the event loop runs one at a time); emptied before each returns,
// so no value stays reachable from here once its request is done
const pending: unknown[] = [];
const depths: number[] = [];

/**
 * True when `value` nests objects or arrays more than `MAX_JSON_DEPTH` levels deep.
 * Iterative on purpose: the values it is there to catch would overflow a recursive walk.
 * It visits objects and arrays only, so a long prompt string costs nothing.
 */
export function nestsTooDeep(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  pending.push(value);
  depths.push(1);
  let tooDeep = false;
  while (pending.length > 0) {
    const current = pending.pop() as Record<string, unknown> | unknown[];
    const depth = depths.pop() as number;
    if (depth > MAX_JSON_DEPTH) {
      tooDeep = true;
      break;
    }
    if (Array.isArray(current)) {
      for (const item of current) {
        if (typeof item === "object" && item !== null) {
          pending.push(item);
          depths.push(depth + 1);
        }
      }
    } else {
      // JSON.parse makes plain objects: every enumerable key is its own
      for (const key in current) {
        const item = current[key];
        if (typeof item === "object" && item !== null) {
          pending.push(item);
          depths.push(depth + 1);
        }
      }
    }
  }
  pending.length = 0;
  depths.length = 0;
  return tooDeep;
}
