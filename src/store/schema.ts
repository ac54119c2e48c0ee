/**
 * The database schema shared by SQLite and PostgreSQL. Times are epoch milliseconds,
 * booleans are 0/1 integers, so the same migrations and queries serve both.
 */
export interface Database {
  accounts: AccountsTable;
  api_keys: ApiKeysTable;
  request_metadata: RequestMetadataTable;
  ledger_entries: LedgerEntriesTable;
  operators: OperatorsTable;
  audit_events: AuditEventsTable;
  usage_daily: UsageDailyTable;
  credit_holds: CreditHoldsTable;
}

export interface CreditHoldsTable {
  id: string;
  account_id: string;
  amount_micros: number;
  expires_at: number;
}

export interface LedgerEntriesTable {
  id: string;
  account_id: string;
  ts: number;
  kind: string;
  amount_micros: number;
  request_id: string | null;
}

export interface OperatorsTable {
  id: string;
  name: string;
  token_hash: string;
  created_at: number;
  revoked_at: number | null;
}

export interface AuditEventsTable {
  id: string;
  ts: number;
  operator_id: string | null;
  action: string;
  /** The operator an operator_* event changed (operator_id is who acted). */
  subject_operator_id: string | null;
  account_id: string | null;
  key_id: string | null;
  amount_micros: number | null;
}

export interface UsageDailyTable {
  day: string;
  account: string | null;
  model: string;
  supplier: string | null;
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  reasoning_tokens: number;
  cost_micros: number;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  latency_p99_ms: number | null;
}

export interface AccountsTable {
  id: string;
  name: string;
  created_at: number;
  rpm: number | null;
  tpm: number | null;
  zdr_required: number;
  balance_micros: number;
  email: string | null;
  deleted_at: number | null;
}

export interface ApiKeysTable {
  id: string;
  account_id: string;
  key_hash: string;
  display: string;
  label: string | null;
  created_at: number;
  revoked_at: number | null;
  rpm: number | null;
  tpm: number | null;
}

export interface RequestMetadataTable {
  request_id: string;
  ts: number;
  account: string | null;
  key_id: string | null;
  endpoint: string;
  client_format: string;
  model: string;
  supplier: string | null;
  status: number;
  error_code: string | null;
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  reasoning_tokens: number;
  latency_ms: number;
  ttft_ms: number | null;
  output_tokens_per_s: number | null;
  streamed: number;
  cache_hit: number;
  cost_micros: number;
  tokens_estimated: number;
  attempts: number;
}
