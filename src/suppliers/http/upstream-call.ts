import type { Dispatcher } from "undici";
import type { AttemptTimeouts } from "../../config/load-config.js";
import type { UpstreamError } from "../../errors/lethe-error.js";
import type { Cancellation } from "../cancellation.js";
import { type AbortCause, upstreamFailure } from "./upstream-failure.js";

/** Chunks a stream may queue before the socket is paused: a client reading slowly slows the supplier. */
const HIGH_WATER_CHUNKS = 16;

/** What undici is told when Lethe aborts; the mapping reads `cause`, never this message. */
const ABORTED = new Error("aborted by Lethe");

const NO_HEADERS: readonly Buffer[] = Object.freeze([]);

/**
 * How long the rest of a body may take once its stream said it was done ([DONE],
 * message_stop): normally its end is in the same packet; a supplier that holds the
 * response open longer has the request aborted (and its connection closed).
 */
const DRAIN_GRACE_MS = 1_000;

/**
 * Calls waiting for a connection of their supplier's pool (every one busy), by when their
 * answer must start (performance.now()). undici starts a call's first-byte timeout only
 * once it has a socket, so a call that waited in the queue could outlive the routing
 * deadline by the whole wait. One sweep for all of them, not a timer each; and only calls
 * sent while their pool was full are entered: a Map entry for every call measured 50-70 MB
 * more RSS under load (bench/thread-cpu.mjs), for a wait that only saturation brings.
 */
const queued = new Map<UpstreamCall, number>();
const QUEUE_SWEEP_MS = 250;
let sweeper: NodeJS.Timeout | null = null;

function sweepQueue(): void {
  const now = performance.now();
  for (const [call, answerBy] of queued) if (answerBy <= now) call.abort("deadline");
}

/**
 * A deadline that comes less than this before undici's first-byte timeout would fire is
 * left to that timeout (whose timer ticks every half second anyway): a timer of Lethe's
 * own per request, for the default settings (both 60 s), cost more than the rest of the
 * call's bookkeeping.
 */
const DEADLINE_SLACK_MS = 1_000;

/** A timer for `ms` milliseconds, whole: Node keeps a list per distinct duration, and a fraction made one per call. */
function wholeMs(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}

/** A supplier pool's calls in progress (every one, queued or sent) and its connections. */
export interface PoolLoad {
  inFlight: number;
  readonly connections: number;
}

/**
 * One HTTP exchange with a supplier, as an undici dispatch handler. It replaces
 * `pool.request()`, whose per-call Readable body, AbortSignal and listeners cost more
 * than the rest of a request's upstream work: the body is collected straight into an
 * array (JSON) or queued chunk by chunk with pause/resume (streams), and the request
 * is aborted through the function undici hands over.
 *
 * It implements undici's raw handler callbacks (onConnect, onHeaders, onData, ...), which
 * undici's client itself calls, rather than the controller-based ones (onRequestStart,
 * onResponseStart, ...): for those undici wraps the handler in two more objects per
 * request and parses every response header (and the trailers) into an object, and Lethe
 * reads one header, `retry-after`, and only on failures. The raw callbacks are marked
 * deprecated in undici 7's types but are what its client runs on; test/upstream-call.test.ts
 * covers pausing, aborting and the headers through a real socket.
 */
export class UpstreamCall implements Dispatcher.DispatchHandler {
  status = 0;
  /** The answer's headers as undici read them: name, value, name, value... */
  private rawHeaders: readonly Buffer[] = NO_HEADERS;
  /** Aborts the request; undici hands it over once the request has a socket. */
  private abortRequest: ((reason: Error) => void) | null = null;
  /** Resumes a socket paused by answering false from onHeaders or onData. */
  private resumeSocket: (() => void) | null = null;
  private paused = false;
  private cause: AbortCause | null = null;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  /** Bytes beyond which the body is dropped and the request aborted; Infinity for none. */
  private limit = Number.POSITIVE_INFINITY;
  /** Set once the body is read whole (`text()`): then nothing is paused, everything is kept. */
  private wanted: "whole" | null = null;
  private ended = false;
  /** The reader is done (the stream said so): the rest of the body is read and dropped. */
  private discarding = false;
  private drainTimer: NodeJS.Timeout | null = null;
  private failure: UpstreamError | null = null;
  private started = false;
  private onStart: ((call: UpstreamCall) => void) | null;
  private onStartFailure: ((error: UpstreamError) => void) | null;
  /** Wakes the reader waiting for a chunk, the end or a failure. */
  private wake: (() => void) | null = null;
  private readonly stopTimer: NodeJS.Timeout;
  /** The routing deadline's cut of the wait for the answer's start, when it applies. */
  private answerTimer: NodeJS.Timeout | null = null;
  /** Stops listening to the client's cancellation; null until subscribed (it may fire at once). */
  private unsubscribe: (() => void) | null = null;
  private settled = false;
  /** When the request left for the supplier (its connection taken: a call queued for one waited before). */
  sentAt = 0;

  constructor(
    cancellation: Cancellation,
    private readonly timeouts: AttemptTimeouts,
    /** The supplier's max_response_bytes: bounds a body read whole, and (in readSse) one event. */
    readonly maxBytes: number,
    onStart: (call: UpstreamCall) => void,
    onStartFailure: (error: UpstreamError) => void,
    /** The supplier's calls in progress and its pool's connections: past them, a call waits for one. */
    private readonly load: PoolLoad,
  ) {
    this.onStart = onStart;
    this.onStartFailure = onStartFailure;
    load.inFlight++;
    this.stopTimer = setTimeout(() => this.abort("total-timeout"), timeouts.totalMs);
    const within = timeouts.answerWithinMs;
    if (within !== undefined) {
      // the deadline comes well before first_byte_ms would: timed from now, queue and all
      if (within < timeouts.firstByteMs - DEADLINE_SLACK_MS) {
        this.answerTimer = setTimeout(() => this.abort("deadline"), wholeMs(within));
      } else if (load.inFlight > load.connections) {
        queued.set(this, performance.now() + within);
        if (sweeper === null) {
          sweeper = setInterval(sweepQueue, QUEUE_SWEEP_MS);
          sweeper.unref();
        }
      }
    }
    this.unsubscribe = cancellation.onAbort(() =>
      this.abort(cancellation.reason === "shutdown" ? "shutdown" : "client-closed"),
    );
  }

  /** The value of a failed answer's header `name` (lower case), the first if it came twice. */
  header(name: string): string | undefined {
    const headers = this.rawHeaders;
    for (let index = 0; index + 1 < headers.length; index += 2) {
      const key = headers[index] as Buffer;
      if (key.length === name.length && key.toString("latin1").toLowerCase() === name) {
        return (headers[index + 1] as Buffer).toString("latin1");
      }
    }
    return undefined;
  }

  /** True when Lethe aborted this call (the client left, or the total deadline passed). */
  get aborted(): boolean {
    return this.cause !== null;
  }

  /**
   * Aborts the upstream request; undici then reports the failure through onError. A
   * request still waiting for a socket (every connection of the pool busy) fails at
   * once, so a client that left or a routing deadline does not wait for a free
   * connection; onConnect aborts it when undici gets to it.
   */
  abort(cause: AbortCause): void {
    if (this.cause !== null || this.ended || this.failure !== null) return;
    this.cause = cause;
    if (this.abortRequest !== null) this.abortRequest(ABORTED);
    else this.onError(ABORTED);
  }

  onConnect(abort: (reason: Error) => void): void {
    // given up while it waited for a socket (its client left, its deadline passed): thrown,
    // undici drops the request and the connection serves the next one; its abort function
    // would destroy the connection, and each such call would cost the pool a new one
    if (this.cause !== null) throw ABORTED;
    const answerBy = queued.get(this);
    if (answerBy !== undefined) {
      queued.delete(this);
      // its deadline passed between two sweeps: dropped the same way, never sent (undici's
      // errorRequest reports it through onError, abortRequest still unset)
      if (answerBy <= performance.now()) {
        this.cause = "deadline";
        throw ABORTED;
      }
    }
    this.abortRequest = abort;
    this.sentAt = performance.now();
    if (answerBy === undefined) return;
    // out of the queue: first_byte_ms runs from here, unless the deadline comes first
    const left = answerBy - performance.now();
    if (left < this.timeouts.firstByteMs - DEADLINE_SLACK_MS) {
      this.answerTimer = setTimeout(() => this.abort("deadline"), wholeMs(left));
    }
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // 1xx informational answers come before the real one; undici restarts its first-byte
    // timeout at each, so a supplier sending 103 every few seconds would never time out:
    // from the first one, the real answer has first_byte_ms more, once
    if (statusCode < 200) {
      if (this.answerTimer === null && !this.started) {
        this.answerTimer = setTimeout(() => this.abort("deadline"), this.timeouts.firstByteMs);
      }
      return true;
    }
    this.status = statusCode;
    // only a failure's headers are read (retry-after); the Buffers are views of a socket chunk
    if (statusCode >= 300) this.rawHeaders = rawHeaders;
    this.resumeSocket = resume;
    this.started = true;
    this.clearAnswerTimer();
    const onStart = this.onStart;
    this.onStart = null;
    this.onStartFailure = null;
    onStart?.(this);
    return !this.paused;
  }

  onData(chunk: Buffer): boolean {
    if (this.discarding) return true;
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.abort("too-large");
      return true;
    }
    this.chunks.push(chunk);
    // only a stream's reader resumes a paused socket; a body read whole must keep flowing
    if (this.chunks.length >= HIGH_WATER_CHUNKS && this.wanted !== "whole") this.paused = true;
    this.wakeReader();
    return !this.paused;
  }

  onComplete(): void {
    this.ended = true;
    this.settle();
    this.wakeReader();
  }

  onError(error: Error): void {
    // already failed when Lethe aborted a request that had no socket yet
    if (this.failure !== null) return;
    // undici hands over the abort once the request has a socket: before that, it never left
    this.failure = upstreamFailure(error, this.cause, this.started, this.abortRequest !== null);
    this.settle();
    const onStartFailure = this.onStartFailure;
    this.onStart = null;
    this.onStartFailure = null;
    if (onStartFailure !== null) onStartFailure(this.failure);
    else this.wakeReader();
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.resumeSocket?.();
  }

  /** The whole body as text; rejects with an UpstreamError when it breaks or outgrows maxBytes. */
  async text(): Promise<string> {
    this.wanted = "whole";
    if (this.maxBytes < this.limit) this.limit = this.maxBytes;
    if (this.size > this.limit) this.abort("too-large");
    // chunks that came before the body was asked for may have paused the socket
    this.resume();
    while (!this.ended) {
      if (this.failure !== null) throw this.failure;
      await this.nextWake();
    }
    // a body that had arrived whole before it was asked for was never cut off on the way
    if (this.size > this.limit) throw upstreamFailure(null, "too-large");
    if (this.chunks.length === 1) return (this.chunks[0] as Buffer).toString("utf8");
    return Buffer.concat(this.chunks, this.size).toString("utf8");
  }

  /**
   * The body as text if it ends within `limit` bytes and `withinMs`; undefined when it is
   * longer, slower or breaks (the request is aborted then, and its connection closed).
   */
  async boundedText(limit: number, withinMs: number): Promise<string | undefined> {
    this.limit = limit;
    if (this.size > limit) this.abort("too-large");
    const timer = setTimeout(() => this.abort("slow-error-body"), withinMs);
    try {
      return await this.text();
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The stream's own end marker arrived ([DONE], message_stop): the reader stops here, and
   * the client gets its end at once. Whatever else the body holds is read and dropped so
   * the connection can serve again, unless it takes longer than DRAIN_GRACE_MS.
   */
  finishEarly(): void {
    if (this.ended || this.failure !== null || this.discarding) return;
    this.discarding = true;
    this.chunks.length = 0;
    this.resume();
    this.drainTimer = setTimeout(() => this.abort("client-closed"), DRAIN_GRACE_MS);
    this.drainTimer.unref();
  }

  /** The body's chunks as they arrive; stopping early aborts the upstream request (unless finishEarly said it was done). */
  async *stream(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const chunk = this.chunks.shift();
        if (chunk !== undefined) {
          if (this.paused && this.chunks.length < HIGH_WATER_CHUNKS / 2) this.resume();
          yield chunk;
          continue;
        }
        if (this.failure !== null) throw this.failure;
        if (this.ended) return;
        await this.nextWake();
      }
    } finally {
      // the reader left before the end (the client went away): free the connection
      if (!this.ended && !this.discarding) this.abort("client-closed");
    }
  }

  private nextWake(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  private wakeReader(): void {
    const wake = this.wake;
    if (wake === null) return;
    this.wake = null;
    wake();
  }

  /** The exchange is over: its deadline and its client's cancellation no longer concern it. */
  private settle(): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.stopTimer);
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    this.clearAnswerTimer();
    queued.delete(this);
    this.load.inFlight--;
    this.unsubscribe?.();
  }

  private clearAnswerTimer(): void {
    if (this.answerTimer === null) return;
    clearTimeout(this.answerTimer);
    this.answerTimer = null;
  }
}
