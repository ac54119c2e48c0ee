/**
 * What the CLI reads from a server it was pointed at (`zdr verify`, `routes`, `audit
 * --target`) and prints: read no further than a bound, and shown with no terminal control
 * in it. A hostile server could otherwise clear the screen, forge a `VALID:` line or hide a
 * warning with escape sequences, or send gigabytes into the CLI's memory.
 */

/** C0 and C1 controls, DEL, the line and paragraph separators, and bidirectional overrides. */
const UNPRINTABLE = /[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/** `text` as it can be printed: each unprintable character as `\uXXXX`, and at most `maxChars` characters. */
export function printable(text: unknown, maxChars = 200): string {
  const value = String(text);
  const shown = value.length > maxChars ? `${value.slice(0, maxChars)}…` : value;
  return shown.replace(UNPRINTABLE, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A response's body as text, or null when it is longer than `maxBytes` (the rest is not read). */
export async function boundedText(response: Response, maxBytes: number): Promise<string | null> {
  const declared = Number(response.headers.get("content-length"));
  if (declared > maxBytes || response.body === null) {
    await response.body?.cancel();
    return declared > maxBytes ? null : "";
  }
  const reader = response.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel();
      return null;
    }
    parts.push(value);
  }
  return Buffer.concat(parts).toString("utf8");
}
