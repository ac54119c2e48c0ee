import { MAX_JSON_DEPTH } from "./json-depth.js";

const SPACE = 32;
const QUOTE = 34;
const BACKSLASH = 92;
const COMMA = 44;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;

/** What a JSON text's structure asks of a parser, before it is parsed: within bounds, or which bound it breaks. */
export type JsonTextShape = "ok" | "too-deep" | "too-many-values";

/**
 * Looks at a JSON text's structure without parsing it: how deeply its objects and
 * arrays nest (the same count as `nestsTooDeep` on the parsed value) and how many values
 * it holds (the root, and every item of an array or member value of an object: one per
 * comma, plus one for each object or array that is not empty; keys are not counted).
 *
 * Why before parsing: a body's cost is in its values, not its bytes. 28 MiB of `{},`
 * parse into ten million objects, and JSON.parse with the walks after it held the event
 * loop for over 20 s, nearly all of it in garbage collection. Counting first costs one
 * pass over the characters outside strings; a string (a prompt, a base64 image) is
 * skipped with indexOf, so a large legitimate body costs little more than its quotes.
 * The text may not be valid JSON: JSON.parse decides that afterwards.
 */
export function jsonTextShape(text: string, maxValues: number): JsonTextShape {
  const length = text.length;
  let depth = 0;
  let values = 1;
  // the last character outside whitespace: a closing bracket right after its opening one closes an empty container
  let last = 0;
  for (let index = 0; index < length; index++) {
    const code = text.charCodeAt(index);
    if (code <= SPACE) continue;
    if (code === QUOTE) {
      index = closingQuote(text, index);
      if (index === -1) return "ok";
    } else if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      if (++depth > MAX_JSON_DEPTH) return "too-deep";
    } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
      depth--;
      if (last !== OPEN_BRACE && last !== OPEN_BRACKET && ++values > maxValues) return "too-many-values";
    } else if (code === COMMA) {
      if (++values > maxValues) return "too-many-values";
    }
    last = code;
  }
  return "ok";
}

/** The index of the quote that closes the string opened at `opening`, or -1 when none does. */
function closingQuote(text: string, opening: number): number {
  let at = opening;
  for (;;) {
    at = text.indexOf('"', at + 1);
    if (at === -1) return -1;
    // escaped when an odd number of backslashes stand right before it
    let backslashes = 0;
    while (text.charCodeAt(at - 1 - backslashes) === BACKSLASH) backslashes++;
    if ((backslashes & 1) === 0) return at;
  }
}
