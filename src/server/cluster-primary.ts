import cluster, { type Worker } from "node:cluster";
import type { EventLog } from "../logging/event-log.js";

/** A message a worker sends the primary once it listens. */
export interface ListeningMessage {
  type: "lethe-listening";
  url: string;
}

/** Tells the primary that this worker is listening (no-op outside a cluster). */
export function announceListening(url: string): void {
  if (cluster.isWorker && process.send) process.send({ type: "lethe-listening", url } satisfies ListeningMessage);
}

/**
 * How long the primary waits before replacing a worker, after `failedStarts` replacements
 * in a row died before they listened (the database away, say): none after a worker that
 * served, then 250 ms doubling to 10 s. Each start costs about a core for seconds; a
 * replacement that cannot start would otherwise be forked again at once, for ever.
 */
export function replacementDelayMs(failedStarts: number): number {
  return failedStarts === 0 ? 0 : Math.min(10_000, 250 * 2 ** (failedStarts - 1));
}

/**
 * The primary of `lethe serve --workers N`: forks N workers sharing the port,
 * replaces a worker that dies, passes SIGHUP (reload the config) on to every worker, and
 * on SIGTERM/SIGINT asks every worker to shut down gracefully, exiting once all have (or
 * after `deadlineMs`).
 */
export function runPrimary(
  workers: number,
  log: EventLog,
  deadlineMs: number,
  onListening: (url: string) => void,
): Promise<number> {
  let stopping = false;
  let announced = false;
  let finish: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });
  const listening = new WeakSet<Worker>();
  /** Workers a SIGHUP came for while they were starting: they get it once they listen. */
  const reloadWhenListening = new WeakSet<Worker>();
  /** Replacements in a row that died before they listened. */
  let failedStarts = 0;
  /** A replacement waiting out its back-off; a stop cancels it. */
  let pendingFork: NodeJS.Timeout | null = null;
  const fork = (): Worker => {
    const worker = cluster.fork();
    worker.on("message", (message: ListeningMessage) => {
      if (message?.type !== "lethe-listening") return;
      listening.add(worker);
      if (reloadWhenListening.delete(worker)) worker.process.kill("SIGHUP");
      if (!announced) {
        announced = true;
        onListening(message.url);
      }
    });
    return worker;
  };
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) return;
    if (!announced && !listening.has(worker)) {
      // no worker ever started (the port taken, the database unreachable): replacing them
      // would fail the same way for ever; the worker printed why, and the primary gives up
      stopping = true;
      for (const other of Object.values(cluster.workers ?? {})) other?.process.kill("SIGTERM");
      finish(1);
      return;
    }
    // a crashed or killed worker is replaced; what it had buffered is lost (one flush interval,
    // or, while the database is away, all it buffered since)
    log.event("worker_replaced", { exit_code: code ?? -1, killed: signal !== null });
    failedStarts = listening.has(worker) ? 0 : failedStarts + 1;
    const delay = replacementDelayMs(failedStarts);
    if (delay === 0) fork();
    else
      pendingFork = setTimeout(() => {
        pendingFork = null;
        if (!stopping) fork();
      }, delay);
  });
  for (let index = 0; index < workers; index++) fork();
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (pendingFork !== null) clearTimeout(pendingFork);
    const alive = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined);
    if (alive.length === 0) finish(0);
    let remaining = alive.length;
    for (const worker of alive) {
      worker.once("exit", () => {
        remaining--;
        if (remaining === 0) finish(0);
      });
      worker.process.kill("SIGTERM");
    }
    setTimeout(() => {
      for (const worker of alive) if (!worker.isDead()) worker.process.kill("SIGKILL");
      finish(1);
    }, deadlineMs + 5_000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // each worker reads the config file again itself (reload-config.ts); the primary only passes
  // the signal on, to a starting worker once it listens (before it can take the signal, the
  // signal would end it)
  process.on("SIGHUP", () => {
    if (stopping) return;
    for (const worker of Object.values(cluster.workers ?? {})) {
      if (worker === undefined) continue;
      if (listening.has(worker)) worker.process.kill("SIGHUP");
      else reloadWhenListening.add(worker);
    }
  });
  return finished;
}
