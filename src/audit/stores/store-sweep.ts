import type { CanaryRegistry } from "../canary-registry.js";
import { STORE_NAMES, type StoreName, type StoreScanner } from "./store-scanner.js";

/** What the audit learnt about one store. */
export interface StoreResult {
  store: StoreName;
  description: string;
  scanned: boolean;
  /** False for a store the deployment does not use (nothing to scan, nothing missed). */
  inUse: boolean;
  /** How much was read, or why nothing was. */
  detail: string;
  /** Indexes (in the registry) of the canaries found in this store. */
  canaries: Set<number>;
}

interface Entry {
  description: string;
  inUse: boolean;
  reason: string | null;
  snapshots: number;
  sources: number;
  bytes: number;
  notes: Set<string>;
  patterns: Set<number>;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Scans stores for every canary in the registry. A store may be scanned more than
 * once (the data dir while the gateway runs, with its WAL, and after shutdown): what
 * any snapshot holds counts.
 */
export class StoreSweep {
  private readonly entries = new Map<StoreName, Entry>();

  constructor(private readonly registry: CanaryRegistry) {}

  /** Scans one store now, or notes why it cannot be scanned. */
  async scan(scanner: StoreScanner): Promise<void> {
    let entry = this.entries.get(scanner.store);
    if (entry === undefined) {
      entry = {
        description: scanner.description,
        inUse: scanner.inUse ?? true,
        reason: null,
        snapshots: 0,
        sources: 0,
        bytes: 0,
        notes: new Set(),
        patterns: new Set(),
      };
      this.entries.set(scanner.store, entry);
    }
    const reason = await scanner.unavailable();
    if (reason !== null) {
      if (entry.snapshots === 0) entry.reason = reason;
      return;
    }
    const matcher = this.registry.matcher();
    const found = entry.patterns;
    const count = await scanner.scan(() => matcher.session(found));
    entry.reason = null;
    entry.snapshots++;
    entry.sources = Math.max(entry.sources, count.sources);
    entry.bytes += count.bytes;
    if (count.note !== undefined) entry.notes.add(count.note);
  }

  /** Every known store kind, in the report's order, scanned or not. */
  results(): StoreResult[] {
    return STORE_NAMES.map((store) => {
      const entry = this.entries.get(store);
      if (entry === undefined || entry.snapshots === 0) {
        return {
          store,
          description: entry?.description ?? store,
          scanned: false,
          inUse: entry?.inUse ?? false,
          detail: entry?.reason ?? "not looked at in this mode",
          canaries: new Set<number>(),
        };
      }
      const snapshots = entry.snapshots > 1 ? `, ${entry.snapshots} snapshots` : "";
      const notes = [...entry.notes].map((note) => `, ${note}`).join("");
      return {
        store,
        description: entry.description,
        scanned: true,
        inUse: true,
        detail: `${entry.sources} source(s), ${formatBytes(entry.bytes)} read${snapshots}${notes}`,
        canaries: this.registry.canariesOf(entry.patterns),
      };
    });
  }
}
