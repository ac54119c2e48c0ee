import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";

/** Every Lethe key starts with this, so secret scanners can find leaked keys. */
export const KEY_PREFIX = "sk-lethe-";
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LENGTH = 32; // 32 base62 characters, about 190 bits of randomness
const CHECKSUM_LENGTH = 6;
/** Operator tokens (admin API) look like keys with their own prefix, so neither is mistaken for the other. */
export const OPERATOR_TOKEN_PREFIX = "lethe-op-";

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(text: string): number {
  let crc = 0xffffffff;
  for (let i = 0; i < text.length; i++) crc = (CRC_TABLE[(crc ^ text.charCodeAt(i)) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function checksum(body: string): string {
  let value = crc32(body);
  let out = "";
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

/** Mints a new API key: prefix, random body, CRC32 checksum (GitHub-token style). */
export function mintApiKey(prefix = KEY_PREFIX): string {
  let body = "";
  // rejection sampling keeps every character uniformly likely
  while (body.length < BODY_LENGTH) {
    for (const byte of randomBytes(BODY_LENGTH)) {
      if (byte < 248 && body.length < BODY_LENGTH) body += BASE62[byte % 62];
    }
  }
  return `${prefix}${body}${checksum(body)}`;
}

/** True when `key` has Lethe's shape and its checksum matches: no database lookup for garbage. */
export function isWellFormedKey(key: string, prefix = KEY_PREFIX): boolean {
  if (key.length !== prefix.length + BODY_LENGTH + CHECKSUM_LENGTH || !key.startsWith(prefix)) return false;
  const body = key.slice(prefix.length, prefix.length + BODY_LENGTH);
  if (!/^[0-9A-Za-z]+$/.test(body)) return false;
  return checksum(body) === key.slice(prefix.length + BODY_LENGTH);
}

/** What operators and customers see of a key: the prefix and its last four characters. */
export function displayKey(key: string): string {
  return `${KEY_PREFIX}…${key.slice(-4)}`;
}

/** Hashes keys with HMAC-SHA256 under a subkey of the server secret. */
export class KeyHasher {
  private readonly subkey: Buffer;

  constructor(serverSecret: string) {
    this.subkey = Buffer.from(hkdfSync("sha256", serverSecret, "lethe", "lethe/api-keys/v1", 32));
  }

  hash(key: string): string {
    return createHmac("sha256", this.subkey).update(key).digest("hex");
  }

  /** Constant-time comparison of two hex digests. */
  static equal(a: string, b: string): boolean {
    const left = Buffer.from(a, "hex");
    const right = Buffer.from(b, "hex");
    return left.length === right.length && timingSafeEqual(left, right);
  }
}
