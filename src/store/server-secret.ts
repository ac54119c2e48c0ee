import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

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
  try {
    const existing = (await readFile(file, "utf8")).trim();
    if (existing.length >= 16) return existing;
  } catch {
    // no secret yet: generate it below
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString("base64url");
  await writeFile(file, `${secret}\n`, { mode: 0o600, flag: "wx" }).catch(async () => {
    // another process created it first: use theirs
  });
  return (await readFile(file, "utf8")).trim();
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
