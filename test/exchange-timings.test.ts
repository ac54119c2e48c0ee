import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { RequestId } from "../src/config/ids.js";
import { Exchange } from "../src/metering/exchange.js";
import { noTokens } from "../src/metering/token-usage.js";

let clock = 0;

/** A streamed exchange whose first token came `firstTokenMs` in and which ends `endMs` in, with `output` tokens. */
function streamed(firstTokenMs: number | null, endMs: number, output: number, choices = 1) {
  const exchange = new Exchange("req_timings" as RequestId, "/v1/chat/completions", "openai");
  exchange.streamed = true;
  exchange.choices = choices;
  exchange.usage = { ...noTokens(), input: 10, output };
  if (firstTokenMs !== null) {
    clock += firstTokenMs;
    exchange.markFirstToken();
    clock += endMs - firstTokenMs;
  } else clock += endMs;
  return exchange.toRecord(200, null);
}

describe("a stream's timings", () => {
  // the exchange reads the monotonic clock: it moves only as each case says
  beforeEach(() => {
    clock = 1_000_000;
    vi.spyOn(performance, "now").mockImplementation(() => clock);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("times a model's throughput from its first token", () => {
    // 500 tokens over 10 s after a 2 s wait: 50 a second
    expect(streamed(2_000, 12_000, 500)).toMatchObject({ ttft_ms: 2_000, output_tokens_per_s: 50 });
  });

  it("times a stream that came in one piece over the whole request, however long its relay took", () => {
    // all in one read, relayed in 0.5 ms: no generation to time (20 tokens over 400.5 ms)
    expect(streamed(400, 400.5, 20).output_tokens_per_s).toBe(49.938);
    // a long buffered answer relayed over 20 ms: 500,000 a second is no model's pace
    expect(streamed(1_980, 2_000, 10_000).output_tokens_per_s).toBe(5_000);
  });

  it("holds each of several answers written side by side (n) to a model's pace, not their sum", () => {
    // eight answers at 1,500 tokens a second each: 12,000 a second in all, and generated
    expect(streamed(1_000, 2_000, 12_000, 8).output_tokens_per_s).toBe(12_000);
  });

  it("gives no throughput to a stream that relayed no token", () => {
    expect(streamed(null, 1_000, 1)).toMatchObject({ ttft_ms: null, output_tokens_per_s: null });
  });
});
