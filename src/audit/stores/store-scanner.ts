import type { MatchSession } from "../pattern-matcher.js";

/** Every kind of store the audit knows; the report lists each, scanned or not. */
export const STORE_NAMES = ["data dir", "log", "temp dir", "metrics", "postgres", "redis"] as const;

export type StoreName = (typeof STORE_NAMES)[number];

/**
 * Whether a store counts towards the verdict. "in use": the deployment writes there, so
 * a PASS needs it searched in full. "not in use": it has none (no PostgreSQL configured).
 * "excluded": the operator said the audit cannot read it (`--no-log`): the verdict is a
 * qualified pass at best, naming it.
 */
export type StoreUsage = "in use" | "not in use" | "excluded";

/** How much of a store was read. */
export interface SourceCount {
  /** Files, log lines or tables read. */
  sources: number;
  bytes: number;
  /** Anything the report must say about the scan that does not weaken it. */
  note?: string;
  /** Why the scan did not read the whole store (stopped early, unreadable parts): the verdict cannot be PASS. */
  incomplete?: string;
}

/**
 * One store Lethe could write content into. A scanner feeds every source the store
 * holds (each file, each table) to a fresh match session; adding a store kind
 * (PostgreSQL tables, Redis keys) means adding one scanner.
 */
export interface StoreScanner {
  readonly store: StoreName;
  /** What the report says the store is, e.g. "lethe.db and its WAL in the data dir"; read again after a scan. */
  readonly description: string;
  /** "in use" unless said otherwise. */
  readonly usage?: StoreUsage;
  /** Why this store cannot be scanned in this run, or null when it can. */
  unavailable(): Promise<string | null>;
  /** Feeds every source to a session from `open`; may run more than once (before and after shutdown). */
  scan(open: () => MatchSession): Promise<SourceCount>;
}

/** A store this run cannot scan, with the reason and whether the deployment uses it. */
export function unscannable(
  store: StoreName,
  description: string,
  reason: string,
  usage: StoreUsage = "in use",
): StoreScanner {
  return {
    store,
    description,
    usage,
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
