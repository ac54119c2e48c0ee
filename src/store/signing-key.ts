import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { ConfigError } from "../config/load-config.js";
import { createOnce } from "./create-once.js";

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
  let pem: string;
  try {
    pem = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    // another process may create it at the same moment: then theirs is the key
    const generated = generateKeyPairSync("ed25519").privateKey;
    pem = await createOnce(file, generated.export({ type: "pkcs8", format: "pem" }).toString());
  }
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
