import type { ErrorCode } from "../errors/lethe-error.js";
import type { EventLog } from "../logging/event-log.js";
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

/**
 * Writes metadata records to the store in batches, off the request path: `record`
 * only pushes to an array; a timer (or a full batch) flushes. A failed flush keeps
 * the records and retries on the next tick; requests are refused (503) while
 * `maxBuffered` records wait, so the buffer exceeds it by at most the requests that
 * were in flight when it filled.
 */
export class Meter {
  private buffer: MetadataRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** A write failed and its retry timer is armed: nothing else writes before it. */
  private retrying = false;
  private flushing: Promise<void> | null = null;
  private immediate = false;
  private written = 0;
  private inFlight = 0;

  constructor(
    private readonly store: Store,
    private readonly log: EventLog,
    private readonly options: { flushIntervalMs: number; batchSize: number; maxBuffered: number },
  ) {}

  record(record: MetadataRecord): void {
    // a request admitted below the bound was served and is metered whatever the buffer holds
    // (the excess is bounded by the requests in flight then); only refusals are dropped past it
    if (this.buffer.length >= this.options.maxBuffered && REFUSALS.has(record.error_code)) {
      this.log.event("meter_dropped", { records: 1 });
      return;
    }
    this.buffer.push(record);
    this.scheduleFlush();
  }

  /**
   * A full batch is written at once, anything less within the flush interval. After a
   * failed write, nothing is written before its retry: a database that is away would
   * otherwise get a new connection attempt for every record past a batch.
   */
  private scheduleFlush(): void {
    if (this.retrying) return;
    if (this.buffer.length >= this.options.batchSize) {
      if (!this.immediate) {
        this.immediate = true;
        setImmediate(() => {
          this.immediate = false;
          void this.flush();
        });
      }
    } else if (this.timer === null) {
      this.timer = setTimeout(() => void this.flush(), this.options.flushIntervalMs);
      this.timer.unref();
    }
  }

  /** Records waiting to be written, the batch being written included. */
  get pending(): number {
    return this.buffer.length + this.inFlight;
  }

  /** Records written since start. */
  get writtenCount(): number {
    return this.written;
  }

  /** Writes everything buffered now; concurrent calls share one flush. */
  async flush(): Promise<void> {
    this.retrying = false;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.flushing !== null) return this.flushing;
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    this.inFlight = batch.length;
    this.flushing = this.writeInChunks(batch).finally(() => {
      this.flushing = null;
      this.inFlight = 0;
      // records that came during the write found it busy (their timer or batch flush returned
      // early): without this they would wait for the next request to arm a timer again. A
      // failed write armed its retry timer already.
      if (this.buffer.length > 0 && this.timer === null) this.scheduleFlush();
    });
    return this.flushing;
  }

  /**
   * Writes a batch a chunk at a time. Neither store writes on the event loop (SQLite's
   * writer thread, PostgreSQL's socket): awaiting each chunk lets requests run between
   * them. On failure only the unwritten records go back to the buffer.
   */
  private async writeInChunks(batch: MetadataRecord[]): Promise<void> {
    let done = 0;
    try {
      while (done < batch.length) {
        const chunk = batch.slice(done, done + WRITE_CHUNK);
        await this.store.insertMetadata(chunk);
        done += chunk.length;
        this.written += chunk.length;
        this.inFlight = batch.length - done;
      }
    } catch {
      const unwritten = batch.slice(done);
      this.log.event("meter_flush_failed", { records: unwritten.length, code: "LETHE_INTERNAL" });
      // everything buffered was accepted by `record`: keep it all for the next try
      this.buffer = unwritten.concat(this.buffer);
      this.retrying = true;
      if (this.timer === null) {
        this.timer = setTimeout(() => void this.flush(), this.options.flushIntervalMs);
        this.timer.unref();
      }
    }
  }

  /** Flushes until the buffer is empty (or a flush fails); used on shutdown. */
  async drain(): Promise<number> {
    let attempts = 0;
    while ((this.buffer.length > 0 || this.flushing !== null) && attempts < 50) {
      attempts++;
      await (this.flushing ?? this.flush());
    }
    return this.written;
  }
}
