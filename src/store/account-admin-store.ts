import { type Kysely, SqliteAdapter, sql } from "kysely";
import type { AccountId } from "../config/ids.js";
import type { ChangeFeed } from "./change-feed.js";
import type { Database, UsageDailyTable } from "./schema.js";

/**
 * Operator-side account operations that touch several tables: limit and ZDR changes, the
 * erasure of an account's personal data, and what an export needs beyond the
 * account row.
 */
export class AccountAdminStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly feed: ChangeFeed,
  ) {}

  /** Every account, oldest first, deleted ones included (their names are pseudonyms). */
  async listAccountIds(): Promise<{ id: string; name: string }[]> {
    return this.db.selectFrom("accounts").select(["id", "name"]).orderBy("created_at").execute();
  }

  /**
   * Changes an account's limits (null restores the configured default) and whether its
   * requests require ZDR suppliers (required unless the operator says otherwise).
   */
  async updateSettings(
    accountId: AccountId,
    limits: { rpm?: number | null | undefined; tpm?: number | null | undefined; zdrRequired?: boolean | undefined },
  ): Promise<void> {
    const changes: { rpm?: number | null; tpm?: number | null; zdr_required?: number } = {};
    if (limits.rpm !== undefined) changes.rpm = limits.rpm;
    if (limits.tpm !== undefined) changes.tpm = limits.tpm;
    if (limits.zdrRequired !== undefined) changes.zdr_required = limits.zdrRequired ? 1 : 0;
    if (Object.keys(changes).length === 0) return;
    await this.db.updateTable("accounts").set(changes).where("id", "=", accountId).execute();
    await this.feed.announce("keys");
  }

  /** The account's daily usage aggregates (rolled up from expired raw metadata). */
  async usageDaily(accountId: AccountId): Promise<UsageDailyTable[]> {
    return this.db.selectFrom("usage_daily").selectAll().where("account", "=", accountId).orderBy("day").execute();
  }

  /**
   * Erases an account: revokes its keys at once, replaces its name by its pseudonym,
   * drops its email, and unlinks its metadata and aggregates from it. The ledger stays
   * (a legal record), keyed by the pseudonymous id only.
   */
  async erase(accountId: AccountId, now: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx
        .updateTable("api_keys")
        .set({ revoked_at: now, label: null })
        .where("account_id", "=", accountId)
        .where("revoked_at", "is", null)
        .execute();
      await trx.updateTable("api_keys").set({ label: null }).where("account_id", "=", accountId).execute();
      await trx
        .updateTable("accounts")
        .set({ name: `deleted-${accountId}`, email: null, deleted_at: now })
        .where("id", "=", accountId)
        .execute();
      await trx
        .updateTable("request_metadata")
        .set({ account: null, key_id: null })
        .where("account", "=", accountId)
        .execute();
      await trx.updateTable("usage_daily").set({ account: null }).where("account", "=", accountId).execute();
    });
    if (this.db.getExecutor().adapter instanceof SqliteAdapter) {
      // in WAL mode the erased values live on in old WAL frames until the WAL is reset: write
      // them into the database file (whose freed space secure_delete zeroes) and empty the WAL
      await sql`PRAGMA wal_checkpoint(TRUNCATE)`.execute(this.db);
    }
    await this.feed.announce("keys");
  }
}
