import { createReadStream } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import type { MatchSession } from "../pattern-matcher.js";

const READDIR_BATCH = 64;

/** Options of a walk over a directory tree. */
export interface WalkOptions {
  /** Directories not to enter (already scanned as a store of their own). */
  exclude?: readonly string[];
  /** Stop after looking at this many entries, so a huge temp dir cannot stall the audit. */
  maxEntries?: number;
}

/** The regular files under `root`, found without following symbolic links. */
export async function walkFiles(root: string, options: WalkOptions = {}): Promise<{ files: string[]; looked: number }> {
  const exclude = new Set((options.exclude ?? []).map((dir) => path.resolve(dir)));
  const limit = options.maxEntries ?? Number.POSITIVE_INFINITY;
  const files: string[] = [];
  let pending = [path.resolve(root)];
  let looked = 0;
  while (pending.length > 0 && looked < limit) {
    // a batch of directories at a time: the temp dir can hold thousands of them
    const batch = pending.slice(0, READDIR_BATCH);
    pending = pending.slice(READDIR_BATCH);
    // an unreadable directory (another user's) is skipped: the audit reads what it can
    const listings = await Promise.all(batch.map((dir) => readdir(dir, { withFileTypes: true }).catch(() => [])));
    listings.forEach((entries, index) => {
      for (const entry of entries) {
        looked++;
        const full = path.join(batch[index] as string, entry.name);
        if (entry.isDirectory() && !exclude.has(full)) pending.push(full);
        else if (entry.isFile()) files.push(full);
      }
    });
  }
  return { files, looked };
}

/** When a file was last written, or null when it cannot be read. */
export async function modifiedAt(file: string): Promise<number | null> {
  try {
    const stats = await lstat(file);
    return stats.isFile() ? stats.mtimeMs : null;
  } catch {
    return null;
  }
}

/** Streams a file (up to `maxBytes`) through a match session; returns the bytes read, 0 when unreadable. */
export async function feedFile(
  file: string,
  session: MatchSession,
  maxBytes = Number.POSITIVE_INFINITY,
): Promise<number> {
  let bytes = 0;
  try {
    const stream = createReadStream(file, {
      highWaterMark: 1024 * 1024,
      ...(Number.isFinite(maxBytes) && { end: maxBytes - 1 }),
    });
    for await (const chunk of stream) {
      bytes += (chunk as Buffer).length;
      session.feed(chunk as Buffer);
    }
  } catch {
    // gone or unreadable since the walk: nothing of it could be read, so nothing to search
  }
  return bytes;
}
