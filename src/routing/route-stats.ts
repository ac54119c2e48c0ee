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
  /** The last SAMPLES outcomes, 1 for a failure, written round the ring (no shifting per request). */
  private readonly outcomes = new Uint8Array(SAMPLES);
  private outcomeCount = 0;
  private outcomeNext = 0;
  private failures = 0;
  private readonly ttftSamples = new Float64Array(SAMPLES);
  private ttftCount = 0;
  private ttftNext = 0;

  constructor(settings: BreakerSettings) {
    this.breaker = new CircuitBreaker(settings);
  }

  /** A successful answer: feeds the breaker and the latency figures. */
  recordSuccess(ttftMs: number | null, tokensPerSecond: number | null): void {
    this.breaker.onSuccess();
    this.pushOutcome(true);
    if (ttftMs !== null) {
      this.ttftEwmaMs = this.ttftEwmaMs === null ? ttftMs : this.ttftEwmaMs + EWMA_WEIGHT * (ttftMs - this.ttftEwmaMs);
      this.ttftSamples[this.ttftNext] = ttftMs;
      this.ttftNext = (this.ttftNext + 1) % SAMPLES;
      if (this.ttftCount < SAMPLES) this.ttftCount++;
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
    return this.outcomeCount === 0 ? 0 : this.failures / this.outcomeCount;
  }

  /** Median of the recent TTFT samples, or null before the first. */
  ttftP50Ms(): number | null {
    if (this.ttftCount === 0) return null;
    // a typed array sorts numerically; the ring's order does not matter for a median
    const sorted = this.ttftSamples.slice(0, this.ttftCount).sort();
    return sorted[Math.floor((this.ttftCount - 1) / 2)] as number;
  }

  private pushOutcome(success: boolean): void {
    const failed = success ? 0 : 1;
    // the slot written over leaves the count once the ring is full
    if (this.outcomeCount === SAMPLES) this.failures -= this.outcomes[this.outcomeNext] as number;
    else this.outcomeCount++;
    this.outcomes[this.outcomeNext] = failed;
    this.failures += failed;
    this.outcomeNext = (this.outcomeNext + 1) % SAMPLES;
  }
}
