import type { AccountId, KeyId, ModelId, RequestId, SupplierId } from "../config/ids.js";
import type { ErrorCode } from "../errors/lethe-error.js";

/** The endpoints that produce a metadata record. */
export type Endpoint = "/v1/chat/completions" | "/v1/messages" | "/v1/messages/count_tokens";

/** The client wire formats Lethe serves. */
export type ClientFormat = "openai" | "anthropic";

/**
 * The only thing Lethe keeps per request. Every field is a number, a boolean, a
 * timestamp, an id Lethe minted, or a value from a closed set: there is no field a
 * prompt or a completion could be written into. Beyond the contract's fields,
 * `tokens_estimated` marks counts Lethe computed because the supplier reported none,
 * and `attempts` counts supplier attempts (an integer, never the errors).
 */
export interface MetadataRecord {
  request_id: RequestId;
  /** Epoch milliseconds, UTC. */
  ts: number;
  account: AccountId | null;
  key_id: KeyId | null;
  endpoint: Endpoint;
  client_format: ClientFormat;
  model: ModelId;
  supplier: SupplierId | null;
  status: number;
  error_code: ErrorCode | null;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  reasoning_tokens: number;
  latency_ms: number;
  ttft_ms: number | null;
  output_tokens_per_s: number | null;
  streamed: boolean;
  cache_hit: boolean;
  cost_micros: number;
  tokens_estimated: boolean;
  /** Supplier attempts this request took (0 when it never reached a supplier). */
  attempts: number;
}

/** The record's columns, in storage order; the store and the tests read this list. */
export const METADATA_COLUMNS = [
  "request_id",
  "ts",
  "account",
  "key_id",
  "endpoint",
  "client_format",
  "model",
  "supplier",
  "status",
  "error_code",
  "input_tokens",
  "output_tokens",
  "cached_input_tokens",
  "reasoning_tokens",
  "latency_ms",
  "ttft_ms",
  "output_tokens_per_s",
  "streamed",
  "cache_hit",
  "cost_micros",
  "tokens_estimated",
  "attempts",
] as const satisfies readonly (keyof MetadataRecord)[];
