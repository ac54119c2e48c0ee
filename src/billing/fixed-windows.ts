/** A count in its current fixed window, and when that window ends (epoch milliseconds). */
export interface WindowCount {
  consumed: number;
  endsAt: number;
}

/** Ended windows are swept at most this often, however many ids opened theirs at different times. */
const SWEEP_EVERY_MS = 1_000;

/**
 * Counts per id in fixed windows of `windowMs`, in this process's memory: synchronous,
 * keyed by the id itself (no string built per call), no timer per window. Ended windows
 * are swept once the earliest open one has ended, so `size` drops back to 0 when every
 * window is over: callers may skip work while nothing is being counted.
 */
export class FixedWindows {
  private readonly windows = new Map<string, WindowCount>();
  private nextSweepAt = Number.POSITIVE_INFINITY;

  constructor(private readonly windowMs: number) {}

  /** Windows not yet swept (some may have ended since the last sweep). */
  get size(): number {
    return this.windows.size;
  }

  /** Adds `amount` to the id's window, opening a new one when the last ended. */
  add(id: string, amount: number, now = Date.now()): WindowCount {
    this.sweepIfDue(now);
    let window = this.windows.get(id);
    if (window === undefined || this.over(window, now)) {
      window = { consumed: 0, endsAt: now + this.windowMs };
      this.windows.set(id, window);
      this.nextSweepAt = Math.min(this.nextSweepAt, window.endsAt);
    }
    window.consumed += amount;
    return window;
  }

  /** Takes `amount` off the id's window, if it is still open. */
  subtract(id: string, amount: number, now = Date.now()): void {
    const window = this.windows.get(id);
    if (window !== undefined && !this.over(window, now)) window.consumed -= amount;
  }

  /**
   * Takes back `amount` added in advance; a window that comes back to nothing is closed,
   * so `size` drops to 0 again when nothing else is counted (callers skip work then).
   */
  giveBack(id: string, amount: number, now = Date.now()): void {
    const window = this.windows.get(id);
    if (window === undefined || this.over(window, now)) return;
    window.consumed -= amount;
    if (window.consumed <= 0) this.windows.delete(id);
  }

  /** The id's open window, if any; never opens one. */
  current(id: string, now = Date.now()): WindowCount | undefined {
    this.sweepIfDue(now);
    const window = this.windows.get(id);
    return window === undefined || this.over(window, now) ? undefined : window;
  }

  /**
   * A window is over once it ended, or when the clock says it has not begun yet: the wall
   * clock was stepped back (an NTP correction, a VM restored), and a window opened before
   * the step would otherwise stay open for as long as the step, an account at its limit
   * refused for an hour after an hour's step.
   */
  private over(window: WindowCount, now: number): boolean {
    return window.endsAt <= now || window.endsAt - this.windowMs > now;
  }

  private sweepIfDue(now: number): void {
    // a clock stepped back below the last sweep would put the next one off by the step
    if (this.nextSweepAt !== Number.POSITIVE_INFINITY && now < this.nextSweepAt - SWEEP_EVERY_MS - this.windowMs)
      this.nextSweepAt = now;
    if (now < this.nextSweepAt) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const [id, window] of this.windows) {
      if (this.over(window, now)) this.windows.delete(id);
      else earliest = Math.min(earliest, window.endsAt);
    }
    this.nextSweepAt = Math.max(earliest, now + SWEEP_EVERY_MS);
  }
}
