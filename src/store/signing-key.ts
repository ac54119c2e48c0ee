import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

const KEY_FILE = "zdr-signing-key.pem";

/** The server's Ed25519 key pair for signing its retention statement. */
export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

/**
 * Loads the statement-signing key from the data dir, generating it (mode 0600) on
 * first use, so every replica sharing a data dir signs with the same key.
 */
export async function loadSigningKey(dataDir: string): Promise<SigningKey> {
  const file = path.join(dataDir, KEY_FILE);
  try {
    const privateKey = createPrivateKey(await readFile(file, "utf8"));
    return { privateKey, publicKey: createPublicKey(privateKey) };
  } catch {
    // no key yet (or unreadable): generate one below
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync("ed25519");
  const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  await writeFile(file, pem, { mode: 0o600, flag: "wx" }).catch(() => {
    // another process wrote it first: use theirs
  });
  const stored = createPrivateKey(await readFile(file, "utf8"));
  return { privateKey: stored, publicKey: createPublicKey(stored) };
}
