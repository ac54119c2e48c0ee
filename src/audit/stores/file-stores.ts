import { existsSync } from "node:fs";
import { lstat } from "node:fs/promises";
import path from "node:path";
import { feedFile, modifiedAt, walkFiles } from "./file-sources.js";
import type { SourceCount, StoreScanner } from "./store-scanner.js";

/** Cap on what is read of another user's temp file: big unrelated files would only slow the audit. */
const TEMP_FILE_MAX_BYTES = 64 * 1024 * 1024;
const TEMP_MAX_ENTRIES = 500_000;
/** File times can be a little coarse: look at files written shortly before the audit began too. */
const CLOCK_SLACK_MS = 2_000;
const STAT_BATCH = 256;

/** The files written at or after `since`, their times read a batch at a time. */
async function recentlyModified(files: string[], since: number): Promise<string[]> {
  const recent: string[] = [];
  for (let start = 0; start < files.length; start += STAT_BATCH) {
    const batch = files.slice(start, start + STAT_BATCH);
    const times = await Promise.all(batch.map(modifiedAt));
    batch.forEach((file, index) => {
      const modified = times[index];
      if (modified !== null && modified !== undefined && modified >= since) recent.push(file);
    });
  }
  return recent;
}

/** The reason a set of files was searched only in part, or undefined when every byte was. */
function gapsOf(unreadable: number, partial: number, partialWhat: string): string | undefined {
  const gaps = [
    ...(unreadable > 0 ? [`${unreadable} file(s) or folder(s) could not be read (audit as the gateway's user)`] : []),
    ...(partial > 0 ? [`${partial} file(s) ${partialWhat}`] : []),
  ];
  return gaps.length > 0 ? gaps.join(", ") : undefined;
}

/** Every file under the data dir: the SQLite database, its -wal and -shm files, the secrets. */
export function dataDirStore(dataDir: string): StoreScanner {
  return {
    store: "data dir",
    // the path itself: a report must say which data dir it vouches for (LETHE_DATA_DIR, or ./.lethe)
    description: `every file in ${dataDir} (SQLite database, WAL, secrets)`,
    async unavailable() {
      return existsSync(dataDir) ? null : `${dataDir} does not exist (set LETHE_DATA_DIR)`;
    },
    async scan(open): Promise<SourceCount> {
      const { files, unreadableDirs } = await walkFiles(dataDir);
      let bytes = 0;
      let unreadable = unreadableDirs;
      let partial = 0;
      for (const file of files) {
        // a file name is a place content could be written too
        open().feed(Buffer.from(path.relative(dataDir, file)));
        const read = await feedFile(file, open);
        bytes += read.bytes;
        if (read.unreadable) unreadable++;
        if (read.partial) partial++;
      }
      const incomplete = gapsOf(unreadable, partial, "inflated past the audit's cap");
      return { sources: files.length, bytes, ...(incomplete !== undefined && { incomplete }) };
    },
  };
}

/** Whether `file` belongs to the user the audit runs as (the gateway's, as docs/zdr.md asks). */
async function ownFile(file: string): Promise<boolean> {
  const uid = process.getuid?.();
  if (uid === undefined) return true;
  const owner = await lstat(file).then(
    (stats) => stats.uid,
    () => null,
  );
  return owner === null || owner === uid;
}

/**
 * Files in the OS temp dir written since the audit began, outside the directories
 * scanned as other stores. Only the audit user's own files (the gateway's, when the audit
 * runs as its user) can leave a gap: they are read in full, and one that cannot be read
 * makes the scan incomplete. Other users' files and folders, and a temp dir too large to
 * walk, are counted in a note: on a shared host there always are some, and another
 * process's large or private file says nothing of what the gateway wrote.
 */
export function tempDirStore(tempDir: string, since: number, exclude: readonly string[]): StoreScanner {
  return {
    store: "temp dir",
    description: `files in ${tempDir} written since the audit began`,
    unavailable: async () => (existsSync(tempDir) ? null : "the temp dir does not exist"),
    async scan(open): Promise<SourceCount> {
      const { files, looked, unreadableDirs } = await walkFiles(tempDir, { exclude, maxEntries: TEMP_MAX_ENTRIES });
      let sources = 0;
      let bytes = 0;
      let unreadable = 0;
      let partial = 0;
      let othersSkipped = 0;
      for (const file of await recentlyModified(files, since - CLOCK_SLACK_MS)) {
        sources++;
        open().feed(Buffer.from(path.relative(tempDir, file)));
        const own = await ownFile(file);
        const read = await feedFile(file, open, own ? Number.POSITIVE_INFINITY : TEMP_FILE_MAX_BYTES);
        bytes += read.bytes;
        if (!own && (read.unreadable || read.partial)) othersSkipped++;
        else {
          if (read.unreadable) unreadable++;
          if (read.partial) partial++;
        }
      }
      const notes = [
        ...(unreadableDirs > 0 ? [`${unreadableDirs} folder(s) of other users skipped`] : []),
        ...(othersSkipped > 0 ? [`${othersSkipped} file(s) of other users unreadable or read only in part`] : []),
        ...(looked >= TEMP_MAX_ENTRIES ? [`walk stopped after ${TEMP_MAX_ENTRIES} entries`] : []),
      ];
      const gaps = gapsOf(unreadable, partial, "inflated past the audit's cap");
      return {
        sources,
        bytes,
        ...(notes.length > 0 && { note: notes.join(", ") }),
        ...(gaps !== undefined && { incomplete: gaps }),
      };
    },
  };
}

/** A log file Lethe wrote (the --log FILE of a --target audit); gzip-compressed ones are inflated. */
export function logFileStore(file: string): StoreScanner {
  return {
    store: "log",
    description: `the log file ${path.basename(file)}`,
    unavailable: async () => (existsSync(file) ? null : "the log file does not exist"),
    async scan(open): Promise<SourceCount> {
      const read = await feedFile(file, open);
      // the gateway logs as it starts: an empty file (a mistyped path, /dev/null) is not its log
      const incomplete =
        read.bytes === 0 && !read.unreadable
          ? "the log file is empty: not the gateway's log"
          : gapsOf(read.unreadable ? 1 : 0, read.partial ? 1 : 0, "inflated past the audit's cap");
      return { sources: 1, bytes: read.bytes, ...(incomplete !== undefined && { incomplete }) };
    },
  };
}
