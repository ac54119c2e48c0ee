import { createReadStream } from "node:fs";
import { lstat, open as openFile, readdir } from "node:fs/promises";
import path from "node:path";
import { createGunzip } from "node:zlib";
import type { MatchSession } from "../pattern-matcher.js";

const READDIR_BATCH = 64;
/** gzip's magic bytes: such a file is searched as it is and decompressed. */
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
/** Cap on what one gzip file is inflated to: a small file can inflate almost without end. */
const INFLATE_MAX_BYTES = 512 * 1024 * 1024;

/** Options of a walk over a directory tree. */
export interface WalkOptions {
  /** Directories not to enter (already scanned as a store of their own). */
  exclude?: readonly string[];
  /** Stop after looking at this many entries, so a huge temp dir cannot stall the audit. */
  maxEntries?: number;
}

/** What a walk found: the files, how many entries it looked at, and the directories it could not list. */
export interface Walk {
  files: string[];
  looked: number;
  unreadableDirs: number;
}

/** The regular files under `root`, found without following symbolic links. */
export async function walkFiles(root: string, options: WalkOptions = {}): Promise<Walk> {
  const exclude = new Set((options.exclude ?? []).map((dir) => path.resolve(dir)));
  const limit = options.maxEntries ?? Number.POSITIVE_INFINITY;
  const files: string[] = [];
  let pending = [path.resolve(root)];
  let looked = 0;
  let unreadableDirs = 0;
  while (pending.length > 0 && looked < limit) {
    // a batch of directories at a time: the temp dir can hold thousands of them
    const batch = pending.slice(0, READDIR_BATCH);
    pending = pending.slice(READDIR_BATCH);
    // an unreadable directory (another user's) is counted, and the caller decides what that means
    const listings = await Promise.all(
      batch.map((dir) =>
        readdir(dir, { withFileTypes: true }).catch(() => {
          unreadableDirs++;
          return [];
        }),
      ),
    );
    listings.forEach((entries, index) => {
      for (const entry of entries) {
        looked++;
        const full = path.join(batch[index] as string, entry.name);
        if (entry.isDirectory() && !exclude.has(full)) pending.push(full);
        else if (entry.isFile()) files.push(full);
      }
    });
  }
  return { files, looked, unreadableDirs };
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

/** How one file was read. */
export interface FileRead {
  /** Bytes searched: the file's own, and what a gzip file inflated to. */
  bytes: number;
  /** The file could not be opened or read (permissions); a file gone since the walk is not. */
  unreadable: boolean;
  /** Only part of it was searched: it passed `maxBytes`, or inflated past the cap. */
  partial: boolean;
}

async function startsWithGzipMagic(file: string): Promise<boolean> {
  const handle = await openFile(file, "r");
  try {
    const head = Buffer.alloc(GZIP_MAGIC.length);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    return bytesRead === head.length && head.equals(GZIP_MAGIC);
  } finally {
    await handle.close();
  }
}

/** Inflates a gzip file into a session, up to the cap; returns the bytes inflated and whether it hit the cap. */
async function feedInflated(file: string, session: MatchSession): Promise<{ bytes: number; capped: boolean }> {
  let bytes = 0;
  const inflating = createReadStream(file).pipe(createGunzip());
  try {
    for await (const chunk of inflating) {
      const room = INFLATE_MAX_BYTES - bytes;
      session.feed((chunk as Buffer).subarray(0, room));
      bytes += Math.min(room, (chunk as Buffer).length);
      if (bytes >= INFLATE_MAX_BYTES) return { bytes, capped: true };
    }
  } catch {
    // not gzip after all, or cut short (a file still being written): what inflated was searched
  } finally {
    inflating.destroy();
  }
  return { bytes, capped: false };
}

/**
 * Streams a file (up to `maxBytes`) through a session from `open`; a file starting with
 * gzip's magic is also inflated into a session of its own.
 */
export async function feedFile(
  file: string,
  open: () => MatchSession,
  maxBytes = Number.POSITIVE_INFINITY,
): Promise<FileRead> {
  let bytes = 0;
  let size: number;
  try {
    size = (await lstat(file)).size;
    const stream = createReadStream(file, {
      highWaterMark: 1024 * 1024,
      ...(Number.isFinite(maxBytes) && { end: maxBytes - 1 }),
    });
    const session = open();
    for await (const chunk of stream) {
      bytes += (chunk as Buffer).length;
      session.feed(chunk as Buffer);
    }
  } catch (thrown) {
    // a file gone since the walk (a SQLite journal) holds nothing any more; any other failure is a gap
    const gone = (thrown as { code?: unknown } | null)?.code === "ENOENT";
    return { bytes, unreadable: !gone, partial: false };
  }
  let partial = size > maxBytes;
  if (await startsWithGzipMagic(file).catch(() => false)) {
    const inflated = await feedInflated(file, open());
    bytes += inflated.bytes;
    partial ||= inflated.capped;
  }
  return { bytes, unreadable: false, partial };
}
