import type { CanaryRegistry } from "../canary-registry.js";
import { type SourceCount, STORE_NAMES, type StoreName, type StoreScanner, type StoreUsage } from "./store-scanner.js";

/**
 * How far the audit searched a store. Only "complete" (or "not in use") lets the verdict
 * be a PASS; "excluded" makes it a qualified one; the others make it INCONCLUSIVE.
 */
export type StoreCoverage = "complete" | "incomplete" | "not scanned" | "not in use" | "excluded";

/** What the audit learnt about one store. */
export interface StoreResult {
  store: StoreName;
  description: string;
  scanned: boolean;
  coverage: StoreCoverage;
  /** How much was read, or why nothing was; for an incomplete scan, why it is incomplete. */
  detail: string;
  /** Why the store was not searched in full (unreachable, excluded, stopped early), or null. */
  gap: string | null;
  /** Indexes (in the registry) of the canaries found in this store. */
  canaries: Set<number>;
}

interface Entry {
  description: string;
  usage: StoreUsage;
  reason: string | null;
  snapshots: number;
  sources: number;
  bytes: number;
  notes: Set<string>;
  gaps: Set<string>;
  patterns: Set<number>;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** What a failed scan may say about its error: its code (ECONNRESET, a SQLSTATE), never its message. */
function failureCode(thrown: unknown): string {
  const code = (thrown as { code?: unknown } | null)?.code;
  if (typeof code === "string" || typeof code === "number") return String(code);
  return thrown instanceof Error ? thrown.name : "unknown error";
}

/**
 * Scans stores for every canary in the registry. A store may be scanned more than
 * once (the data dir while the gateway runs, with its WAL, and after shutdown): what
 * any snapshot holds counts, and a gap in any snapshot leaves the store incomplete.
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
        usage: scanner.usage ?? "in use",
        reason: null,
        snapshots: 0,
        sources: 0,
        bytes: 0,
        notes: new Set(),
        gaps: new Set(),
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
    let count: SourceCount;
    try {
      count = await scanner.scan(() => matcher.session(found));
    } catch (thrown) {
      // what was fed before the failure still counts; the rest of the store was not read
      count = { sources: 0, bytes: 0, incomplete: `the scan failed part-way (${failureCode(thrown)})` };
    }
    // a scanner may only learn what it scans while scanning (PostgreSQL's current schema)
    entry.description = scanner.description;
    entry.reason = null;
    entry.snapshots++;
    entry.sources = Math.max(entry.sources, count.sources);
    entry.bytes += count.bytes;
    if (count.note !== undefined) entry.notes.add(count.note);
    if (count.incomplete !== undefined) entry.gaps.add(count.incomplete);
  }

  /** Every known store kind, in the report's order, scanned or not. */
  results(): StoreResult[] {
    return STORE_NAMES.map((store): StoreResult => {
      const entry = this.entries.get(store);
      if (entry === undefined || entry.snapshots === 0) {
        const usage = entry?.usage ?? "not in use";
        return {
          store,
          description: entry?.description ?? store,
          scanned: false,
          coverage: usage === "in use" ? "not scanned" : usage,
          detail: entry?.reason ?? "not looked at in this mode",
          gap: usage === "not in use" ? null : (entry?.reason ?? null),
          canaries: new Set<number>(),
        };
      }
      const snapshots = entry.snapshots > 1 ? `, ${entry.snapshots} snapshots` : "";
      const notes = [...entry.notes].map((note) => `, ${note}`).join("");
      const gaps = [...entry.gaps].map((gap) => `; INCOMPLETE: ${gap}`).join("");
      return {
        store,
        description: entry.description,
        scanned: true,
        coverage: entry.gaps.size > 0 ? "incomplete" : "complete",
        detail: `${entry.sources} source(s), ${formatBytes(entry.bytes)} read${snapshots}${notes}${gaps}`,
        gap: entry.gaps.size > 0 ? [...entry.gaps].join("; ") : null,
        canaries: this.registry.canariesOf(entry.patterns),
      };
    });
  }
}
