/** When a breaker opens and how long it stays open. */
export interface BreakerSettings {
  /** Failures within `windowMs` that open the breaker. */
  failureThreshold: number;
  windowMs: number;
  /** How long an open breaker waits before letting one probe request through. */
  cooldownMs: number;
}

export type BreakerState = "closed" | "open" | "half-open";

/**
 * A circuit breaker for one route. Closed: requests flow, failures are counted in
 * a sliding window. Open: the route is skipped until the cooldown ends. Half-open:
 * exactly one probe request goes through; its success closes the breaker, its
 * failure opens it again. Time comes from the caller so tests control the clock.
 */
export class CircuitBreaker {
  private failures: number[] = [];
  private openedAt = 0;
  private probing = false;
  private current: BreakerState = "closed";

  constructor(private readonly settings: BreakerSettings) {}

  /** The state at `now` (an open breaker whose cooldown ended reads as half-open). */
  state(now: number): BreakerState {
    if (this.current === "open" && now - this.openedAt >= this.settings.cooldownMs) return "half-open";
    return this.current;
  }

  /** Whether a request may use the route now; in half-open, claims the single probe. */
  tryAcquire(now: number): boolean {
    const state = this.state(now);
    if (state === "closed") return true;
    if (state === "open" || this.probing) return false;
    this.current = "half-open";
    this.probing = true;
    return true;
  }

  /** Whether the route is usable now, without claiming the probe. */
  isAvailable(now: number): boolean {
    const state = this.state(now);
    return state === "closed" || (state === "half-open" && !this.probing);
  }

  /** How long until the route takes a request again: the rest of an open breaker's cooldown, else 0. */
  msUntilAvailable(now: number): number {
    return this.current === "open" ? Math.max(0, this.settings.cooldownMs - (now - this.openedAt)) : 0;
  }

  onSuccess(): void {
    this.current = "closed";
    this.probing = false;
    this.failures = [];
  }

  onFailure(now: number): void {
    if (this.current === "half-open") {
      this.open(now);
      return;
    }
    this.failures.push(now);
    const since = now - this.settings.windowMs;
    while (this.failures.length > 0 && (this.failures[0] as number) <= since) this.failures.shift();
    if (this.failures.length >= this.settings.failureThreshold) this.open(now);
  }

  /** A request that claimed the probe ended without a verdict (e.g. the client left). */
  release(): void {
    this.probing = false;
  }

  private open(now: number): void {
    this.current = "open";
    this.openedAt = now;
    this.probing = false;
    this.failures = [];
  }
}
