import type { SentBody } from "./client-surface.js";

/** JSON's insignificant whitespace. */
function isJsonSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

/** True when the quote at `index` is escaped, i.e. preceded by an odd number of backslashes. */
function isEscaped(text: string, index: number): boolean {
  let backslashes = 0;
  for (let at = index - 1; at >= 0 && text.charCodeAt(at) === 0x5c; at--) backslashes++;
  return backslashes % 2 === 1;
}

/** The index just past the string token that starts with the quote at `start`, or -1. */
function endOfString(text: string, start: number): number {
  for (let quote = text.indexOf('"', start + 1); quote !== -1; quote = text.indexOf('"', quote + 1)) {
    if (!isEscaped(text, quote)) return quote + 1;
  }
  return -1;
}

/**
 * A supplier's completion with its top-level `model` replaced by `model`, edited in the
 * text rather than parsed and serialised again: the upstream JSON is already parsed once
 * (for usage), and a second serialisation was a tenth of a request's main-thread work.
 * `parsedModel` is the value that parse gave the top-level `model`.
 *
 * It answers undefined, and the caller serialises instead, whenever the edit could be
 * wrong: `model` not a string, any `\u` escape in the text (a key could spell "model"
 * with one), or not exactly one `"model"` key anywhere (nested or duplicate keys). With
 * no escaped spelling, the single literal key must be the top-level one the parse read;
 * its value is then checked against `parsedModel` before it is replaced.
 */
export function spliceModel(text: string, parsedModel: unknown, model: string): string | undefined {
  if (typeof parsedModel !== "string" || text.includes("\\u")) return undefined;
  let valueStart = -1;
  let valueEnd = -1;
  for (let token = text.indexOf('"model"'); token !== -1; token = text.indexOf('"model"', token + 7)) {
    // an escaped quote is inside a string; an unescaped one opens the token "model"
    // (closing a string there would leave `model"` outside any token, which is not JSON)
    if (isEscaped(text, token)) continue;
    let at = token + 7;
    while (isJsonSpace(text.charCodeAt(at))) at++;
    if (text.charCodeAt(at) !== 0x3a) continue; // a value "model", not a key
    if (valueStart !== -1) return undefined; // a second key: nested or duplicate
    at++;
    while (isJsonSpace(text.charCodeAt(at))) at++;
    if (text.charCodeAt(at) !== 0x22) return undefined;
    valueStart = at;
    valueEnd = endOfString(text, at);
    if (valueEnd === -1) return undefined;
  }
  if (valueStart === -1 || JSON.parse(text.slice(valueStart, valueEnd)) !== parsedModel) return undefined;
  return text.slice(0, valueStart) + JSON.stringify(model) + text.slice(valueEnd);
}

/**
 * How many members the object `text` holds at its top level, counted as written: a key
 * given twice counts twice. Strings are skipped whole (indexOf, not character by
 * character), so a long prompt costs little; -1 for text that ends inside a string.
 */
export function countTopLevelMembers(text: string): number {
  let depth = 0;
  let members = 0;
  for (let at = 0; at < text.length; at++) {
    const code = text.charCodeAt(at);
    if (code === 0x22) {
      const end = endOfString(text, at);
      if (end === -1) return -1;
      if (depth === 1) {
        let next = end;
        while (isJsonSpace(text.charCodeAt(next))) next++;
        // at the top level a string followed by a colon is a key; any other is a value
        if (text.charCodeAt(next) === 0x3a) members++;
      }
      at = end - 1;
    } else if (code === 0x7b || code === 0x5b) depth++;
    else if (code === 0x7d || code === 0x5d) depth--;
  }
  return members;
}

/**
 * The client's request text as a supplier of its own format gets it: `model` replaced by
 * `upstreamModel` (checked against `clientModel`, the value the parse read, as in
 * spliceModel) and `members` (complete `"key":value` pairs, comma-separated, for keys the
 * client did not send) added first in the object. Forwarding the client's own text keeps
 * every field as sent, numbers beyond a double's precision included (a parse and a
 * serialisation round them), and spares serialising a large prompt a second time.
 *
 * `keys` is how many distinct top-level keys the parse found. Undefined, and the caller
 * serialises the parse instead, whenever the text could mean something else to another
 * parser than it meant to Lethe's: spliceModel declines; a top-level key is written more
 * than once (JSON.parse keeps the last, some parsers the first: a `store` or `stream`
 * given twice must not reach the supplier); or a `__proto__` key, which validation never
 * saw.
 */
export function spliceRequest(
  text: string,
  keys: number,
  clientModel: string,
  upstreamModel: string,
  members: string,
): string | undefined {
  if (text.includes('"__proto__"') || countTopLevelMembers(text) !== keys) return undefined;
  const spliced = spliceModel(text, clientModel, upstreamModel);
  if (spliced === undefined || members === "") return spliced;
  let at = 0;
  while (isJsonSpace(spliced.charCodeAt(at))) at++;
  // the text parsed as an object holding at least `model`: a member follows the brace
  if (spliced.charCodeAt(at) !== 0x7b) return undefined;
  return `${spliced.slice(0, at + 1)}${members},${spliced.slice(at + 1)}`;
}

/**
 * What a surface keeps of a request's own text for spliceRequest, or undefined without
 * one. `parsed` is the body as JSON.parse gave it (validation returns a copy).
 */
export function sentBody(
  text: string | undefined,
  parsed: object,
  hasStreamOptions: boolean,
  store: unknown,
): SentBody | undefined {
  if (text === undefined) return undefined;
  let keys = 0;
  // JSON.parse makes plain objects: every enumerable key is its own
  for (const _key in parsed) keys++;
  return { text, keys, hasStreamOptions, store };
}

/**
 * `text` without its top-level member `key`, whose value the parse read as null (OpenAI puts
 * `"usage":null` on every chunk of a stream that asked for usage; Lethe always asks, and the
 * client that did not gets chunks without it), edited in the text as spliceModel edits.
 * Undefined, and the caller serialises instead, whenever the edit could be wrong: any `\u`
 * escape, not exactly one `"key"` key in the text, or its value not a bare `null`.
 */
export function withoutNullMember(text: string, key: string): string | undefined {
  if (text.includes("\\u")) return undefined;
  const token = `"${key}"`;
  let start = -1;
  let end = -1;
  for (let at = text.indexOf(token); at !== -1; at = text.indexOf(token, at + token.length)) {
    if (isEscaped(text, at)) continue;
    let next = at + token.length;
    while (isJsonSpace(text.charCodeAt(next))) next++;
    if (text.charCodeAt(next) !== 0x3a) continue; // a value, not a key
    if (start !== -1) return undefined; // a second key: nested or duplicate
    next++;
    while (isJsonSpace(text.charCodeAt(next))) next++;
    if (!text.startsWith("null", next)) return undefined;
    start = at;
    end = next + 4;
  }
  if (start === -1) return undefined;
  // the member goes with one comma: the one before it, or else the one after it
  let before = start - 1;
  while (isJsonSpace(text.charCodeAt(before))) before--;
  if (text.charCodeAt(before) === 0x2c) return text.slice(0, before) + text.slice(end);
  let after = end;
  while (isJsonSpace(text.charCodeAt(after))) after++;
  if (text.charCodeAt(after) === 0x2c) return text.slice(0, start) + text.slice(after + 1);
  return text.slice(0, start) + text.slice(end);
}
