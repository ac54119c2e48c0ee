import type { AccountId } from "../config/ids.js";
import type { KeyRecord, Store } from "../store/store.js";
import { displayKey, type KeyHasher, mintApiKey } from "./api-key.js";

/** Mints a key for an account and stores its HMAC; the key itself is returned once, here. */
export async function issueKey(
  store: Store,
  hasher: KeyHasher,
  accountId: AccountId,
  label: string | null,
  limits: { rpm: number | null; tpm: number | null } = { rpm: null, tpm: null },
): Promise<{ key: string; record: KeyRecord }> {
  const key = mintApiKey();
  const record = await store.createKey({
    accountId,
    keyHash: hasher.hash(key),
    display: displayKey(key),
    label,
    ...limits,
  });
  return { key, record };
}
