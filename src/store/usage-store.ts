import { type Kysely, sql } from "kysely";
import type { AccountId } from "../config/ids.js";
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

/** The roll-up's reads and writes, inside the transaction `rollUp` opened. */
async function rollUpWithin(
  db: Kysely<Database>,
  cutoffMs: number,
  aggregate: (rows: UsageSourceRow[]) => UsageDailyTable[],
): Promise<{ rolledUp: number; aggregates: number }> {
  const rows = (
    await db.selectFrom("request_metadata").select(SOURCE_COLUMNS).where("ts", "<", cutoffMs).execute()
  ).map(numeric);
  if (rows.length === 0) return { rolledUp: 0, aggregates: 0 };
  const aggregates = aggregate(rows);
  await insertAggregates(db, aggregates);
  const result = await db.deleteFrom("request_metadata").where("ts", "<", cutoffMs).executeTakeFirst();
  return { rolledUp: Number(result.numDeletedRows), aggregates: aggregates.length };
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
  constructor(
    private readonly db: Kysely<Database>,
    private readonly kind: "sqlite" | "postgres" = "sqlite",
  ) {}

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
   * Rolls the raw rows older than `cutoffMs` up into daily aggregates and deletes them, in
   * one transaction that reads them too: every gateway process runs retention, at nearly the
   * same moments, and two that read the same rows apart from their writes would each store
   * their totals (usage counted twice). On PostgreSQL the runs take turns on an advisory lock
   * and the second finds nothing left. On SQLite the transaction takes the write lock before
   * it reads (BEGIN IMMEDIATE): a deferred one failed its write whenever the writer thread
   * committed metadata in between (SQLITE_BUSY_SNAPSHOT), and retention never got through.
   */
  async rollUp(
    cutoffMs: number,
    aggregate: (rows: UsageSourceRow[]) => UsageDailyTable[],
  ): Promise<{ rolledUp: number; aggregates: number }> {
    if (this.kind === "postgres") {
      return this.db.transaction().execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(hashtext('lethe_retention'))`.execute(trx);
        return rollUpWithin(trx, cutoffMs, aggregate);
      });
    }
    return this.db.connection().execute(async (connection) => {
      await sql`BEGIN IMMEDIATE`.execute(connection);
      try {
        const result = await rollUpWithin(connection, cutoffMs, aggregate);
        await sql`COMMIT`.execute(connection);
        return result;
      } catch (error) {
        await sql`ROLLBACK`.execute(connection).catch(() => {});
        throw error;
      }
    });
  }

  /** Stores daily aggregates as they are (tests seed rolled-up days with it). */
  async storeAggregates(aggregates: readonly UsageDailyTable[]): Promise<void> {
    await insertAggregates(this.db, aggregates);
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
