import { CompiledQuery, type Kysely, sql } from "kysely";
import type { AccountId } from "../config/ids.js";
import { mintId } from "./mint-id.js";
import type { RolledUp } from "./roll-up-day.js";
import { dayToRollUp, debitCutoff, rollUpStatements } from "./roll-up-day.js";
import type { Database, RequestMetadataTable, UsageDailyTable } from "./schema.js";

/** The columns usage reports read from raw metadata. */
export type UsageSourceRow = Pick<
  RequestMetadataTable,
  | "ts"
  | "account"
  | "model"
  | "supplier"
  | "key_id"
  | "error_code"
  | "input_tokens"
  | "output_tokens"
  | "cached_input_tokens"
  | "reasoning_tokens"
  | "cost_micros"
  | "latency_ms"
>;

const SOURCE_COLUMNS = [
  "ts",
  "account",
  "model",
  "supplier",
  "key_id",
  "error_code",
  "input_tokens",
  "output_tokens",
  "cached_input_tokens",
  "reasoning_tokens",
  "cost_micros",
  "latency_ms",
] as const;

function numeric(row: UsageSourceRow): UsageSourceRow {
  return {
    ...row,
    ts: Number(row.ts),
    input_tokens: Number(row.input_tokens),
    output_tokens: Number(row.output_tokens),
    cached_input_tokens: Number(row.cached_input_tokens),
    reasoning_tokens: Number(row.reasoning_tokens),
    cost_micros: Number(row.cost_micros),
    latency_ms: Number(row.latency_ms),
  };
}

/** One UTC day's roll-up (roll-up-day.js), in one transaction; nothing rolled up once no day is left. */
export type RollUpDay = (cutoffMs: number) => Promise<RolledUp>;

const POSTGRES_ROLL_UP = rollUpStatements((n) => `$${n}`);

/**
 * One day's roll-up on PostgreSQL. Every gateway process runs retention at nearly the same
 * moments: the runs take turns on an advisory lock, and the second finds the day gone (two
 * that read the same rows apart from their writes would each store their totals).
 */
export function postgresRollUpDay(db: Kysely<Database>): RollUpDay {
  return (cutoffMs) =>
    db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext('lethe_retention'))`.execute(trx);
      const oldest = await trx.executeQuery<{ oldest: string | number | null }>(
        CompiledQuery.raw(POSTGRES_ROLL_UP.oldest, [cutoffMs, debitCutoff(cutoffMs)]),
      );
      const oldestTs = oldest.rows[0]?.oldest;
      if (oldestTs === null || oldestTs === undefined) return { rolledUp: 0, aggregates: 0, debitsCollapsed: 0 };
      const { day, from, to } = dayToRollUp(Number(oldestTs), cutoffMs);
      // one statement: the aggregates are of exactly the rows it deleted, whatever commits meanwhile
      const moved = await trx.executeQuery<{ requests: string | number }>(
        CompiledQuery.raw(POSTGRES_ROLL_UP.move, [day, from, to]),
      );
      let debitsCollapsed = 0;
      if (to <= debitCutoff(cutoffMs)) {
        // one statement: the sums are of exactly the debits it deleted, whatever commits meanwhile
        const folded = await trx.executeQuery<{
          account_id: string;
          amount_micros: string | number;
          debits: string | number;
        }>(CompiledQuery.raw(POSTGRES_ROLL_UP.foldDebits, [from, to]));
        for (const total of folded.rows) {
          debitsCollapsed += Number(total.debits);
          await trx.executeQuery(
            CompiledQuery.raw(POSTGRES_ROLL_UP.insertDebitTotal, [
              mintId("le"),
              total.account_id,
              from,
              Number(total.amount_micros),
            ]),
          );
        }
      }
      let rolledUp = 0;
      for (const aggregate of moved.rows) rolledUp += Number(aggregate.requests);
      return { rolledUp, aggregates: moved.rows.length, debitsCollapsed };
    });
}

/** Inserts aggregates a couple of hundred rows per statement (SQLite binds at most 32,766 values). */
async function insertAggregates(db: Kysely<Database>, aggregates: readonly UsageDailyTable[]): Promise<void> {
  for (let start = 0; start < aggregates.length; start += 200) {
    await db
      .insertInto("usage_daily")
      .values(aggregates.slice(start, start + 200))
      .execute();
  }
}

/** Reads metadata for usage reports, and rolls expired metadata into daily aggregates. */
export class UsageStore {
  private readonly rollUpDay: RollUpDay;

  /** `rollUpDay` defaults to PostgreSQL's; the SQLite store hands its writer thread's. */
  constructor(
    private readonly db: Kysely<Database>,
    rollUpDay?: RollUpDay,
  ) {
    this.rollUpDay = rollUpDay ?? postgresRollUpDay(db);
  }

  /** An account's raw metadata rows in [fromMs, toMs). */
  async rawRows(accountId: AccountId, fromMs: number, toMs: number): Promise<UsageSourceRow[]> {
    const rows = await this.db
      .selectFrom("request_metadata")
      .select(SOURCE_COLUMNS)
      .where("account", "=", accountId)
      .where("ts", ">=", fromMs)
      .where("ts", "<", toMs)
      .execute();
    return rows.map(numeric);
  }

  /** An account's daily aggregates for days in [fromDay, toDay] (YYYY-MM-DD). */
  async dailyRows(accountId: AccountId, fromDay: string, toDay: string): Promise<UsageDailyTable[]> {
    return this.db
      .selectFrom("usage_daily")
      .selectAll()
      .where("account", "=", accountId)
      .where("day", ">=", fromDay)
      .where("day", "<=", toDay)
      .execute();
  }

  /** Every raw row older than `cutoffMs`, for the retention roll-up. */
  async expiredRows(cutoffMs: number): Promise<UsageSourceRow[]> {
    const rows = await this.db
      .selectFrom("request_metadata")
      .select(SOURCE_COLUMNS)
      .where("ts", "<", cutoffMs)
      .execute();
    return rows.map(numeric);
  }

  /**
   * Rolls the raw rows older than `cutoffMs` up into daily aggregates (per account, model and
   * supplier) and deletes them, and folds that day's per-request ledger debits into one
   * debit per account (the balance, their sum, is unchanged), a day per transaction, oldest
   * first, until none is left.
   */
  async rollUp(cutoffMs: number): Promise<RolledUp> {
    const total = { rolledUp: 0, aggregates: 0, debitsCollapsed: 0 };
    for (;;) {
      const day = await this.rollUpDay(cutoffMs);
      if (day.rolledUp === 0 && day.debitsCollapsed === 0) return total;
      total.rolledUp += day.rolledUp;
      total.aggregates += day.aggregates;
      total.debitsCollapsed += day.debitsCollapsed;
    }
  }

  /** Stores daily aggregates as they are (tests seed rolled-up days with it). */
  async storeAggregates(aggregates: readonly UsageDailyTable[]): Promise<void> {
    await insertAggregates(this.db, aggregates);
  }

  /**
   * Unlinks from erased accounts the records written after their erasure: requests still in
   * flight when the account was deleted, and batches another process had not yet written.
   */
  async unlinkErased(): Promise<number> {
    const erased = this.db.selectFrom("accounts").select("id").where("deleted_at", "is not", null);
    const records = await this.db
      .updateTable("request_metadata")
      .set({ account: null, key_id: null })
      .where("account", "in", erased)
      .executeTakeFirst();
    const aggregates = await this.db
      .updateTable("usage_daily")
      .set({ account: null })
      .where("account", "in", erased)
      .executeTakeFirst();
    return Number(records.numUpdatedRows) + Number(aggregates.numUpdatedRows);
  }

  /** Unlinks aggregates older than `beforeDay` from their accounts. */
  async dropPseudonyms(beforeDay: string): Promise<number> {
    const result = await this.db
      .updateTable("usage_daily")
      .set({ account: null })
      .where("day", "<", beforeDay)
      .where("account", "is not", null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }
}
