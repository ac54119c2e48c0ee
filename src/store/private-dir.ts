import { stat } from "node:fs/promises";
import path from "node:path";

/**
 * The data dir's mode when other users may write into it (group or other write bit), else
 * null. Anyone who can write there can replace the server secret, the signing key or the
 * database under a running gateway. Lethe creates the directory owner-only, but one that
 * existed is left as it is (a shared volume may need its group bits): serve warns instead.
 */
export async function writableByOthers(dir: string): Promise<number | null> {
  const { mode } = await stat(dir).catch(() => ({ mode: 0 }));
  return (mode & 0o022) !== 0 ? mode & 0o7777 : null;
}

/** The data dir's files that must stay the owner's to read: the keys' HMAC secret, the statement's signing key, the database. */
const PRIVATE_FILES = ["secret", "zdr-signing-key.pem", "lethe.db"];

/**
 * The data dir's private files other users may read (group or other read bit), with their
 * modes. Lethe creates them owner-only, but files that existed (restored from a backup,
 * copied in) keep theirs: whoever reads the secret can recognise every key's hash, and the
 * database holds every account's metadata. Serve warns, as for the directory.
 */
export async function privateFilesReadableByOthers(dir: string): Promise<{ file: string; mode: number }[]> {
  const readable: { file: string; mode: number }[] = [];
  for (const file of PRIVATE_FILES) {
    const { mode } = await stat(path.join(dir, file)).catch(() => ({ mode: 0 }));
    if ((mode & 0o044) !== 0) readable.push({ file, mode: mode & 0o7777 });
  }
  return readable;
}
