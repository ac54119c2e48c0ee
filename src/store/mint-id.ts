import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** Mints a random, prefixed id (`acct_…`, `key_…`): 20 base36 characters, about 103 bits. */
export function mintId(prefix: string): string {
  const bytes = randomBytes(20);
  let out = `${prefix}_`;
  for (const byte of bytes) out += ALPHABET[byte % 36];
  return out;
}
