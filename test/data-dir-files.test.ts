import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError } from "../src/config/load-config.js";
import { createOnce } from "../src/store/create-once.js";
import { privateFilesReadableByOthers, writableByOthers } from "../src/store/private-dir.js";
import { loadServerSecret } from "../src/store/server-secret.js";
import { loadSigningKey } from "../src/store/signing-key.js";
import { openSqliteStore } from "../src/store/sqlite/open-sqlite-store.js";

const directories: string[] = [];

async function freshDir(): Promise<string> {
  const directory = await mkdtemp(path.join(os.tmpdir(), "lethe-data-dir-files-"));
  directories.push(directory);
  return directory;
}

afterAll(async () => {
  await Promise.all(directories.map((directory) => rm(directory, { recursive: true, force: true })));
});

const DIST = path.resolve(import.meta.dirname, "../dist/store");

/** A process that loads the secret and the signing key from `dataDir`, as a starting gateway does, and prints their digests. */
function startingProcess(dataDir: string): Promise<string> {
  const script = `
    import { createHash } from "node:crypto";
    import { loadServerSecret } from ${JSON.stringify(`${DIST}/server-secret.js`)};
    import { loadSigningKey } from ${JSON.stringify(`${DIST}/signing-key.js`)};
    const [secret, key] = await Promise.all([loadServerSecret(process.argv[1], null), loadSigningKey(process.argv[1])]);
    const digest = (data) => createHash("sha256").update(data).digest("hex").slice(0, 16);
    process.stdout.write(digest(secret) + " " + digest(key.publicKey.export({ type: "spki", format: "der" })));`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script, dataDir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8");
    });
    child.on("exit", (code) => resolve(code === 0 ? out : `exit ${code}`));
  });
}

describe("files generated into the data dir (secret, signing key)", () => {
  it("gives processes that start together on a fresh data dir the same secret and key", async () => {
    for (let round = 0; round < 4; round++) {
      const dataDir = await freshDir();
      const seen = await Promise.all(Array.from({ length: 6 }, () => startingProcess(dataDir)));
      expect(new Set(seen).size, seen.join(", ")).toBe(1);
      expect(seen[0]).toMatch(/^[0-9a-f]{16} [0-9a-f]{16}$/);
    }
  });

  it("creates the data dir owner-only, leaves an existing one's mode alone and says when others can write there", async () => {
    const created = path.join(await freshDir(), "new");
    const store = await openSqliteStore(created);
    await store.close();
    expect((await stat(created)).mode & 0o777).toBe(0o700);
    expect(await writableByOthers(created)).toBeNull();
    // a shared volume (a group-writable dir owned by another user) must still work: not chmod-ed
    const shared = path.join(await freshDir(), "shared");
    await mkdir(shared);
    await chmod(shared, 0o2775);
    await loadServerSecret(shared, null);
    expect((await stat(shared)).mode & 0o7777).toBe(0o2775);
    expect(await writableByOthers(shared)).toBe(0o2775);
  });

  it("says which private files of the data dir others may read (restored from a backup with their modes)", async () => {
    const dir = await freshDir();
    const store = await openSqliteStore(dir);
    await store.close();
    await loadServerSecret(dir, null);
    expect(await privateFilesReadableByOthers(dir)).toEqual([]);
    await chmod(path.join(dir, "secret"), 0o644);
    await chmod(path.join(dir, "lethe.db"), 0o640);
    expect(await privateFilesReadableByOthers(dir)).toEqual([
      { file: "secret", mode: 0o644 },
      { file: "lethe.db", mode: 0o640 },
    ]);
  });

  it("creates a file whole or not at all: concurrent creators all read the first one's contents", async () => {
    for (let round = 0; round < 20; round++) {
      const file = path.join(await freshDir(), "nested", "file");
      const contents = Array.from({ length: 8 }, (_, index) => `${index}`.repeat(100_000));
      const read = await Promise.all(contents.map((text) => createOnce(file, text)));
      expect(new Set(read).size).toBe(1);
      expect(contents).toContain(read[0]);
      // mode 0600, and no draft left behind
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect(await readdir(path.dirname(file))).toEqual(["file"]);
    }
  });

  it("removes a draft of the secret that a crash left behind, once no starting process can still want it", async () => {
    const dataDir = await freshDir();
    const secret = await loadServerSecret(dataDir, null);
    // what a process killed between writing its draft and removing it leaves
    const stale = path.join(dataDir, "secret.4242.0123456789ab.tmp");
    const fresh = path.join(dataDir, "secret.4243.ba9876543210.tmp");
    await writeFile(stale, "an older secret\n", { mode: 0o600 });
    await writeFile(fresh, "a secret being created\n", { mode: 0o600 });
    const twoMinutesAgo = new Date(Date.now() - 120_000);
    await utimes(stale, twoMinutesAgo, twoMinutesAgo);
    await writeFile(path.join(dataDir, "secret.notes.tmp"), "the operator's own file");
    expect(await loadServerSecret(dataDir, null)).toEqual(secret);
    const left = await readdir(dataDir);
    expect(left).not.toContain("secret.4242.0123456789ab.tmp");
    // a draft a process may be about to link, and files that are not drafts, stay
    expect(left).toContain("secret.4243.ba9876543210.tmp");
    expect(left).toContain("secret.notes.tmp");
  });

  it("refuses a damaged secret file rather than hash keys under what is left of it", async () => {
    const dataDir = await freshDir();
    await writeFile(path.join(dataDir, "secret"), "\n", { mode: 0o600 });
    const failure = await loadServerSecret(dataDir, null).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as Error).message).toMatch(/secret file holds no valid secret/);
    // LETHE_SECRET does not need the file
    expect(await loadServerSecret(dataDir, "a-secret-of-sixteen+")).toBe("a-secret-of-sixteen+");
  });

  it("refuses a damaged signing key, saying how to get a new one", async () => {
    const dataDir = await freshDir();
    await writeFile(path.join(dataDir, "zdr-signing-key.pem"), "", { mode: 0o600 });
    const failure = await loadSigningKey(dataDir).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ConfigError);
    expect((failure as Error).message).toMatch(/remove it to have a new one generated/);
  });
});
