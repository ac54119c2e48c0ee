import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import path from "node:path";
import { ConfigError } from "../config/load-config.js";
import { readOrCreate } from "./create-once.js";

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
  const pem = await readOrCreate(file, () =>
    generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  );
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch {
    throw new ConfigError(
      `the data dir's ${KEY_FILE} holds no valid private key: restore it, or remove it to have a new one generated (statements are then signed with the new key)`,
    );
  }
  return { privateKey, publicKey: createPublicKey(privateKey) };
}
