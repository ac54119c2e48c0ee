import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from "kysely";

/**
 * Schema migrations, written once for both SQLite and PostgreSQL with Kysely's
 * schema builder. Append new migrations; never edit a shipped one.
 */
const migrations: Record<string, Migration> = {
  "0001_core": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("accounts")
        .addColumn("id", "text", (column) => column.primaryKey())
        .addColumn("name", "text", (column) => column.notNull().unique())
        .addColumn("created_at", "bigint", (column) => column.notNull())
        .addColumn("rpm", "integer")
        .addColumn("tpm", "integer")
        .addColumn("zdr_required", "integer", (column) => column.notNull().defaultTo(1))
        .execute();
      await db.schema
        .createTable("api_keys")
        .addColumn("id", "text", (column) => column.primaryKey())
        .addColumn("account_id", "text", (column) => column.notNull().references("accounts.id"))
        .addColumn("key_hash", "text", (column) => column.notNull().unique())
        .addColumn("display", "text", (column) => column.notNull())
        .addColumn("label", "text")
        .addColumn("created_at", "bigint", (column) => column.notNull())
        .addColumn("revoked_at", "bigint")
        .execute();
      await db.schema.createIndex("api_keys_account").on("api_keys").column("account_id").execute();
      await db.schema
        .createTable("request_metadata")
        .addColumn("request_id", "text", (column) => column.primaryKey())
        .addColumn("ts", "bigint", (column) => column.notNull())
        .addColumn("account", "text")
        .addColumn("key_id", "text")
        .addColumn("endpoint", "text", (column) => column.notNull())
        .addColumn("client_format", "text", (column) => column.notNull())
        .addColumn("model", "text", (column) => column.notNull())
        .addColumn("supplier", "text")
        .addColumn("status", "integer", (column) => column.notNull())
        .addColumn("error_code", "text")
        .addColumn("input_tokens", "integer", (column) => column.notNull())
        .addColumn("output_tokens", "integer", (column) => column.notNull())
        .addColumn("cached_input_tokens", "integer", (column) => column.notNull())
        .addColumn("reasoning_tokens", "integer", (column) => column.notNull())
        .addColumn("latency_ms", "double precision", (column) => column.notNull())
        .addColumn("ttft_ms", "double precision")
        .addColumn("output_tokens_per_s", "double precision")
        .addColumn("streamed", "integer", (column) => column.notNull())
        .addColumn("cache_hit", "integer", (column) => column.notNull())
        .addColumn("cost_micros", "bigint", (column) => column.notNull())
        .addColumn("tokens_estimated", "integer", (column) => column.notNull())
        .execute();
      await db.schema.createIndex("request_metadata_ts").on("request_metadata").column("ts").execute();
      await db.schema
        .createIndex("request_metadata_account_ts")
        .on("request_metadata")
        .columns(["account", "ts"])
        .execute();
    },
  },
  "0002_attempts": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable("request_metadata")
        .addColumn("attempts", "integer", (column) => column.notNull().defaultTo(0))
        .execute();
    },
  },
  "0003_billing": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable("accounts")
        .addColumn("balance_micros", "bigint", (column) => column.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable("accounts").addColumn("email", "text").execute();
      await db.schema.alterTable("accounts").addColumn("deleted_at", "bigint").execute();
      await db.schema.alterTable("api_keys").addColumn("rpm", "integer").execute();
      await db.schema.alterTable("api_keys").addColumn("tpm", "integer").execute();
      await db.schema
        .createTable("ledger_entries")
        .addColumn("id", "text", (column) => column.primaryKey())
        .addColumn("account_id", "text", (column) => column.notNull())
        .addColumn("ts", "bigint", (column) => column.notNull())
        .addColumn("kind", "text", (column) => column.notNull())
        .addColumn("amount_micros", "bigint", (column) => column.notNull())
        .addColumn("request_id", "text")
        .execute();
      await db.schema
        .createIndex("ledger_entries_account_ts")
        .on("ledger_entries")
        .columns(["account_id", "ts"])
        .execute();
      await db.schema
        .createTable("operators")
        .addColumn("id", "text", (column) => column.primaryKey())
        .addColumn("name", "text", (column) => column.notNull().unique())
        .addColumn("token_hash", "text", (column) => column.notNull().unique())
        .addColumn("created_at", "bigint", (column) => column.notNull())
        .addColumn("revoked_at", "bigint")
        .execute();
      await db.schema
        .createTable("audit_events")
        .addColumn("id", "text", (column) => column.primaryKey())
        .addColumn("ts", "bigint", (column) => column.notNull())
        .addColumn("operator_id", "text")
        .addColumn("action", "text", (column) => column.notNull())
        .addColumn("account_id", "text")
        .addColumn("key_id", "text")
        .addColumn("amount_micros", "bigint")
        .execute();
      await db.schema
        .createTable("usage_daily")
        .addColumn("day", "text", (column) => column.notNull())
        .addColumn("account", "text")
        .addColumn("model", "text", (column) => column.notNull())
        .addColumn("supplier", "text")
        .addColumn("requests", "integer", (column) => column.notNull())
        .addColumn("errors", "integer", (column) => column.notNull())
        .addColumn("input_tokens", "bigint", (column) => column.notNull())
        .addColumn("output_tokens", "bigint", (column) => column.notNull())
        .addColumn("cached_input_tokens", "bigint", (column) => column.notNull())
        .addColumn("reasoning_tokens", "bigint", (column) => column.notNull())
        .addColumn("cost_micros", "bigint", (column) => column.notNull())
        .addColumn("latency_p50_ms", "double precision")
        .addColumn("latency_p95_ms", "double precision")
        .addColumn("latency_p99_ms", "double precision")
        .execute();
      await db.schema.createIndex("usage_daily_account_day").on("usage_daily").columns(["account", "day"]).execute();
    },
  },
  "0004_credit_holds": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("credit_holds")
        .addColumn("id", "text", (column) => column.primaryKey())
        .addColumn("account_id", "text", (column) => column.notNull())
        .addColumn("amount_micros", "bigint", (column) => column.notNull())
        .addColumn("expires_at", "bigint", (column) => column.notNull())
        .execute();
      await db.schema
        .createIndex("credit_holds_account")
        .on("credit_holds")
        .columns(["account_id", "expires_at"])
        .execute();
    },
  },
  "0005_debit_once": {
    async up(db: Kysely<unknown>) {
      // a request is debited once: a ledger batch retried after a COMMIT whose answer was
      // lost finds its debits there and skips them (ledger-store.ts, the SQLite writer).
      // Duplicates written before this keep their amounts (the balance is the sum of the
      // entries) under a marked request id, so that the index can be built.
      await sql`UPDATE ledger_entries SET request_id = request_id || '~duplicate~' || id
        WHERE kind = 'debit' AND request_id IS NOT NULL AND id NOT IN (
          SELECT min(id) FROM ledger_entries WHERE kind = 'debit' AND request_id IS NOT NULL GROUP BY request_id
        )`.execute(db);
      await sql`CREATE UNIQUE INDEX ledger_entries_debit_request ON ledger_entries (request_id) WHERE kind = 'debit'`.execute(
        db,
      );
    },
  },
  "0006_debit_fold": {
    // retention folds a day's per-request debits into daily totals (roll-up-day.js): without
    // this, each hourly run read the whole ledger (0.5 s holding SQLite's writer at 3 M rows)
    async up(db) {
      await sql`CREATE INDEX ledger_entries_request_debit_ts ON ledger_entries (ts)
        WHERE kind = 'debit' AND request_id IS NOT NULL`.execute(db);
    },
  },
  "0007_audit_event_operator": {
    // the operator an operator_* event is about, apart from who acted (operator_id, null
    // for the CLI): the CLI's changes to operators read as that operator's own acts before
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable("audit_events").addColumn("subject_operator_id", "text").execute();
      // only the CLI ever wrote these, with the operator it changed as operator_id
      await sql`UPDATE audit_events SET subject_operator_id = operator_id, operator_id = NULL
        WHERE action IN ('operator_create', 'operator_rotate', 'operator_revoke', 'operator_reinstate')`.execute(db);
    },
  },
};

const provider: MigrationProvider = {
  async getMigrations() {
    return migrations;
  },
};

/**
 * Brings the schema up to date; on PostgreSQL Kysely's migrator takes a lock so concurrent
 * replicas are safe (on SQLite it takes none: openSqliteStore holds an exclusive
 * transaction). On PostgreSQL `schema` names where Lethe's tables live: Kysely looks for
 * its bookkeeping tables across every schema otherwise, and would find another
 * deployment's.
 */
export async function migrateToLatest(db: Kysely<unknown>, schema?: string): Promise<void> {
  const migrator = new Migrator({
    db,
    provider,
    migrationTableName: "lethe_migrations",
    migrationLockTableName: "lethe_migration_lock",
    ...(schema !== undefined && { migrationTableSchema: schema }),
  });
  const { error } = await migrator.migrateToLatest();
  if (error) {
    const failure = new Error(`database migration failed: ${error instanceof Error ? error.message : "unknown error"}`);
    // the driver's code (SQLITE_BUSY, a PostgreSQL SQLSTATE) is what the CLI may print of it
    const code = (error as { code?: unknown }).code;
    throw Object.assign(failure, { name: "MigrationError", ...(typeof code === "string" && { driverCode: code }) });
  }
}
