import type { ErrorCode } from "../errors/lethe-error.js";
import type { EventLog } from "../logging/event-log.js";
import { BatchWriter } from "../store/batch-writer.js";
import type { Store } from "../store/store.js";
import type { MetadataRecord } from "./metadata-record.js";

/** Refusals at the gate (the bound itself, a shutdown): the only records dropped once the buffer is full. */
const REFUSALS = new Set<ErrorCode | null>(["LETHE_METERING_UNAVAILABLE", "LETHE_SHUTTING_DOWN"]);

/**
 * Records per write. A usual flush (`batch_size`, 64 by default) is one transaction; a backlog
 * left by an outage goes in steps, as building and copying the rows for the store is
 * main-thread work (about a millisecond per thousand records).
 */
const WRITE_CHUNK = 1_000;

/** Dropped records are logged as one count per this long. */
const DROP_LOG_INTERVAL_MS = 1_000;

/**
 * Writes metadata records to the store in batches, off the request path (BatchWriter):
 * `record` only queues. Requests are refused (503) while `maxBuffered` records wait, so
 * the buffer exceeds it by at most the requests that were in flight when it filled.
 */
export class Meter {
  private readonly writer: BatchWriter<MetadataRecord>;
  /** Refusals dropped since the last meter_dropped event, and the timer that will log them. */
  private droppedUnlogged = 0;
  private dropLogTimer: NodeJS.Timeout | null = null;

  constructor(
    store: Store,
    private readonly log: EventLog,
    private readonly options: { flushIntervalMs: number; batchSize: number; maxBuffered: number },
  ) {
    this.writer = new BatchWriter({
      flushIntervalMs: options.flushIntervalMs,
      batchSize: options.batchSize,
      chunkSize: WRITE_CHUNK,
      write: (chunk) => store.insertMetadata(chunk),
      onFailed: (unwritten) => log.event("meter_flush_failed", { records: unwritten, code: "LETHE_INTERNAL" }),
    });
  }

  record(record: MetadataRecord): void {
    // a request admitted below the bound was served and is metered whatever the buffer holds
    // (the excess is bounded by the requests in flight then); only refusals are dropped past it
    // (a request the shutdown deadline cut had reached a supplier: it was served in part)
    if (this.writer.queued >= this.options.maxBuffered && REFUSALS.has(record.error_code) && record.supplier === null) {
      this.dropped(1);
      return;
    }
    this.writer.add(record);
  }

  /**
   * Counts dropped refusals, logged once a second with their number: during an outage
   * every refused request drops one, and a line each flooded the log (8,000 in 20 s).
   */
  private dropped(records: number): void {
    this.droppedUnlogged += records;
    if (this.dropLogTimer !== null) return;
    this.dropLogTimer = setTimeout(() => this.logDropped(), DROP_LOG_INTERVAL_MS);
    this.dropLogTimer.unref();
  }

  /** Logs the refusals dropped since the last count, if any. */
  private logDropped(): void {
    if (this.dropLogTimer !== null) clearTimeout(this.dropLogTimer);
    this.dropLogTimer = null;
    if (this.droppedUnlogged === 0) return;
    this.log.event("meter_dropped", { records: this.droppedUnlogged });
    this.droppedUnlogged = 0;
  }

  /** Records waiting to be written, the batch being written included. */
  get pending(): number {
    return this.writer.pending;
  }

  /** Records written since start. */
  get writtenCount(): number {
    return this.writer.written;
  }

  /** Writes everything buffered now; concurrent calls share one flush. */
  flush(): Promise<void> {
    return this.writer.flush();
  }

  /** Flushes until the buffer is empty (or flushing keeps failing, or `until` passed); used on shutdown. */
  async drain(until?: number): Promise<number> {
    // the count of the last second goes out now, not with a timer the exit may never run
    this.logDropped();
    await this.writer.drain(until);
    return this.writer.written;
  }
}
