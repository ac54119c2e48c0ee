import { type Kysely, sql } from "kysely";
import { type AccountId, mintedId, type RequestId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import type { ChangeFeed } from "./change-feed.js";
import { mintId } from "./mint-id.js";
import type { Database } from "./schema.js";

/** What a ledger entry records: money in, money spent on a request, or an operator's correction. */
export type LedgerKind = "top_up" | "debit" | "adjustment";

/** One entry of an account's append-only ledger; the balance is their sum. */
export interface LedgerEntry {
  id: string;
  accountId: AccountId;
  ts: number;
  kind: LedgerKind;
  amountMicros: number;
  requestId: RequestId | null;
}

/** A settled request's charge, written in batches. */
export interface Debit {
  accountId: AccountId;
  amountMicros: number;
  requestId: RequestId;
  ts: number;
  /** The database hold this charge replaces (shared-database mode), deleted with it. */
  holdId?: string | null;
}

/** PostgreSQL's "lock not available" (lock_timeout passed). */
function isLockTimeout(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "55P03";
}

/** How long PostgreSQL lets a ledger transaction sit idle (its client gone) before ending it. */
const IDLE_IN_TRANSACTION_MS = 30_000;

/**
 * The credit ledger. Every change of a balance is an entry plus the matching update
 * of `accounts.balance_micros`, in one transaction, so the balance always equals the
 * sum of the entries.
 */
export class LedgerStore {
  /**
   * `lockTimeoutMs` (PostgreSQL): how long a batch of debits waits for an account row's
   * lock. A row held by something else (an orphaned session, an operator's open
   * transaction) would otherwise hold the batch, and with it the locks it took on every
   * other account's row, which every replica's credit holds then wait on. The batch fails
   * and is retried a flush interval later; meanwhile the other rows are free.
   */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly feed: ChangeFeed,
    private readonly lockTimeoutMs: number | null = null,
  ) {}

  /** Appends a top-up or adjustment; returns the new balance. */
  async credit(accountId: AccountId, amountMicros: number, kind: "top_up" | "adjustment"): Promise<number> {
    const balance = await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto("ledger_entries")
        .values({
          id: mintId("le"),
          account_id: accountId,
          ts: Date.now(),
          kind,
          amount_micros: amountMicros,
          request_id: null,
        })
        .execute();
      await trx
        .updateTable("accounts")
        .set((eb) => ({ balance_micros: eb("balance_micros", "+", amountMicros) }))
        .where("id", "=", accountId)
        .execute();
      const row = await trx
        .selectFrom("accounts")
        .select("balance_micros")
        .where("id", "=", accountId)
        .executeTakeFirstOrThrow();
      const balance = Number(row.balance_micros);
      // the database keeps it exactly, but every reader of the balance is a JavaScript
      // number: past 2^53 micro-units sums go inexact, so such a top-up is undone
      if (balance > Number.MAX_SAFE_INTEGER) {
        throw new LetheError(
          "LETHE_INVALID_REQUEST",
          "This top-up would put the balance above 9007199254.740991, the most Lethe keeps exact.",
          { param: "amount" },
        );
      }
      return balance;
    });
    await this.feed.announce("balances");
    return balance;
  }

  /**
   * Writes settled charges: one debit entry each, and each account's balance lowered by
   * the sum of those written. A request already debited is skipped (migration 0005's
   * unique index): the retry of a batch whose COMMIT went through unseen charges nothing twice.
   */
  async debit(debits: readonly Debit[]): Promise<void> {
    if (debits.length === 0) return;
    try {
      await this.writeDebits(debits);
    } catch (error) {
      // one account's row locked by something else fails the whole batch: the other
      // accounts' debits are written on their own, so their balances move on. The batch is
      // still retried whole; what was written here is skipped then (one debit per request)
      if (!isLockTimeout(error)) throw error;
      const byAccount = new Map<AccountId, Debit[]>();
      for (const debit of debits) {
        const own = byAccount.get(debit.accountId);
        if (own === undefined) byAccount.set(debit.accountId, [debit]);
        else own.push(debit);
      }
      if (byAccount.size === 1) throw error;
      let failed: unknown = null;
      for (const own of byAccount.values()) await this.writeDebits(own).catch((thrown: unknown) => (failed ??= thrown));
      await this.feed.announce("balances");
      if (failed !== null) throw failed;
      return;
    }
    // other replicas cache balances: tell them these moved
    await this.feed.announce("balances");
  }

  /** One transaction: the debit entries, the balances they lower, the holds they replace. */
  private async writeDebits(debits: readonly Debit[]): Promise<void> {
    const chunk = 400;
    await this.db.transaction().execute(async (trx) => {
      if (this.lockTimeoutMs !== null) {
        // this transaction only; a session left idle inside it (its replica gone mid-batch)
        // is ended by the server rather than holding the rows until TCP notices, hours later
        const ms = String(this.lockTimeoutMs);
        await sql`SELECT set_config('lock_timeout', ${ms}, true), set_config('idle_in_transaction_session_timeout', ${String(IDLE_IN_TRANSACTION_MS)}, true)`.execute(
          trx,
        );
      }
      const perAccount = new Map<string, number>();
      for (let start = 0; start < debits.length; start += chunk) {
        const written = await trx
          .insertInto("ledger_entries")
          .values(
            debits.slice(start, start + chunk).map((debit) => ({
              id: mintId("le"),
              account_id: debit.accountId,
              ts: debit.ts,
              kind: "debit",
              amount_micros: -debit.amountMicros,
              request_id: debit.requestId,
            })),
          )
          // the index's own predicate, as a literal: PostgreSQL matches the conflict target to it
          .onConflict((conflict) => conflict.column("request_id").where(sql<boolean>`kind = 'debit'`).doNothing())
          .returning(["account_id", "amount_micros"])
          .execute();
        for (const entry of written) {
          perAccount.set(entry.account_id, (perAccount.get(entry.account_id) ?? 0) - Number(entry.amount_micros));
        }
      }
      // in one order on every replica: two batches locking the same rows in opposite orders deadlock
      const accounts = [...perAccount].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      for (const [accountId, total] of accounts) {
        await trx
          .updateTable("accounts")
          .set((eb) => ({ balance_micros: eb("balance_micros", "-", total) }))
          .where("id", "=", accountId)
          .execute();
      }
      // the charge now stands in the balance: the hold it replaces goes in the same step
      const holds = debits.flatMap((debit) => (debit.holdId ? [debit.holdId] : []));
      if (holds.length > 0) await trx.deleteFrom("credit_holds").where("id", "in", holds).execute();
    });
  }

  /** The account's balance as stored (settled charges only). */
  async balance(accountId: AccountId): Promise<number> {
    const row = await this.db
      .selectFrom("accounts")
      .select("balance_micros")
      .where("id", "=", accountId)
      .executeTakeFirst();
    return row === undefined ? 0 : Number(row.balance_micros);
  }

  /** The sum of the account's entries; equal to its balance by construction (tests check it). */
  async sum(accountId: AccountId): Promise<number> {
    const row = await this.db
      .selectFrom("ledger_entries")
      .select((eb) => eb.fn.sum<number>("amount_micros").as("total"))
      .where("account_id", "=", accountId)
      .executeTakeFirst();
    return Number(row?.total ?? 0);
  }

  /** The most recent entries, newest first. */
  async recent(accountId: AccountId, limit: number): Promise<LedgerEntry[]> {
    const rows = await this.db
      .selectFrom("ledger_entries")
      .selectAll()
      .where("account_id", "=", accountId)
      .orderBy("ts", "desc")
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      id: row.id,
      accountId: mintedId<AccountId>(row.account_id),
      ts: Number(row.ts),
      kind: row.kind as LedgerKind,
      amountMicros: Number(row.amount_micros),
      requestId: row.request_id === null ? null : mintedId<RequestId>(row.request_id),
    }));
  }
}
