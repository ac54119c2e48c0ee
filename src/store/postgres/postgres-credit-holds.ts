import type { Kysely } from "kysely";
import type pg from "pg";
import type { AccountId } from "../../config/ids.js";
import { CreditHoldStore } from "../credit-hold-store.js";
import type { DatabaseSilence } from "../database-silence.js";
import { mintId } from "../mint-id.js";
import type { Database } from "../schema.js";

/**
 * Bounds on a hold: waiting for the account row's lock, and for PostgreSQL's answer at all
 * (a server that stops answering without closing the connection). Past them the hold
 * fails, and the replica holds in memory against what the database last said was left.
 */
const HOLD_LOCK_TIMEOUT_MS = 3_000;
const HOLD_QUERY_TIMEOUT_MS = 5_000;
/**
 * After a hold waited out HOLD_LOCK_TIMEOUT_MS on its account's row (something else holds
 * it), how long that account's holds fail at once: each would wait the 3 s again.
 */
const LOCKED_BACKOFF_MS = 5_000;
/** PostgreSQL's SQLSTATE for a lock not granted within lock_timeout. */
const LOCK_NOT_AVAILABLE = "55P03";

/**
 * Takes a hold in one call, inside the database: the account row stays locked only
 * while PostgreSQL runs these few statements, never across a round trip or a busy
 * event loop, so a single busy account is not throttled by its own lock. In READ
 * COMMITTED each statement of a PL/pgSQL function gets a fresh snapshot, so the sum
 * sees every hold committed before the lock was granted. Returns the available
 * credit and whether the hold was taken.
 */
const TAKE_HOLD_FUNCTION = `
CREATE OR REPLACE FUNCTION lethe_take_hold(account text, hold text, amount bigint, now_ms bigint, expires_ms bigint)
RETURNS TABLE (taken boolean, available bigint, balance bigint) LANGUAGE plpgsql AS $$
DECLARE
  current_balance bigint;
  held bigint;
BEGIN
  -- a row held longer by another transaction fails the hold, and the replica falls back
  PERFORM set_config('lock_timeout', '${HOLD_LOCK_TIMEOUT_MS}', true);
  -- the account row's lock is released at commit: waiting there for the WAL flush held it
  -- through an fsync per request, which capped one busy account at a few hundred requests a
  -- second. A hold is a reservation that expires on its own; one lost in a database crash
  -- lets the requests then in flight spend without it (the bound docs/billing.md gives)
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT a.balance_micros INTO current_balance FROM accounts a WHERE a.id = account FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT coalesce(sum(h.amount_micros), 0) INTO held FROM credit_holds h
    WHERE h.account_id = account AND h.expires_at > now_ms;
  IF current_balance - held < amount THEN
    RETURN QUERY SELECT false, current_balance - held, current_balance;
    RETURN;
  END IF;
  INSERT INTO credit_holds (id, account_id, amount_micros, expires_at) VALUES (hold, account, amount, expires_ms);
  RETURN QUERY SELECT true, current_balance - held - amount, current_balance;
END;
$$`;

/**
 * Installs (or replaces) the hold function in Lethe's schema. Replicas starting
 * together would collide on the catalog row ("tuple concurrently updated"), so the
 * replacement runs under a transaction-scoped advisory lock.
 */
export async function installHoldFunction(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock(hashtext('lethe_take_hold'))");
    await client.query(TAKE_HOLD_FUNCTION);
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

/** Credit holds on PostgreSQL through `lethe_take_hold`: one round trip per hold. */
export class PostgresCreditHoldStore extends CreditHoldStore {
  /** Accounts the database has answered a hold for: the fallback has something to go on. */
  private readonly answeredFor = new Set<AccountId>();
  /** Accounts whose row was found locked by something else, until when (Date.now() ms). */
  private readonly lockedUntil = new Map<AccountId, number>();

  constructor(
    db: Kysely<Database>,
    private readonly pool: pg.Pool,
    /** Shared with the key cache: a hold left unanswered spares the next requests' key re-checks too. */
    private readonly silence: DatabaseSilence,
  ) {
    super(db);
  }

  override async hold(
    accountId: AccountId,
    upperBound: number,
    exact: () => number,
    now: number,
    ttlMs: number,
  ): Promise<{ holdId: string; amount: number; available: number } | null> {
    if (this.silence.silent && this.answeredFor.has(accountId)) {
      throw new Error("the database did not answer the last hold");
    }
    if (this.lockedUntil.size > 0) {
      const until = this.lockedUntil.get(accountId);
      if (until !== undefined) {
        if (Date.now() < until) throw new Error("the account's row was locked at the last hold");
        this.lockedUntil.delete(accountId);
      }
    }
    const take = async (amount: number) => {
      const holdId = mintId("hold");
      // node-postgres reads query_timeout from a query's config; its types leave it out
      const query: pg.QueryConfig & { query_timeout: number } = {
        text: "SELECT taken, available, balance FROM lethe_take_hold($1, $2, $3, $4, $5)",
        values: [accountId, holdId, Math.ceil(amount), now, now + ttlMs],
        query_timeout: HOLD_QUERY_TIMEOUT_MS,
      };
      const result = await this.pool
        .query<{ taken: boolean; available: string | number; balance: string | number }>(query)
        .catch((error: unknown) => {
          // waited out with no answer from the server at all (its answers, a lock timeout
          // among them, carry a SQLSTATE; a refused connection fails at once): the next holds
          // need not wait for one
          const code = (error as { code?: unknown } | null)?.code;
          if (code === LOCK_NOT_AVAILABLE) this.lockedUntil.set(accountId, Date.now() + LOCKED_BACKOFF_MS);
          const answered = typeof code === "string" && /^[0-9A-Z]{5}$/.test(code);
          if (!answered && error instanceof Error && /timeout/i.test(error.message)) {
            this.silence.noteUnanswered();
          }
          throw error;
        });
      const row = result.rows[0];
      return row === undefined
        ? null
        : { holdId, taken: row.taken, available: Number(row.available), balance: Number(row.balance) };
    };
    const first = await take(upperBound);
    this.answeredFor.add(accountId);
    if (first === null) return null;
    if (first.taken) return { holdId: first.holdId, amount: Math.ceil(upperBound), available: first.available };
    // the generous estimate did not fit: count the input exactly, and try once more if that might
    const amount = exact();
    if (amount > first.available) return null;
    const second = await take(amount);
    return second?.taken ? { holdId: second.holdId, amount: Math.ceil(amount), available: second.available } : null;
  }
}
