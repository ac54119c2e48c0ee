import { chmod, mkdir, stat } from "node:fs/promises";

/**
 * Makes the data dir (created when missing) readable and writable by its owner only.
 * `mkdir`'s mode applies only to a directory it creates: one that existed with wider
 * permissions (0777 from an image, say) would let another local user replace the server
 * secret, the signing key or the database under a running gateway.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { mode } = await stat(dir);
  if ((mode & 0o077) !== 0) await chmod(dir, mode & 0o700);
}
