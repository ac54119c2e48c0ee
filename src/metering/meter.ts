import type { EventLog } from "../logging/event-log.js";
import type { Store } from "../store/store.js";
import type { MetadataRecord } from "./metadata-record.js";

/**
 * Writes metadata records to the store in batches, off the request path: `record`
 * only pushes to an array; a timer (or a full batch) flushes. A failed flush keeps
 * the records (up to `maxBuffered`) and retries on the next tick.
 */
export class Meter {
  private buffer: MetadataRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
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
    if (this.buffer.length >= this.options.maxBuffered) {
      this.log.event("meter_dropped", { records: 1 });
      return;
    }
    this.buffer.push(record);
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
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.flushing !== null) return this.flushing;
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    this.inFlight = batch.length;
    this.flushing = this.store
      .insertMetadata(batch)
      .then(() => {
        this.written += batch.length;
      })
      .catch(() => {
        this.log.event("meter_flush_failed", { records: batch.length, code: "LETHE_INTERNAL" });
        const kept = batch.concat(this.buffer);
        if (kept.length > this.options.maxBuffered) {
          this.log.event("meter_dropped", { records: kept.length - this.options.maxBuffered });
        }
        this.buffer = kept.slice(0, this.options.maxBuffered);
        if (this.timer === null) {
          this.timer = setTimeout(() => void this.flush(), this.options.flushIntervalMs);
          this.timer.unref();
        }
      })
      .finally(() => {
        this.flushing = null;
        this.inFlight = 0;
      });
    return this.flushing;
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
