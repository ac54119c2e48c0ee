import { performance } from "node:perf_hooks";
import type { Reservation } from "../billing/credit-guard.js";
import type { TokenHold } from "../billing/rate-limits.js";
import { type KeyId, type ModelId, type RequestId, type SupplierId, UNKNOWN_MODEL } from "../config/ids.js";
import type { RoutePrice } from "../config/load-config.js";
import type { ErrorCode } from "../errors/lethe-error.js";
import type { AuthContext } from "../keys/authenticator.js";
import { costMicros } from "./cost.js";
import type { ClientFormat, Endpoint, MetadataRecord } from "./metadata-record.js";
import { noTokens, type TokenUsage } from "./token-usage.js";

const NO_TOKENS: TokenUsage = Object.freeze(noTokens());

/**
 * The metadata of one request while it runs: timings, the route taken, token
 * counts. Metadata plane only; it becomes the request's MetadataRecord at the end.
 */
export class Exchange {
  readonly startedAt = performance.now();
  readonly ts = Date.now();
  auth: AuthContext | null = null;
  model: ModelId = UNKNOWN_MODEL;
  supplier: SupplierId | null = null;
  price: RoutePrice | null = null;
  streamed = false;
  zdrEnforced = false;
  usage: TokenUsage | null = null;
  tokensEstimated = false;
  /**
   * The most output the client allowed (`max_tokens` × its choices), when it set a limit: a
   * supplier writes no more of its own tokens, so Lethe's count of an answer, which may read
   * more tokens in the same text than the supplier's tokenizer, is held to it.
   */
  outputCap = Number.POSITIVE_INFINITY;
  /** Answers the supplier writes side by side (OpenAI's `n`): each at a model's pace. */
  choices = 1;
  firstTokenAt: number | null = null;
  /** Supplier attempts so far. */
  attempts = 0;
  /** Credit held for this request, settled when it ends. */
  reservation: Reservation | null = null;
  /** Tokens held against TPM limits, corrected when it ends. */
  tokenHold: TokenHold | null = null;
  /** Bytes of this request's body counted against its account's BodyBudget, given back when it ends. */
  heldBodyBytes = 0;
  /** The record it ended with (finishExchange); the route's health reads its figures. */
  record: MetadataRecord | null = null;
  finished = false;

  constructor(
    readonly requestId: RequestId,
    readonly endpoint: Endpoint,
    readonly clientFormat: ClientFormat,
  ) {}

  /** Lethe's own count of an answer's output, held to what the client allowed (outputCap). */
  estimatedOutput(counted: number): number {
    return counted > this.outputCap ? this.outputCap : counted;
  }

  /** Notes the moment the first output token reached the client (for TTFT). */
  markFirstToken(): void {
    if (this.firstTokenAt === null) this.firstTokenAt = performance.now();
  }

  /**
   * Latency, TTFT and throughput as of now, in milliseconds and tokens per second. A stream's
   * throughput is timed from its first token, unless the rest came with it (a buffering
   * proxy, a cached answer: within MIN_GENERATION_MS, or faster than MAX_GENERATION_RATE),
   * which leaves no generation to time: then over the whole request, as an answer sent
   * whole is. A stream that relayed no token has no throughput.
   */
  private timings(output: number): { latencyMs: number; ttftMs: number | null; outputTokensPerSecond: number | null } {
    const endedAt = performance.now();
    const latencyMs = endedAt - this.startedAt;
    const firstTokenAt = this.streamed ? this.firstTokenAt : this.startedAt;
    let outputTokensPerSecond: number | null = null;
    if (output > 0 && firstTokenAt !== null) {
      const sinceFirst = endedAt - firstTokenAt;
      // no model writes an answer faster than MAX_GENERATION_RATE: past it, the tokens came buffered
      // (and were timed relaying them), so they are timed over the whole request
      const generated =
        sinceFirst >= MIN_GENERATION_MS && output * 1000 <= MAX_GENERATION_RATE * this.choices * sinceFirst;
      const generationMs = generated ? sinceFirst : latencyMs;
      if (generationMs > 0) outputTokensPerSecond = round((output * 1000) / generationMs);
    }
    return {
      latencyMs: round(latencyMs),
      ttftMs: this.streamed && this.firstTokenAt !== null ? round(this.firstTokenAt - this.startedAt) : null,
      outputTokensPerSecond,
    };
  }

  /** Builds the record for this request, ending it now with `status` and `errorCode`. */
  toRecord(status: number, errorCode: ErrorCode | null): MetadataRecord {
    let usage = this.usage ?? NO_TOKENS;
    // every estimate is held to the cap where it is made; this is the backstop for the bill
    if (this.tokensEstimated && usage.output > this.outputCap) usage = { ...usage, output: this.outputCap };
    const timings = this.timings(usage.output);
    const keyId: KeyId | null = this.auth?.keyId ?? null;
    return {
      request_id: this.requestId,
      ts: this.ts,
      account: this.auth?.accountId ?? null,
      key_id: keyId,
      endpoint: this.endpoint,
      client_format: this.clientFormat,
      model: this.model,
      supplier: this.supplier,
      status,
      error_code: errorCode,
      input_tokens: usage.input,
      output_tokens: usage.output,
      cached_input_tokens: usage.cachedInput,
      reasoning_tokens: usage.reasoning,
      latency_ms: timings.latencyMs,
      ttft_ms: timings.ttftMs,
      output_tokens_per_s: timings.outputTokensPerSecond,
      streamed: this.streamed,
      // the supplier read part of the prompt from its prompt cache; Lethe caches no answers (it keeps no content)
      cache_hit: usage.cachedInput > 0,
      cost_micros: this.price === null ? 0 : costMicros(usage, this.price),
      tokens_estimated: this.tokensEstimated,
      attempts: this.attempts,
    };
  }
}

/** A stream whose last token came sooner than this after its first arrived in one piece. */
const MIN_GENERATION_MS = 1;
/**
 * Tokens a second no model streams at (the fastest serve a few thousand): a stream that
 * seems faster arrived in one piece (a buffering proxy, a cached answer) and its relay was timed.
 */
const MAX_GENERATION_RATE = 10_000;

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

let counter = 0;
const processTag = Math.floor(Math.random() * 36 ** 4)
  .toString(36)
  .padStart(4, "0");

let prefixMs = -1;
let prefix = "";

/** Mints a request id: time, a per-process tag and a counter; unique without a syscall. */
export function mintRequestId(): RequestId {
  counter = (counter + 1) % 1_679_616;
  // requests minted in the same millisecond share the formatted time and tag
  const now = Date.now();
  if (now !== prefixMs) {
    prefixMs = now;
    prefix = `req_${now.toString(36)}${processTag}`;
  }
  return `${prefix}${counter.toString(36).padStart(4, "0")}` as RequestId;
}
