import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { ConfigError } from "../config/load-config.js";
import { readOrCreate } from "./create-once.js";

const SECRET_FILE = "secret";

/**
 * The server secret: LETHE_SECRET when set, otherwise a random one generated once
 * into the data dir with mode 0600. API keys are stored as HMACs under it.
 */
export async function loadServerSecret(dataDir: string, fromEnv: string | null): Promise<string> {
  if (fromEnv !== null) {
    if (fromEnv.length < 16) throw new Error("LETHE_SECRET must be at least 16 characters");
    return fromEnv;
  }
  const file = path.join(dataDir, SECRET_FILE);
  const secret = (await readOrCreate(file, () => `${randomBytes(32).toString("base64url")}\n`)).trim();
  // keys hashed under a short or empty secret would be guessable from their HMACs
  if (secret.length < 16) {
    throw new ConfigError(
      `the data dir's ${SECRET_FILE} file holds no valid secret: restore it (every key and operator token is stored under it), or set LETHE_SECRET`,
    );
  }
  return secret;
}

/**
 * Whether LETHE_SECRET is set and differs from a secret generated into the data dir
 * earlier: every key and operator token issued under that one is then refused (they are
 * stored as HMACs under the secret). Only says so; neither secret is ever shown.
 */
export async function secretDiffersFromGenerated(dataDir: string, fromEnv: string | null): Promise<boolean> {
  if (fromEnv === null) return false;
  try {
    const generated = (await readFile(path.join(dataDir, SECRET_FILE), "utf8")).trim();
    return generated.length >= 16 && generated !== fromEnv;
  } catch {
    return false;
  }
}
