import { type Kysely, sql } from "kysely";
import type { AccountId } from "../config/ids.js";
import { mintId } from "./mint-id.js";
import type { Database } from "./schema.js";

/**
 * Credit held in the database, for replicas sharing PostgreSQL: a request's hold is
 * taken under a lock on its account row, against the balance minus every other
 * unexpired hold, so two replicas can never both spend the same credit. A hold
 * lives until its charge is written (in the same transaction), or until it
 * expires, when the replica that took it died.
 */
export class CreditHoldStore {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Takes a hold of `upperBound`, or of `exact()` when that does not fit; null when neither
   * fits. `available` is the credit left once this hold and every other unexpired one are
   * counted: what a replica may spend against, should the database stop answering.
   */
  async hold(
    accountId: AccountId,
    upperBound: number,
    exact: () => number,
    now: number,
    ttlMs: number,
  ): Promise<{ holdId: string; amount: number; available: number } | null> {
    return this.db.transaction().execute(async (trx) => {
      const account = await trx
        .selectFrom("accounts")
        .select("balance_micros")
        .where("id", "=", accountId)
        .forUpdate()
        .executeTakeFirst();
      if (account === undefined) return null;
      const held = await trx
        .selectFrom("credit_holds")
        .select((eb) => eb.fn.sum<number>("amount_micros").as("total"))
        .where("account_id", "=", accountId)
        .where("expires_at", ">", now)
        .executeTakeFirst();
      const available = Number(account.balance_micros) - Number(held?.total ?? 0);
      let amount = upperBound;
      if (amount > available) amount = exact();
      if (amount > available) return null;
      const holdId = mintId("hold");
      await trx
        .insertInto("credit_holds")
        .values({ id: holdId, account_id: accountId, amount_micros: amount, expires_at: now + ttlMs })
        .execute();
      return { holdId, amount, available: available - amount };
    });
  }

  /**
   * Sets holds to what their requests were charged, once they ended: until the charge is
   * written (a batch, up to the flush interval later) the hold stands for it. At its estimate
   * it kept credit the account had from every replica, or, for a request that cost more, let
   * every replica admit requests against credit already spent. A hold already gone with its
   * written charge is not found, and nothing happens.
   */
  async resize(holds: readonly { holdId: string; amount: number }[]): Promise<void> {
    if (holds.length === 0) return;
    // by id, as the ledger's write deletes them: rows locked in one order cannot deadlock it
    const sorted = [...holds].sort((a, b) => (a.holdId < b.holdId ? -1 : 1));
    const amount = sql<number>`CASE id ${sql.join(
      sorted.map((hold) => sql`WHEN ${hold.holdId} THEN ${hold.amount}::bigint`),
      sql` `,
    )} END`;
    await this.db
      .updateTable("credit_holds")
      .set({ amount_micros: amount })
      .where(
        "id",
        "in",
        sorted.map((hold) => hold.holdId),
      )
      .where("amount_micros", "<>", amount)
      .execute();
  }

  /**
   * What each account has left once every unexpired hold is counted, as a hold would find
   * it, read without taking one (accounts not found are left out): a replica's figure for
   * when the database cannot take a hold, kept current as other replicas spend.
   */
  async available(accountIds: readonly AccountId[], now: number): Promise<Map<AccountId, number>> {
    const left = new Map<AccountId, number>();
    if (accountIds.length === 0) return left;
    const { rows } = await sql<{ id: AccountId; available: string | number }>`
      SELECT a.id, a.balance_micros - coalesce((
        SELECT sum(h.amount_micros) FROM credit_holds h WHERE h.account_id = a.id AND h.expires_at > ${now}
      ), 0) AS available
      FROM accounts a WHERE a.id IN (${sql.join(accountIds)})`.execute(this.db);
    for (const row of rows) left.set(row.id, Number(row.available));
    return left;
  }

  /** Releases holds whose requests ended without a charge. */
  async release(holdIds: readonly string[]): Promise<void> {
    if (holdIds.length > 0) await this.db.deleteFrom("credit_holds").where("id", "in", holdIds).execute();
  }

  /** Deletes holds that outlived their replica. */
  async purgeExpired(now: number): Promise<void> {
    await this.db.deleteFrom("credit_holds").where("expires_at", "<=", now).execute();
  }
}
