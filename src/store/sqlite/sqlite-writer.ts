import { once } from "node:events";
import { Worker } from "node:worker_threads";
import type { RolledUp } from "../roll-up-day.js";
import type { DebitRow, MetadataRow, WriterReply, WriterRequest, WriterSetup } from "./writer-protocol.js";

/** A write the writer thread did not commit; `code` is SQLite's (or the writer's) code, never row contents. */
export class SqliteWriteError extends Error {
  constructor(readonly code: string) {
    super(`SQLite write failed (${code})`);
    this.name = "SqliteWriteError";
  }
}

interface Waiting {
  resolve: (reply: WriterReply) => void;
  reject: (error: Error) => void;
}

/**
 * The main thread's side of the SQLite writer thread. Each write is one message and
 * one transaction there; its promise settles once the thread committed (or failed).
 * The thread starts on the first write, so processes that never write metadata or
 * debits (the CLI) never start one, and it holds the process open only while writes
 * are waiting. A thread that dies fails what was waiting; the next write starts another.
 */
export class SqliteWriter {
  private worker: Worker | null = null;
  private readonly waiting = new Map<number, Waiting>();
  private lastId = 0;
  /** Settles after the last write sent; writes are answered in order, so after all of them. */
  private last: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly setup: WriterSetup) {}

  /** Inserts metadata rows in one transaction. */
  async writeMetadata(rows: MetadataRow[]): Promise<void> {
    await this.send((id) => ({ id, kind: "metadata", rows }));
  }

  /** Writes debit entries and lowers the accounts' balances, in one transaction. */
  async writeDebits(rows: DebitRow[]): Promise<void> {
    await this.send((id) => ({ id, kind: "debits", rows }));
  }

  /** Rolls the oldest UTC day of raw metadata before `cutoffMs` up, in one transaction (roll-up-day.js). */
  async rollUpDay(cutoffMs: number): Promise<RolledUp> {
    const reply = await this.send((id) => ({ id, kind: "rollUpDay", cutoffMs }));
    return reply.rolledUp ?? { rolledUp: 0, aggregates: 0, debitsCollapsed: 0 };
  }

  /** Waits for every write sent, then stops the thread (closing its connection). */
  async close(): Promise<void> {
    this.closed = true;
    await this.last;
    const worker = this.worker;
    if (worker === null) return;
    this.worker = null;
    worker.ref();
    const exited = once(worker, "exit");
    worker.postMessage({ kind: "close" } satisfies WriterRequest);
    await exited;
  }

  private send(request: (id: number) => WriterRequest): Promise<WriterReply> {
    if (this.closed) return Promise.reject(new SqliteWriteError("WRITER_CLOSED"));
    const worker = this.worker ?? this.start();
    const id = ++this.lastId;
    const written = new Promise<WriterReply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
    });
    // a pending write keeps the process alive until it is answered; an idle thread does not
    if (this.waiting.size === 1) worker.ref();
    worker.postMessage(request(id));
    this.last = written.catch(() => {});
    return written;
  }

  private start(): Worker {
    const worker = new Worker(new URL("./sqlite-writer-thread.js", import.meta.url), {
      workerData: this.setup,
      // the thread holds a few prepared statements and one batch at a time: a small heap
      // keeps its share of the gateway's RSS small (V8's defaults size it like a server's)
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
    });
    worker.on("message", (reply: WriterReply) => {
      const waiting = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (this.waiting.size === 0) worker.unref();
      if (reply.code === null) waiting?.resolve(reply);
      else waiting?.reject(new SqliteWriteError(reply.code));
    });
    // the 'exit' that follows fails what was waiting; the error itself is not kept (it may quote a path)
    worker.on("error", () => {});
    worker.on("exit", () => {
      if (this.worker === worker) this.worker = null;
      const failed = [...this.waiting.values()];
      this.waiting.clear();
      for (const waiting of failed) waiting.reject(new SqliteWriteError("WRITER_EXITED"));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }
}
