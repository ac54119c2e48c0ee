import type { AccountId, KeyId, ModelId, RequestId, SupplierId } from "../../src/config/ids.js";
import type { MetadataRecord } from "../../src/metering/metadata-record.js";

let counter = 0;

/** The epoch milliseconds of a UTC day (YYYY-MM-DD) plus `hours`. */
export function at(day: string, hours = 12): number {
  return Date.parse(`${day}T00:00:00Z`) + hours * 3_600_000;
}

/** The UTC day `days` before `now`, as YYYY-MM-DD. */
export function daysBefore(now: number, days: number): string {
  return new Date(now - days * 86_400_000).toISOString().slice(0, 10);
}

/** A metadata record as the meter writes it, with round defaults; tests override what they check. */
export function metadataRecord(
  fields: Partial<Omit<MetadataRecord, "account" | "key_id" | "model" | "supplier">> & {
    account: string | null;
    key_id?: string | null;
    model?: string;
    supplier?: string | null;
  },
): MetadataRecord {
  counter++;
  return {
    request_id: `req_seeded${String(counter).padStart(8, "0")}` as RequestId,
    ts: Date.now(),
    endpoint: "/v1/chat/completions",
    client_format: "openai",
    status: 200,
    error_code: null,
    input_tokens: 100,
    output_tokens: 50,
    cached_input_tokens: 0,
    reasoning_tokens: 0,
    latency_ms: 100,
    ttft_ms: null,
    output_tokens_per_s: null,
    streamed: false,
    cache_hit: false,
    cost_micros: 600,
    tokens_estimated: false,
    attempts: 1,
    ...fields,
    account: fields.account as AccountId | null,
    key_id: (fields.key_id ?? null) as KeyId | null,
    model: (fields.model ?? "billed-gpt") as ModelId,
    supplier: (fields.supplier === undefined ? "fake-openai" : fields.supplier) as SupplierId | null,
  };
}
