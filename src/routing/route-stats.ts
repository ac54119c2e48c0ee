import { type BreakerSettings, CircuitBreaker } from "./circuit-breaker.js";

const EWMA_WEIGHT = 0.2;
const SAMPLES = 100;

/**
 * What Lethe knows about one route's recent behaviour: its circuit breaker, moving
 * averages of time to first token and throughput, and a ring of recent outcomes and
 * TTFT samples for the error rate and p50 shown in `lethe routes` and /metrics.
 */
export class RouteStats {
  readonly breaker: CircuitBreaker;
  ttftEwmaMs: number | null = null;
  tokensPerSecondEwma: number | null = null;
  private readonly outcomes: boolean[] = [];
  private readonly ttftSamples: number[] = [];

  constructor(settings: BreakerSettings) {
    this.breaker = new CircuitBreaker(settings);
  }

  /** A successful answer: feeds the breaker and the latency figures. */
  recordSuccess(ttftMs: number | null, tokensPerSecond: number | null): void {
    this.breaker.onSuccess();
    this.pushOutcome(true);
    if (ttftMs !== null) {
      this.ttftEwmaMs = this.ttftEwmaMs === null ? ttftMs : this.ttftEwmaMs + EWMA_WEIGHT * (ttftMs - this.ttftEwmaMs);
      this.ttftSamples.push(ttftMs);
      if (this.ttftSamples.length > SAMPLES) this.ttftSamples.shift();
    }
    if (tokensPerSecond !== null && tokensPerSecond > 0) {
      this.tokensPerSecondEwma =
        this.tokensPerSecondEwma === null
          ? tokensPerSecond
          : this.tokensPerSecondEwma + EWMA_WEIGHT * (tokensPerSecond - this.tokensPerSecondEwma);
    }
  }

  /** A failure the route is to blame for (refused, timed out, 429, 5xx, broken stream). */
  recordFailure(now: number): void {
    this.breaker.onFailure(now);
    this.pushOutcome(false);
  }

  /** Share of failures among the last outcomes, 0 when none. */
  errorRate(): number {
    if (this.outcomes.length === 0) return 0;
    let failures = 0;
    for (const outcome of this.outcomes) if (!outcome) failures++;
    return failures / this.outcomes.length;
  }

  /** Median of the recent TTFT samples, or null before the first. */
  ttftP50Ms(): number | null {
    if (this.ttftSamples.length === 0) return null;
    const sorted = [...this.ttftSamples].sort((a, b) => a - b);
    return sorted[Math.floor((sorted.length - 1) / 2)] as number;
  }

  private pushOutcome(success: boolean): void {
    this.outcomes.push(success);
    if (this.outcomes.length > SAMPLES) this.outcomes.shift();
  }
}
