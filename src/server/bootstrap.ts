import type { LetheConfig } from "../config/load-config.js";
import { KeyHasher } from "../keys/api-key.js";
import { issueKey } from "../keys/issue-key.js";
import { openStore } from "../store/open-store.js";
import { loadServerSecret } from "../store/server-secret.js";
import { loadSigningKey } from "../store/signing-key.js";
import type { AccountRecord, Store } from "../store/store.js";

/** On a store with no account yet, creates `demo` and returns its first key (to be shown once); else null. */
export async function createDemoAccountIfEmpty(store: Store, hasher: KeyHasher): Promise<string | null> {
  if ((await store.countAccounts()) > 0) return null;
  let account: AccountRecord;
  try {
    account = await store.createAccount({ name: "demo" });
  } catch (error) {
    // replicas starting together on an empty database: another one created it first
    if ((await store.findAccountByName("demo")) !== undefined) return null;
    throw error;
  }
  return (await issueKey(store, hasher, account.id, "first start")).key;
}

/**
 * Runs the store's migrations and makes the server secret and the statement-signing key
 * before any worker starts, so workers starting together on a fresh data dir do not race
 * to do any of it (createOnce makes such a race safe; this makes it rare).
 */
export async function prepareStore(config: LetheConfig): Promise<void> {
  const store = await openStore(config);
  try {
    await loadServerSecret(config.dataDir, config.secret);
    await loadSigningKey(config.dataDir);
  } finally {
    await store.close();
  }
}

/** The cluster primary's first-start step: run once its first worker listens. */
export async function bootstrapDemoAccount(config: LetheConfig): Promise<string | null> {
  const store = await openStore(config);
  try {
    const hasher = new KeyHasher(await loadServerSecret(config.dataDir, config.secret));
    return await createDemoAccountIfEmpty(store, hasher);
  } finally {
    await store.close();
  }
}
