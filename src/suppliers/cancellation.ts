/** Why a request was cancelled: its client went away, or the gateway's shutdown deadline came. */
export type CancelReason = "client-closed" | "shutdown";

/**
 * A request's cancellation: set once, when its client goes away (or the shutdown deadline
 * cuts it), and read by every attempt at a supplier. A plain object rather than an
 * AbortController: Node 20 spends about 10 µs building each AbortSignal, which on a
 * gateway's hot path is more than the rest of the request's bookkeeping, and nothing here
 * needs EventTarget semantics.
 */
export class Cancellation {
  private why: CancelReason | null = null;
  private listeners: (() => void)[] | null = null;
  /** Its neighbours in the InFlight list, while it is in one. */
  previous: Cancellation | null = null;
  next: Cancellation | null = null;

  /** True once the request was cancelled. */
  get aborted(): boolean {
    return this.why !== null;
  }

  /** Why it was cancelled; null while it was not. */
  get reason(): CancelReason | null {
    return this.why;
  }

  /** Cancels the request and tells every listener, once. */
  abort(reason: CancelReason = "client-closed"): void {
    if (this.why !== null) return;
    this.why = reason;
    const listeners = this.listeners;
    this.listeners = null;
    if (listeners !== null) for (const listener of listeners) listener();
  }

  /** Calls `listener` when the request is cancelled (at once if it already was); returns the unsubscribe. */
  onAbort(listener: () => void): () => void {
    if (this.why !== null) {
      listener();
      return noop;
    }
    this.listeners ??= [];
    this.listeners.push(listener);
    return () => {
      const index = this.listeners?.indexOf(listener) ?? -1;
      if (index >= 0) this.listeners?.splice(index, 1);
    };
  }
}

/**
 * The cancellations of the requests in flight, so that the shutdown deadline can end each in
 * its client's format (an error event, a 503) rather than drop its connection. A list
 * threaded through the cancellations themselves: joining and leaving it allocate nothing
 * (a Map entry per request cost tens of MB of RSS under load: docs/performance.md).
 */
export class InFlight {
  private head: Cancellation | null = null;
  private cut: CancelReason | null = null;

  /** True once cancelAll ran: the shutdown deadline passed. */
  get closed(): boolean {
    return this.cut !== null;
  }

  /** Joins the list; once it was cut, a request is cancelled at once (its body came after the deadline). */
  add(cancellation: Cancellation): void {
    if (this.cut !== null) {
      cancellation.abort(this.cut);
      return;
    }
    cancellation.next = this.head;
    if (this.head !== null) this.head.previous = cancellation;
    this.head = cancellation;
  }

  remove(cancellation: Cancellation): void {
    const { previous, next } = cancellation;
    if (previous !== null) previous.next = next;
    else if (this.head === cancellation) this.head = next;
    else return;
    if (next !== null) next.previous = previous;
    cancellation.previous = null;
    cancellation.next = null;
  }

  /**
   * Cancels every request in flight for `reason`, and every one that joins later; each leaves
   * the list as its response closes.
   */
  cancelAll(reason: CancelReason): number {
    this.cut = reason;
    let cancelled = 0;
    // collected first: a cancellation's listeners may end its response, and with it its place here
    const all: Cancellation[] = [];
    for (let at = this.head; at !== null; at = at.next) all.push(at);
    for (const cancellation of all) {
      if (cancellation.aborted) continue;
      cancellation.abort(reason);
      cancelled++;
    }
    return cancelled;
  }
}

function noop(): void {}
