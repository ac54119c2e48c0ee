import type { EventLog } from "../logging/event-log.js";
import type { Store } from "../store/store.js";
import { utcDay } from "../usage/usage-report.js";

const DAY_MS = 86_400_000;

/** How long raw metadata and account-linked aggregates are kept. */
export interface RetentionWindows {
  metadataDays: number;
  aggregateDays: number;
}

/** What one retention run did. */
export interface RetentionResult {
  rolledUp: number;
  aggregates: number;
  /** Per-request ledger debits folded into one debit per account and day. */
  debitsCollapsed: number;
  /** Records and aggregates unlinked: from erased accounts, and past the aggregate window. */
  unlinked: number;
}

/**
 * One retention pass at `now`: raw records older than the metadata window (whole UTC
 * days) become daily aggregates per account, model and supplier and are deleted, and the
 * ledger's per-request debits of those days become one debit per account and day; the
 * account pseudonym is dropped from aggregates older than the aggregate window, and
 * from whatever was written for an erased account after its erasure.
 */
export async function runRetention(store: Store, windows: RetentionWindows, now: number): Promise<RetentionResult> {
  const todayStart = Date.parse(`${utcDay(now)}T00:00:00Z`);
  const cutoff = todayStart - windows.metadataDays * DAY_MS;
  // first, so that nothing of an erased account is rolled up under its pseudonym
  const erasedUnlinked = await store.usage.unlinkErased();
  const { rolledUp, aggregates, debitsCollapsed } = await store.usage.rollUp(cutoff);
  const unlinked =
    erasedUnlinked + (await store.usage.dropPseudonyms(utcDay(todayStart - windows.aggregateDays * DAY_MS)));
  // credit holds left by replicas that died before charging them
  await store.creditHolds.purgeExpired(now);
  return { rolledUp, aggregates, debitsCollapsed, unlinked };
}

/** Runs retention at start-up and then every `intervalMs`; returns a stop function. */
export function scheduleRetention(
  store: Store,
  windows: RetentionWindows,
  log: EventLog,
  intervalMs = 3_600_000,
  clock: () => number = Date.now,
): () => void {
  const run = () =>
    runRetention(store, windows, clock()).then(
      (result) =>
        log.event("retention_ran", {
          rolled_up: result.rolledUp,
          aggregates: result.aggregates,
          debits_collapsed: result.debitsCollapsed,
          unlinked: result.unlinked,
        }),
      () => log.event("retention_failed", { code: "LETHE_INTERNAL" }),
    );
  void run();
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
