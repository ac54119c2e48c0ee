import { readFile } from "node:fs/promises";

let cached: string | null = null;

/** Lethe's version from its package.json (two levels up from both src/zdr and dist/zdr). */
export async function letheVersion(): Promise<string> {
  if (cached !== null) return cached;
  try {
    const text = await readFile(new URL("../../package.json", import.meta.url), "utf8");
    const version = (JSON.parse(text) as { version?: unknown }).version;
    cached = typeof version === "string" ? version : "unknown";
  } catch {
    cached = "unknown";
  }
  return cached;
}
