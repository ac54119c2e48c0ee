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
 * The client's request text as a supplier of its own format gets it: `model` replaced by
 * `upstreamModel` (checked against `clientModel`, the value the parse read, as in
 * spliceModel) and `members` (complete `"key":value` pairs, comma-separated, for keys the
 * client did not send) added first in the object. Forwarding the client's own text keeps
 * every field exactly as sent, numbers beyond a double's precision included (a parse and
 * a serialisation round them), and spares serialising a large prompt a second time.
 * Undefined whenever spliceModel declines: the caller serialises the parse instead.
 */
export function spliceRequest(
  text: string,
  clientModel: string,
  upstreamModel: string,
  members: string,
): string | undefined {
  const spliced = spliceModel(text, clientModel, upstreamModel);
  if (spliced === undefined || members === "") return spliced;
  let at = 0;
  while (isJsonSpace(spliced.charCodeAt(at))) at++;
  // the text parsed as an object holding at least `model`: a member follows the brace
  if (spliced.charCodeAt(at) !== 0x7b) return undefined;
  return `${spliced.slice(0, at + 1)}${members},${spliced.slice(at + 1)}`;
}
