import type { MetadataRecord } from "../metering/metadata-record.js";
import { MAX_RETRY_AFTER_SECONDS } from "../suppliers/http/upstream-failure.js";
import { type BreakerSettings, CircuitBreaker } from "./circuit-breaker.js";

const EWMA_WEIGHT = 0.2;
const SAMPLES = 100;

/**
 * How long a route's latency figures stand without a new answer. Past it they are
 * stale: lowest-latency sends one request to measure the route again (router.ts), and
 * the next answer replaces the old figures instead of being averaged into them.
 */
export const STALE_AFTER_MS = 60_000;

/**
 * The longest a route rests on a supplier's `retry-after` before Lethe asks it again: a
 * supplier's word is taken, but a wrong or hostile value (a day, a year) must not take
 * the route away for that long without a single request to see whether it recovered.
 */
export const MAX_REST_MS = MAX_RETRY_AFTER_SECONDS * 1000;

/**
 * How a successful answer went: its metadata record's figures (`ttft_ms` is null for an
 * answer that came whole), so the route learns from what was measured once, not again.
 */
export type AnswerTimings = Pick<MetadataRecord, "latency_ms" | "ttft_ms" | "output_tokens">;

function average(current: number | null, sample: number, weight: number): number {
  return current === null ? sample : current + weight * (sample - current);
}

/**
 * What Lethe knows about one route's recent behaviour: its circuit breaker, a model of
 * its latency (time to the first token, then milliseconds per output token) as moving
 * averages, and a ring of recent outcomes and TTFT samples for the error rate and p50
 * shown in `lethe routes` and /metrics.
 */
export class RouteStats {
  readonly breaker: CircuitBreaker;
  /** Estimated ms from the request to the first token. */
  ttftEwmaMs: number | null = null;
  /** Estimated ms per output token once generating; only streams show it. */
  msPerTokenEwma: number | null = null;
  /** When the route last answered successfully (the router's clock); null before its first answer. */
  lastAnswerAt: number | null = null;
  /** When lowest-latency last sent a request to measure this route, until its answer. */
  probeSentAt: number | null = null;
  /** Until when (the router's clock) the supplier asked, by a `retry-after`, to be left alone. */
  private restingUntil = 0;
  /** The rest was asked for with a 429: the supplier's rate limit, not a failure of the route. */
  private restForRateLimit = false;
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

  /**
   * A successful answer: feeds the breaker and the latency model. A stream shows both
   * parts, its time to the first token and its generation time per token. An answer that
   * came whole shows only their sum: its latency, less the generation time this route's
   * streams showed (none known: all of it), is what it says about the first token. It
   * never feeds the per-token figure, which would count its wait for the first token
   * twice (once as TTFT, once spread over its tokens).
   */
  recordSuccess(now: number, answer: AnswerTimings, sentAfterMs = 0): void {
    this.breaker.onSuccess();
    this.pushOutcome(true);
    const weight = this.isStale(now) ? 1 : EWMA_WEIGHT;
    this.lastAnswerAt = now;
    this.probeSentAt = null;
    // the record times the whole request: the route is timed from when it was sent
    const latencyMs = Math.max(0, answer.latency_ms - sentAfterMs);
    if (answer.ttft_ms !== null) {
      const ttftMs = Math.max(0, answer.ttft_ms - sentAfterMs);
      this.pushTtft(ttftMs);
      this.ttftEwmaMs = average(this.ttftEwmaMs, ttftMs, weight);
      const generationMs = answer.latency_ms - answer.ttft_ms;
      if (answer.output_tokens > 0 && generationMs > 0) {
        this.msPerTokenEwma = average(this.msPerTokenEwma, generationMs / answer.output_tokens, weight);
      }
      return;
    }
    // the whole answer is the client's first token: the p50 shown counts it as such
    this.pushTtft(latencyMs);
    const generationMs = this.msPerTokenEwma === null ? 0 : answer.output_tokens * this.msPerTokenEwma;
    this.ttftEwmaMs = average(this.ttftEwmaMs, Math.max(0, latencyMs - generationMs), weight);
  }

  /** A failure the route is to blame for (refused, timed out, 429, 5xx, broken stream). */
  recordFailure(now: number): void {
    this.breaker.onFailure(now);
    this.pushOutcome(false);
    // a measuring request that failed leaves probeSentAt set: the route is not measured again
    // before STALE_AFTER_MS (every request would otherwise try it first until its breaker opened)
  }

  /**
   * The supplier answered with a `retry-after`: no request goes to this route until it
   * passes (at most MAX_REST_MS), whichever request asked, so the requests that follow go
   * straight to the model's other routes, or are told when to come back, instead of each
   * spending an attempt on a refusal the supplier already announced. A later, shorter
   * `retry-after` does not cut a rest short.
   */
  rest(now: number, retryAfterSeconds: number, rateLimited: boolean): void {
    const until = now + Math.min(retryAfterSeconds * 1000, MAX_REST_MS);
    if (until <= this.restingUntil) return;
    this.restingUntil = until;
    this.restForRateLimit = rateLimited;
  }

  /** Milliseconds left of the route's rest (0 when it takes requests as far as its supplier said). */
  msUntilRested(now: number): number {
    return this.restingUntil > now ? this.restingUntil - now : 0;
  }

  /** Whether the route is resting at `now` on a 429's `retry-after`. */
  restingForRateLimit(now: number): boolean {
    return this.restForRateLimit && this.restingUntil > now;
  }

  /** Whether a request may be sent on the route now: not resting, and its breaker lets it (without claiming a probe). */
  takesRequests(now: number): boolean {
    return now >= this.restingUntil && this.breaker.isAvailable(now);
  }

  /** A 429 with a `retry-after`: an outcome that failed, for the error rate, but not a breaker failure (attempt-routes.ts). */
  recordRateLimit(): void {
    this.pushOutcome(false);
  }

  /** True when the route has not answered within STALE_AFTER_MS (or never has). */
  isStale(now: number): boolean {
    return this.lastAnswerAt === null || now - this.lastAnswerAt >= STALE_AFTER_MS;
  }

  /** True when a request sent to measure the route is still out (for less than STALE_AFTER_MS). */
  isProbing(now: number): boolean {
    return this.probeSentAt !== null && now - this.probeSentAt < STALE_AFTER_MS;
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

  private pushTtft(ms: number): void {
    this.ttftSamples[this.ttftNext] = ms;
    this.ttftNext = (this.ttftNext + 1) % SAMPLES;
    if (this.ttftCount < SAMPLES) this.ttftCount++;
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
