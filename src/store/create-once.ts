import { randomBytes } from "node:crypto";
import { link, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * Creates `file` in the data dir with `contents` (mode 0600) unless it exists, and
 * returns what the file holds then: ours, or what another process created first.
 *
 * The file appears whole or not at all. `writeFile` with the `wx` flag would create it
 * empty and fill it after: a second process starting at that moment (a cluster's
 * workers, replicas sharing a data dir) read it empty and failed to start, and a crash
 * in between left an empty file that every later start refused. Here the contents go
 * to a file of this call's own first, and `link` gives it the real name only if that
 * name is free: atomic, and never replacing what another process put there.
 */
export async function createOnce(file: string, contents: string): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const draft = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(draft, contents, { mode: 0o600, flag: "wx" });
  try {
    await link(draft, file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // a file system without hard links (SMB, vfat): create it in place, as before, racy but working
    if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP" || code === "ENOSYS") {
      await writeFile(file, contents, { mode: 0o600, flag: "wx" }).catch((failure: NodeJS.ErrnoException) => {
        if (failure.code !== "EEXIST") throw failure;
      });
    } else if (code !== "EEXIST") throw error;
  } finally {
    await rm(draft, { force: true });
  }
  return readFile(file, "utf8");
}

/** A draft this old was left by a process that died between writing it and removing it. */
const STALE_DRAFT_MS = 60_000;

/**
 * Removes drafts of `file` that a crash left behind (`createOnce` removes its own): a copy
 * of a secret outliving the file it was for (an operator who deletes `secret` to start
 * over would still have the old one in the data dir). A draft is removed only once it is
 * old enough that no process still starting can be about to link it.
 */
async function removeStaleDrafts(file: string): Promise<void> {
  const directory = path.dirname(file);
  const prefix = `${path.basename(file)}.`;
  let names: string[];
  try {
    names = await readdir(directory);
  } catch {
    return;
  }
  const staleBefore = Date.now() - STALE_DRAFT_MS;
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^\d+\.[0-9a-f]{12}\.tmp$/.test(name.slice(prefix.length))) continue;
    const draft = path.join(directory, name);
    const modified = await stat(draft).then(
      (found) => found.mtimeMs,
      () => null,
    );
    if (modified !== null && modified < staleBefore) await rm(draft, { force: true });
  }
}

/**
 * What `file` holds, creating it with `make()`'s contents when absent (another process
 * may create it at the same moment: then theirs is what it holds). Any other read
 * failure is the caller's to see. Drafts a crash left of it are removed.
 */
export async function readOrCreate(file: string, make: () => string): Promise<string> {
  await removeStaleDrafts(file);
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    return createOnce(file, make());
  }
}
