import type { MatchSession } from "../pattern-matcher.js";

/** Every kind of store the audit knows; the report lists each, scanned or not. */
export const STORE_NAMES = ["data dir", "log", "temp dir", "metrics", "postgres", "redis"] as const;

export type StoreName = (typeof STORE_NAMES)[number];

/** How much of a store was read. */
export interface SourceCount {
  /** Files, log lines or tables read. */
  sources: number;
  bytes: number;
  /** Anything the report must say about the scan, e.g. that it stopped early. */
  note?: string;
}

/**
 * One store Lethe could write content into. A scanner feeds every source the store
 * holds (each file, each table) to a fresh match session; adding a store kind
 * (PostgreSQL tables, Redis keys) means adding one scanner.
 */
export interface StoreScanner {
  readonly store: StoreName;
  /** What the report says the store is, e.g. "lethe.db and its WAL in the data dir". */
  readonly description: string;
  /** False for a store the deployment does not use (no PostgreSQL configured): its absence proves nothing missing. */
  readonly inUse?: boolean;
  /** Why this store cannot be scanned in this run, or null when it can. */
  unavailable(): Promise<string | null>;
  /** Feeds every source to a session from `open`; may run more than once (before and after shutdown). */
  scan(open: () => MatchSession): Promise<SourceCount>;
}

/** A store this run cannot scan, with the reason; `inUse: false` when the deployment has none. */
export function unscannable(store: StoreName, description: string, reason: string, inUse = true): StoreScanner {
  return {
    store,
    description,
    inUse,
    unavailable: async () => reason,
    scan: async () => ({ sources: 0, bytes: 0 }),
  };
}

/** A store held as text in memory (captured log lines, a fetched metrics page). */
export function textStore(store: StoreName, description: string, texts: () => string[] | string | null): StoreScanner {
  return {
    store,
    description,
    unavailable: async () => (texts() === null ? "nothing was captured" : null),
    async scan(open) {
      const value = texts() ?? [];
      const all = typeof value === "string" ? [value] : value;
      let bytes = 0;
      const session = open();
      for (const text of all) {
        const buffer = Buffer.from(text, "utf8");
        bytes += buffer.length;
        session.feed(buffer);
      }
      return { sources: all.length, bytes };
    },
  };
}
