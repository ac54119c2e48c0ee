import { formatMicros } from "../billing/money.js";
import type { AccountRecord, Store } from "../store/store.js";

/**
 * Everything Lethe holds about an account that is personal or billing data: the
 * account, its keys (display form only), its balance and ledger, and its usage
 * (per day and model from raw metadata, plus rolled-up daily aggregates).
 */
export async function exportAccountData(store: Store, account: AccountRecord): Promise<object> {
  const keys = await store.listKeys(account.id);
  const ledger = await store.ledger.recent(account.id, 100_000);
  // the raw records' totals; the rolled-up days go in the export's usage_aggregates
  const usage = await store.usageByDayAndModel(account.id, 0, true);
  const aggregates = await store.accountAdmin.usageDaily(account.id);
  return {
    exported_at: new Date().toISOString(),
    account: {
      id: account.id,
      name: account.name,
      email: account.email,
      created_at: new Date(account.createdAt).toISOString(),
      rpm: account.rpm,
      tpm: account.tpm,
      zdr_required: account.zdrRequired,
      deleted_at: account.deletedAt === null ? null : new Date(account.deletedAt).toISOString(),
    },
    keys: keys.map((key) => ({
      id: key.id,
      // named as the admin API's key listing names it: the key's display form, never the key
      display: key.display,
      label: key.label,
      created_at: new Date(key.createdAt).toISOString(),
      revoked_at: key.revokedAt === null ? null : new Date(key.revokedAt).toISOString(),
    })),
    balance: formatMicros(account.balanceMicros),
    ledger: ledger.map((entry) => ({
      at: new Date(entry.ts).toISOString(),
      kind: entry.kind,
      amount: formatMicros(entry.amountMicros),
      request_id: entry.requestId,
    })),
    // snake_case, as every other field of the export and of the APIs
    usage: usage.map((row) => ({
      day: row.day,
      model: row.model,
      requests: row.requests,
      errors: row.errors,
      input_tokens: row.inputTokens,
      output_tokens: row.outputTokens,
      cached_input_tokens: row.cachedInputTokens,
      reasoning_tokens: row.reasoningTokens,
      cost: formatMicros(row.costMicros),
    })),
    usage_aggregates: aggregates,
  };
}

/** Deletes an account's personal data (see AccountAdminStore.erase); keys stop working at once. */
export async function deleteAccountData(store: Store, account: AccountRecord): Promise<void> {
  await store.accountAdmin.erase(account.id, Date.now());
}
