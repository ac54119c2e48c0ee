import { stat } from "node:fs/promises";

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
