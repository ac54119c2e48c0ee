import type { EventLog } from "../logging/event-log.js";
import type { UsageDailyTable } from "../store/schema.js";
import type { Store } from "../store/store.js";
import type { UsageSourceRow } from "../store/usage-store.js";
import { quantile, utcDay } from "../usage/usage-report.js";

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
  unlinked: number;
}

function aggregate(rows: readonly UsageSourceRow[]): UsageDailyTable[] {
  const groups = new Map<string, { row: UsageDailyTable; latencies: number[] }>();
  for (const source of rows) {
    const day = utcDay(source.ts);
    const key = JSON.stringify([day, source.account, source.model, source.supplier]);
    let group = groups.get(key);
    if (group === undefined) {
      group = {
        row: {
          day,
          account: source.account,
          model: source.model,
          supplier: source.supplier,
          requests: 0,
          errors: 0,
          input_tokens: 0,
          output_tokens: 0,
          cached_input_tokens: 0,
          reasoning_tokens: 0,
          cost_micros: 0,
          latency_p50_ms: null,
          latency_p95_ms: null,
          latency_p99_ms: null,
        },
        latencies: [],
      };
      groups.set(key, group);
    }
    const row = group.row;
    row.requests++;
    if (source.error_code !== null) row.errors++;
    row.input_tokens += source.input_tokens;
    row.output_tokens += source.output_tokens;
    row.cached_input_tokens += source.cached_input_tokens;
    row.reasoning_tokens += source.reasoning_tokens;
    row.cost_micros += source.cost_micros;
    group.latencies.push(source.latency_ms);
  }
  return [...groups.values()].map(({ row, latencies }) => {
    latencies.sort((a, b) => a - b);
    return {
      ...row,
      latency_p50_ms: quantile(latencies, 0.5),
      latency_p95_ms: quantile(latencies, 0.95),
      latency_p99_ms: quantile(latencies, 0.99),
    };
  });
}

/**
 * One retention pass at `now`: raw records older than the metadata window (whole UTC
 * days) become daily aggregates per account, model and supplier and are deleted; the
 * account pseudonym is dropped from aggregates older than the aggregate window.
 */
export async function runRetention(store: Store, windows: RetentionWindows, now: number): Promise<RetentionResult> {
  const todayStart = Date.parse(`${utcDay(now)}T00:00:00Z`);
  const cutoff = todayStart - windows.metadataDays * DAY_MS;
  const { rolledUp, aggregates } = await store.usage.rollUp(cutoff, aggregate);
  const unlinked = await store.usage.dropPseudonyms(utcDay(todayStart - windows.aggregateDays * DAY_MS));
  // credit holds left by replicas that died before charging them
  await store.creditHolds.purgeExpired(now);
  return { rolledUp, aggregates, unlinked };
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
          unlinked: result.unlinked,
        }),
      () => log.event("retention_failed", { code: "LETHE_INTERNAL" }),
    );
  void run();
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
