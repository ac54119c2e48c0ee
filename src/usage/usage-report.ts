import type { UsageDailyTable } from "../store/schema.js";
import type { UsageSourceRow } from "../store/usage-store.js";

/** How a usage report groups its rows. */
export type UsageGrouping = "day" | "model" | "key";

/** One group of a usage report: sums, and latency percentiles where raw rows exist. */
export interface UsageGroup {
  group: string;
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  reasoning_tokens: number;
  cost_micros: number;
  latency_ms: { p50: number | null; p95: number | null; p99: number | null };
}

/** The UTC day of an epoch-milliseconds time, as YYYY-MM-DD. */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The value at quantile `q` of ascending `sorted`, nearest-rank; null when empty. */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

interface Accumulator extends Omit<UsageGroup, "latency_ms"> {
  latencies: number[];
  /** The daily aggregates the group sums, and the last of them (whose percentiles it may take). */
  aggregates: number;
  aggregate: UsageDailyTable | null;
}

function emptyGroup(group: string): Accumulator {
  return {
    group,
    requests: 0,
    errors: 0,
    input_tokens: 0,
    output_tokens: 0,
    cached_input_tokens: 0,
    reasoning_tokens: 0,
    cost_micros: 0,
    latencies: [],
    aggregates: 0,
    aggregate: null,
  };
}

/**
 * A group's percentiles: from its raw rows, or, for a group that is one rolled-up day of
 * one model and supplier, those the roll-up computed. Percentiles of several sources do
 * not combine: a group that mixes them has none (null) rather than a made-up figure.
 */
function percentiles(group: Accumulator): UsageGroup["latency_ms"] {
  const { latencies, aggregate } = group;
  if (group.aggregates === 1 && latencies.length === 0 && aggregate !== null) {
    return { p50: aggregate.latency_p50_ms, p95: aggregate.latency_p95_ms, p99: aggregate.latency_p99_ms };
  }
  if (group.aggregates > 0) return { p50: null, p95: null, p99: null };
  latencies.sort((a, b) => a - b);
  return { p50: quantile(latencies, 0.5), p95: quantile(latencies, 0.95), p99: quantile(latencies, 0.99) };
}

/**
 * Groups raw metadata and older daily aggregates (by key, under `none`) into a usage
 * report. Latency percentiles come from raw rows, or from the one aggregate a group is
 * (see `percentiles`).
 */
export function buildUsageReport(
  rows: readonly UsageSourceRow[],
  aggregates: readonly UsageDailyTable[],
  grouping: UsageGrouping,
): UsageGroup[] {
  const groups = new Map<string, Accumulator>();
  const groupOf = (name: string) => {
    let group = groups.get(name);
    if (group === undefined) {
      group = emptyGroup(name);
      groups.set(name, group);
    }
    return group;
  };
  for (const row of rows) {
    const name = grouping === "day" ? utcDay(row.ts) : grouping === "model" ? row.model : (row.key_id ?? "none");
    const group = groupOf(name);
    group.requests++;
    if (row.error_code !== null) group.errors++;
    group.input_tokens += row.input_tokens;
    group.output_tokens += row.output_tokens;
    group.cached_input_tokens += row.cached_input_tokens;
    group.reasoning_tokens += row.reasoning_tokens;
    group.cost_micros += row.cost_micros;
    group.latencies.push(row.latency_ms);
  }
  for (const aggregate of aggregates) {
    // a rolled-up day keeps no key: by key, it comes under `none`, so totals agree across groupings
    const group = groupOf(grouping === "day" ? aggregate.day : grouping === "model" ? aggregate.model : "none");
    group.requests += Number(aggregate.requests);
    group.errors += Number(aggregate.errors);
    group.input_tokens += Number(aggregate.input_tokens);
    group.output_tokens += Number(aggregate.output_tokens);
    group.cached_input_tokens += Number(aggregate.cached_input_tokens);
    group.reasoning_tokens += Number(aggregate.reasoning_tokens);
    group.cost_micros += Number(aggregate.cost_micros);
    group.aggregates++;
    group.aggregate = aggregate;
  }
  return [...groups.values()]
    .sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0))
    .map((group) => {
      const { latencies: _latencies, aggregates: _aggregates, aggregate: _aggregate, ...sums } = group;
      return { ...sums, latency_ms: percentiles(group) };
    });
}
