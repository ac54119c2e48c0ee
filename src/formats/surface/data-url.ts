/**
 * A base64 `data:` URL's media type (lowercased, its parameters such as `name=` left out)
 * and its payload; null for any other string. Only the prefix is matched: a payload may
 * be megabytes.
 */
export function base64DataUrl(value: string): { mediaType: string; payload: string } | null {
  const prefix = /^data:([^;,]{1,100})((?:;[^;,]{0,200}){0,8});base64,/i.exec(value.slice(0, 2048));
  if (prefix === null) return null;
  return { mediaType: (prefix[1] as string).toLowerCase(), payload: value.slice(prefix[0].length) };
}
