import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

/** A unique marker to send through Lethe and then look for everywhere it must not be. */
export function makeCanary(label: string): string {
  return `CANARY${label.replace(/[^A-Za-z0-9]/g, "")}${randomBytes(8).toString("hex")}`;
}

/** The byte patterns a canary could leave: raw, UTF-16, hex, and base64 at all three alignments. */
function encodings(canary: string): Buffer[] {
  const raw = Buffer.from(canary, "utf8");
  const out = [
    raw,
    Buffer.from(canary, "utf16le"),
    Buffer.from(raw.toString("hex")),
    Buffer.from(raw.toString("hex").toUpperCase()),
  ];
  for (let shift = 0; shift < 3; shift++) {
    // base64 of the canary preceded by `shift` bytes: its middle is stable whatever precedes it
    const encoded = Buffer.concat([Buffer.alloc(shift), raw]).toString("base64");
    out.push(Buffer.from(encoded.slice(Math.ceil((shift * 4) / 3) + 2, encoded.length - 4)));
  }
  return out;
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const files: string[] = [];
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(full)));
    else if (entry.isFile()) files.push(full);
  }
  return files;
}

/** Where each canary was found: `place` is a file path or the name of a text source. */
export interface CanaryHit {
  canary: string;
  place: string;
}

/** Searches every file under `dataDir` and every given text (logs, output) for every canary. */
export async function findCanaries(
  canaries: string[],
  where: { dataDir?: string; texts?: Record<string, string> },
): Promise<CanaryHit[]> {
  const hits: CanaryHit[] = [];
  const sources: { place: string; bytes: Buffer }[] = [];
  if (where.dataDir) {
    for (const file of await listFiles(where.dataDir)) sources.push({ place: file, bytes: await readFile(file) });
  }
  for (const [place, text] of Object.entries(where.texts ?? {})) sources.push({ place, bytes: Buffer.from(text) });
  for (const canary of canaries) {
    const patterns = encodings(canary);
    for (const source of sources) {
      if (patterns.some((pattern) => source.bytes.includes(pattern))) hits.push({ canary, place: source.place });
    }
  }
  return hits;
}
