import type { Metric, Registry } from "prom-client";

/**
 * Counters and histograms for the per-request path. prom-client hashes a series'
 * label object on every `inc()`/`observe()`, even through `labels()` children; here a
 * caller looks a series up once, keeps it, and each update is a few number adds. The
 * families render at scrape time exactly as prom-client's own Counter and Histogram.
 */

/** Label values of one series, in the order they are rendered. */
export type SeriesLabels = Readonly<Record<string, string | number>>;

interface FamilyConfig {
  name: string;
  help: string;
  registry: Registry;
}

interface Series {
  readonly labels: SeriesLabels;
  /** Whether it has been updated since creation or the last reset: only those are rendered. */
  shown: boolean;
}

/** One counter series and its running total. */
export interface CounterSeries extends Series {
  value: number;
}

/** One histogram bucket: its upper bound and the observations that fell in it alone (not cumulative). */
interface Bucket {
  readonly upperBound: number;
  count: number;
}

/** One histogram series: per-bucket counts, sum and count. */
export interface HistogramSeries extends Series {
  readonly buckets: readonly Bucket[];
  sum: number;
  count: number;
}

/** A value line as prom-client's registry reads it. */
interface ValueLine {
  value: number;
  labels: SeriesLabels;
  metricName?: string;
}

/** What the registry reads of a metric: name, help, type, aggregator, get() and reset(). */
abstract class SeriesFamily<S extends Series> {
  readonly aggregator = "sum";
  /** Mutable: an OpenMetrics registry renames counters. */
  name: string;
  readonly help: string;
  private readonly byKey = new Map<string, S>();
  /** The series to render, in the order they were first updated (prom-client's order). */
  protected readonly shown: S[] = [];

  constructor(
    config: FamilyConfig,
    readonly type: "counter" | "histogram",
  ) {
    this.name = config.name;
    this.help = config.help;
    // the registry only reads the members above; its typings name prom-client's own classes
    config.registry.registerMetric(this as unknown as Metric);
  }

  /** The series with these labels, created on first use; keep it and pass it to the update method. */
  series(labels: SeriesLabels): S {
    const key = Object.values(labels).join("\u0000");
    let series = this.byKey.get(key);
    if (series === undefined) {
      series = this.create(labels);
      this.byKey.set(key, series);
    }
    return series;
  }

  /** The family as prom-client's registry renders it. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ValueLine[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
  }

  /** Zeroes every series and hides it until its next update, like prom-client's reset. */
  reset(): void {
    for (const series of this.shown) {
      series.shown = false;
      this.clear(series);
    }
    this.shown.length = 0;
  }

  protected show(series: S): void {
    series.shown = true;
    this.shown.push(series);
  }

  protected abstract create(labels: SeriesLabels): S;
  protected abstract clear(series: S): void;
  protected abstract values(): ValueLine[];
}

/** A counter family, rendered as prom-client's Counter renders it. */
export class CounterFamily extends SeriesFamily<CounterSeries> {
  constructor(config: FamilyConfig) {
    super(config, "counter");
  }

  /** Adds `amount` (non-negative) to one series. */
  inc(series: CounterSeries, amount: number): void {
    if (!series.shown) this.show(series);
    series.value += amount;
  }

  protected create(labels: SeriesLabels): CounterSeries {
    return { labels, shown: false, value: 0 };
  }

  protected clear(series: CounterSeries): void {
    series.value = 0;
  }

  protected values(): ValueLine[] {
    return this.shown.map((series) => ({ value: series.value, labels: series.labels }));
  }
}

/** A histogram family, rendered as prom-client's Histogram renders it (cumulative buckets, +Inf, _sum, _count). */
export class HistogramFamily extends SeriesFamily<HistogramSeries> {
  private readonly upperBounds: readonly number[];

  constructor(config: FamilyConfig & { buckets: readonly number[] }) {
    super(config, "histogram");
    this.upperBounds = [...config.buckets];
  }

  /** Records one observation in one series. */
  observe(series: HistogramSeries, value: number): void {
    if (!series.shown) this.show(series);
    series.sum += value;
    series.count += 1;
    // a value above every bound counts only in +Inf, which is the total count
    for (const bucket of series.buckets) {
      if (value <= bucket.upperBound) {
        bucket.count += 1;
        return;
      }
    }
  }

  protected create(labels: SeriesLabels): HistogramSeries {
    const buckets = this.upperBounds.map((upperBound) => ({ upperBound, count: 0 }));
    return { labels, shown: false, buckets, sum: 0, count: 0 };
  }

  protected clear(series: HistogramSeries): void {
    for (const bucket of series.buckets) bucket.count = 0;
    series.sum = 0;
    series.count = 0;
  }

  protected values(): ValueLine[] {
    const bucketName = `${this.name}_bucket`;
    const lines: ValueLine[] = [];
    for (const series of this.shown) {
      let cumulative = 0;
      for (const bucket of series.buckets) {
        cumulative += bucket.count;
        lines.push({ value: cumulative, labels: { le: bucket.upperBound, ...series.labels }, metricName: bucketName });
      }
      lines.push(
        { value: series.count, labels: { le: "+Inf", ...series.labels }, metricName: bucketName },
        { value: series.sum, labels: series.labels, metricName: `${this.name}_sum` },
        { value: series.count, labels: series.labels, metricName: `${this.name}_count` },
      );
    }
    return lines;
  }
}
