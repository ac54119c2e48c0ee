/** How a BatchWriter writes and when. */
export interface BatchWriterOptions<T> {
  /** Anything less than a full batch is written within this long. */
  flushIntervalMs: number;
  /**
   * Items that trigger a write without waiting for the interval. Under load an item then
   * lives a few milliseconds instead of up to the interval: short-lived objects die in
   * V8's young generation instead of filling the old one (RSS).
   */
  batchSize: number;
  /**
   * Items per write. A backlog left by an outage goes in steps, as building and copying
   * rows for the store is main-thread work; the event loop runs between them.
   */
  chunkSize: number;
  /** Writes one chunk; rejects when it could not (nothing of the chunk was written). */
  write: (chunk: T[]) => Promise<void>;
  /** A chunk is in the store. */
  onWritten?: (chunk: T[]) => void;
  /** A write failed: `unwritten` items are kept for the retry, a flush interval later. */
  onFailed: (unwritten: number) => void;
}

/**
 * Writes items (metadata records, ledger charges) to the store in batches, off the request
 * path: `add` only pushes to an array; a timer, or a full batch, writes. One write at a
 * time. A failed write keeps its items and retries after the flush interval, and nothing
 * else writes before that retry: a database that is away would otherwise get a new
 * connection attempt for every item past a batch.
 */
export class BatchWriter<T> {
  private queue: T[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** A write failed and its retry timer is armed. */
  private retrying = false;
  private flushing: Promise<void> | null = null;
  private immediate = false;
  /** Items of the batch being written that are not in the store yet. */
  private inFlight = 0;
  private writtenTotal = 0;

  constructor(private readonly options: BatchWriterOptions<T>) {}

  add(item: T): void {
    this.queue.push(item);
    this.schedule();
  }

  /** Items waiting, not counting the batch being written. */
  get queued(): number {
    return this.queue.length;
  }

  /** Items not in the store yet, the batch being written included. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /** Whether a batch is being written now. */
  get writing(): boolean {
    return this.flushing !== null;
  }

  /** Items written since start. */
  get written(): number {
    return this.writtenTotal;
  }

  private schedule(): void {
    if (this.retrying) return;
    if (this.queue.length >= this.options.batchSize) {
      if (!this.immediate) {
        this.immediate = true;
        setImmediate(() => {
          this.immediate = false;
          void this.flush();
        });
      }
    } else if (this.timer === null) {
      this.armTimer();
    }
  }

  private armTimer(): void {
    this.timer = setTimeout(() => void this.flush(), this.options.flushIntervalMs);
    this.timer.unref();
  }

  /** Writes everything queued now; concurrent calls share one write. */
  flush(): Promise<void> {
    this.retrying = false;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.flushing !== null) return this.flushing;
    if (this.queue.length === 0) return Promise.resolve();
    const batch = this.queue;
    this.queue = [];
    this.inFlight = batch.length;
    this.flushing = this.writeInChunks(batch).finally(() => {
      this.flushing = null;
      this.inFlight = 0;
      // items that came during the write found it busy (their timer or batch flush returned
      // early): without this they would wait for the next item to arm a timer again. A
      // failed write armed its retry timer already.
      if (this.queue.length > 0 && this.timer === null) this.schedule();
    });
    return this.flushing;
  }

  /** On failure only the unwritten items go back, ahead of those queued since. */
  private async writeInChunks(batch: T[]): Promise<void> {
    const { chunkSize, write, onWritten } = this.options;
    let done = 0;
    try {
      while (done < batch.length) {
        const chunk = done === 0 && batch.length <= chunkSize ? batch : batch.slice(done, done + chunkSize);
        await write(chunk);
        done += chunk.length;
        this.writtenTotal += chunk.length;
        this.inFlight = batch.length - done;
        onWritten?.(chunk);
      }
    } catch {
      const unwritten = done === 0 ? batch : batch.slice(done);
      this.options.onFailed(unwritten.length);
      this.queue = unwritten.concat(this.queue);
      this.retrying = true;
      if (this.timer === null) this.armTimer();
    }
  }

  /**
   * Writes until nothing is left, or writing keeps failing, or `until` (a `Date.now()`
   * time) has passed; used on shutdown, whose deadline must also end the retries, not
   * only the wait for them.
   */
  async drain(until = Number.POSITIVE_INFINITY): Promise<void> {
    for (
      let attempt = 0;
      (this.queue.length > 0 || this.flushing !== null) && attempt < 50 && Date.now() < until;
      attempt++
    ) {
      await (this.flushing ?? this.flush());
    }
  }
}
