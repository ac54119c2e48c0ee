import type { AccountId, KeyId } from "../config/ids.js";
import type { StoreKind } from "../logging/event-log.js";
import type { MetadataRecord } from "../metering/metadata-record.js";
import type { AccountAdminStore } from "./account-admin-store.js";
import type { CreditHoldStore } from "./credit-hold-store.js";
import type { DatabaseSilence } from "./database-silence.js";
import type { LedgerStore } from "./ledger-store.js";
import type { OperatorStore } from "./operator-store.js";
import type { UsageStore } from "./usage-store.js";

/** An account as the store keeps it. `name` is the operator's label, never written to metadata. */
export interface AccountRecord {
  id: AccountId;
  name: string;
  createdAt: number;
  rpm: number | null;
  tpm: number | null;
  zdrRequired: boolean;
  /** Credit balance in micro-units: the sum of the account's ledger entries. */
  balanceMicros: number;
  /** A contact address: personal data, erased when the account is deleted. */
  email: string | null;
  deletedAt: number | null;
}

/** An API key as the store keeps it: only its HMAC and a display form, never the key. */
export interface KeyRecord {
  id: KeyId;
  accountId: AccountId;
  keyHash: string;
  display: string;
  label: string | null;
  createdAt: number;
  revokedAt: number | null;
  /** The key's own limits, under its account's; null for none. */
  rpm: number | null;
  tpm: number | null;
}

/** One row of `lethe usage`: totals of one account for one UTC day and model. */
export interface UsageRow {
  day: string;
  model: string;
  requests: number;
  errors: number;
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens: number;
  reasoningTokens: number;
  costMicros: number;
}

/** Lethe's persistence, the same contract over SQLite and PostgreSQL. Metadata plane only. */
export interface Store {
  readonly kind: StoreKind;
  /**
   * A number that changes whenever another process may have changed keys, accounts or
   * balances. Cheap and synchronous, so the balance cache can check it on every request.
   */
  changeCounter(): number;
  /** The same for keys and accounts only (not balance moves): what the auth cache checks. */
  keyChangeCounter(): number;
  createAccount(input: {
    name: string;
    rpm?: number | null;
    tpm?: number | null;
    email?: string | null;
    /** Whether its requests require ZDR suppliers; true when not given. */
    zdrRequired?: boolean;
  }): Promise<AccountRecord>;
  findAccountByName(name: string): Promise<AccountRecord | undefined>;
  findAccountById(id: AccountId): Promise<AccountRecord | undefined>;
  countAccounts(): Promise<number>;
  createKey(input: {
    accountId: AccountId;
    keyHash: string;
    display: string;
    label: string | null;
    rpm?: number | null;
    tpm?: number | null;
  }): Promise<KeyRecord>;
  listKeys(accountId: AccountId): Promise<KeyRecord[]>;
  findKeyByHash(keyHash: string): Promise<KeyRecord | undefined>;
  findKeyById(id: KeyId): Promise<KeyRecord | undefined>;
  /** Marks a key revoked; returns false when it was already revoked or does not exist. */
  revokeKey(id: KeyId): Promise<boolean>;
  insertMetadata(records: readonly MetadataRecord[]): Promise<void>;
  usageByDayAndModel(accountId: AccountId, sinceMs: number, rawOnly?: boolean, untilMs?: number): Promise<UsageRow[]>;
  readonly ledger: LedgerStore;
  readonly accountAdmin: AccountAdminStore;
  readonly usage: UsageStore;
  readonly operators: OperatorStore;
  readonly creditHolds: CreditHoldStore;
  /** Whether the database went silent lately: callers that can do without it skip their wait. */
  readonly silence: DatabaseSilence;
  /** Whether the database answers; readiness reads it. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}
