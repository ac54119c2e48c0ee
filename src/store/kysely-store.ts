import { type Kysely, sql } from "kysely";
import { type AccountId, type KeyId, mintedId } from "../config/ids.js";
import { boundInTime } from "../lang/bound-in-time.js";
import type { StoreKind } from "../logging/event-log.js";
import type { MetadataRecord } from "../metering/metadata-record.js";
import { AccountAdminStore } from "./account-admin-store.js";
import type { ChangeFeed } from "./change-feed.js";
import { CreditHoldStore } from "./credit-hold-store.js";
import { DatabaseSilence } from "./database-silence.js";
import { LedgerStore } from "./ledger-store.js";
import { mintId } from "./mint-id.js";
import { OperatorStore } from "./operator-store.js";
import type { AccountsTable, ApiKeysTable, Database, RequestMetadataTable } from "./schema.js";
import type { AccountRecord, KeyRecord, Store, UsageRow } from "./store.js";
import { UsageStore } from "./usage-store.js";

const DAY_MS = 86_400_000;

function toAccount(row: AccountsTable): AccountRecord {
  return {
    id: mintedId<AccountId>(row.id),
    name: row.name,
    createdAt: Number(row.created_at),
    rpm: row.rpm,
    tpm: row.tpm,
    zdrRequired: row.zdr_required === 1,
    balanceMicros: Number(row.balance_micros),
    email: row.email,
    deletedAt: row.deleted_at === null ? null : Number(row.deleted_at),
  };
}

function toKey(row: ApiKeysTable): KeyRecord {
  return {
    id: mintedId<KeyId>(row.id),
    accountId: mintedId<AccountId>(row.account_id),
    keyHash: row.key_hash,
    display: row.display,
    label: row.label,
    createdAt: Number(row.created_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
    rpm: row.rpm,
    tpm: row.tpm,
  };
}

function toRow(record: MetadataRecord): RequestMetadataTable {
  return {
    ...record,
    streamed: record.streamed ? 1 : 0,
    cache_hit: record.cache_hit ? 1 : 0,
    tokens_estimated: record.tokens_estimated ? 1 : 0,
  };
}

/** The counters a raw record and a daily aggregate both hold, under the same names. */
const COUNTED_COLUMNS = [
  "input_tokens",
  "output_tokens",
  "cached_input_tokens",
  "reasoning_tokens",
  "cost_micros",
] as const;

/** How long a probe of the database may wait for its answer. */
const PING_WAIT_MS = 2_000;

/** The query layer shared by every SQL dialect Lethe supports. */
export class KyselyStore implements Store {
  /** The database probe in flight, shared by every caller until it answers. */
  private pinging: Promise<boolean> | null = null;

  readonly ledger: LedgerStore;
  readonly accountAdmin: AccountAdminStore;
  readonly usage: UsageStore;
  readonly operators: OperatorStore;
  readonly creditHolds: CreditHoldStore;

  constructor(
    readonly kind: StoreKind,
    protected readonly db: Kysely<Database>,
    private readonly feed: ChangeFeed,
    private readonly onClose: () => Promise<void>,
    ledger: LedgerStore = new LedgerStore(db, feed),
    creditHolds: CreditHoldStore = new CreditHoldStore(db),
    usage: UsageStore = new UsageStore(db),
    readonly silence: DatabaseSilence = new DatabaseSilence(),
  ) {
    this.ledger = ledger;
    this.accountAdmin = new AccountAdminStore(db, feed);
    this.usage = usage;
    this.operators = new OperatorStore(db);
    this.creditHolds = creditHolds;
  }

  changeCounter(): number {
    return this.feed.counter();
  }

  keyChangeCounter(): number {
    return this.feed.keysCounter();
  }

  async createAccount(input: {
    name: string;
    rpm?: number | null;
    tpm?: number | null;
    email?: string | null;
    zdrRequired?: boolean;
  }): Promise<AccountRecord> {
    const row: AccountsTable = {
      id: mintId("acct"),
      name: input.name,
      created_at: Date.now(),
      rpm: input.rpm ?? null,
      tpm: input.tpm ?? null,
      // every account requires ZDR suppliers unless its operator says otherwise
      zdr_required: input.zdrRequired === false ? 0 : 1,
      balance_micros: 0,
      email: input.email ?? null,
      deleted_at: null,
    };
    await this.db.insertInto("accounts").values(row).execute();
    return toAccount(row);
  }

  async findAccountByName(name: string): Promise<AccountRecord | undefined> {
    // PostgreSQL's text cannot hold a NUL, and refuses a query that compares with one (a 500
    // for an admin lookup of /accounts/%00): no account has such a name, on either database
    if (name.includes("\u0000")) return undefined;
    const row = await this.db.selectFrom("accounts").selectAll().where("name", "=", name).executeTakeFirst();
    return row && toAccount(row);
  }

  async findAccountById(id: AccountId): Promise<AccountRecord | undefined> {
    const row = await this.db.selectFrom("accounts").selectAll().where("id", "=", id).executeTakeFirst();
    return row && toAccount(row);
  }

  async countAccounts(): Promise<number> {
    const row = await this.db
      .selectFrom("accounts")
      .select((eb) => eb.fn.countAll<number>().as("count"))
      .executeTakeFirstOrThrow();
    return Number(row.count);
  }

  async createKey(input: {
    accountId: AccountId;
    keyHash: string;
    display: string;
    label: string | null;
    rpm?: number | null;
    tpm?: number | null;
  }): Promise<KeyRecord> {
    const row: ApiKeysTable = {
      id: mintId("key"),
      account_id: input.accountId,
      key_hash: input.keyHash,
      display: input.display,
      label: input.label,
      created_at: Date.now(),
      revoked_at: null,
      rpm: input.rpm ?? null,
      tpm: input.tpm ?? null,
    };
    await this.db.insertInto("api_keys").values(row).execute();
    return toKey(row);
  }

  async listKeys(accountId: AccountId): Promise<KeyRecord[]> {
    const rows = await this.db
      .selectFrom("api_keys")
      .selectAll()
      .where("account_id", "=", accountId)
      .orderBy("created_at")
      .execute();
    return rows.map(toKey);
  }

  async findKeyByHash(keyHash: string): Promise<KeyRecord | undefined> {
    const row = await this.db.selectFrom("api_keys").selectAll().where("key_hash", "=", keyHash).executeTakeFirst();
    return row && toKey(row);
  }

  async findKeyById(id: KeyId): Promise<KeyRecord | undefined> {
    const row = await this.db.selectFrom("api_keys").selectAll().where("id", "=", id).executeTakeFirst();
    return row && toKey(row);
  }

  async revokeKey(id: KeyId): Promise<boolean> {
    const result = await this.db
      .updateTable("api_keys")
      .set({ revoked_at: Date.now() })
      .where("id", "=", id)
      .where("revoked_at", "is", null)
      .executeTakeFirst();
    await this.feed.announce("keys");
    return Number(result.numUpdatedRows) > 0;
  }

  async insertMetadata(records: readonly MetadataRecord[]): Promise<void> {
    if (records.length === 0) return;
    // one multi-row insert per chunk keeps us under SQLite's bound-parameter limit
    const chunk = 400;
    await this.db.transaction().execute(async (trx) => {
      for (let start = 0; start < records.length; start += chunk) {
        await trx
          .insertInto("request_metadata")
          .values(records.slice(start, start + chunk).map(toRow))
          // a retry of a batch whose commit went through unseen (a connection lost after
          // COMMIT) finds its rows there already: skip them rather than fail the batch forever
          .onConflict((conflict) => conflict.column("request_id").doNothing())
          .execute();
      }
    });
  }

  /**
   * An account's totals per UTC day and model since `sinceMs` (and before `untilMs`, when
   * given): raw records, and (unless `rawOnly`) the days retention rolled up.
   */
  async usageByDayAndModel(
    accountId: AccountId,
    sinceMs: number,
    rawOnly = false,
    untilMs?: number,
  ): Promise<UsageRow[]> {
    // one row per record, and (rolled-up days) one per aggregate, summed per day and model below
    const raw = this.db
      .selectFrom("request_metadata")
      .select([
        this.dayExpression().as("day"),
        "model",
        sql<number>`1`.as("requests"),
        sql<number>`case when error_code is null then 0 else 1 end`.as("errors"),
        ...COUNTED_COLUMNS,
      ])
      .where("account", "=", accountId)
      .where("ts", ">=", sinceMs)
      .$if(untilMs !== undefined, (query) => query.where("ts", "<", untilMs as number));
    const source = rawOnly
      ? raw
      : raw.unionAll(
          this.db
            .selectFrom("usage_daily")
            .select(["day", "model", "requests", "errors", ...COUNTED_COLUMNS])
            .where("account", "=", accountId)
            // a rolled-up day keeps no times: counted at its start (as /v1/usage counts it), so
            // only days that start within the window, or a window's totals grow with a roll-up
            .where("day", ">=", new Date(sinceMs + DAY_MS - 1).toISOString().slice(0, 10))
            .$if(untilMs !== undefined, (query) =>
              query.where("day", "<=", new Date((untilMs as number) - 1).toISOString().slice(0, 10)),
            ),
        );
    const rows = await this.db
      .selectFrom(source.as("usage"))
      .select([
        "day",
        "model",
        sql<number>`sum(requests)`.as("requests"),
        sql<number>`sum(errors)`.as("errors"),
        sql<number>`sum(input_tokens)`.as("input_tokens"),
        sql<number>`sum(output_tokens)`.as("output_tokens"),
        sql<number>`sum(cached_input_tokens)`.as("cached_input_tokens"),
        sql<number>`sum(reasoning_tokens)`.as("reasoning_tokens"),
        sql<number>`sum(cost_micros)`.as("cost_micros"),
      ])
      .groupBy(["day", "model"])
      .orderBy("day")
      .orderBy("model")
      .execute();
    return rows.map((row) => ({
      day: String(row.day),
      model: row.model,
      requests: Number(row.requests),
      errors: Number(row.errors),
      inputTokens: Number(row.input_tokens),
      outputTokens: Number(row.output_tokens),
      cachedInputTokens: Number(row.cached_input_tokens),
      reasoningTokens: Number(row.reasoning_tokens),
      costMicros: Number(row.cost_micros),
    }));
  }

  /** The UTC calendar day of `ts`, as YYYY-MM-DD, in this dialect's SQL. */
  protected dayExpression() {
    return this.kind === "sqlite"
      ? sql<string>`strftime('%Y-%m-%d', ts / 1000, 'unixepoch')`
      : sql<string>`to_char(to_timestamp(ts / 1000.0) at time zone 'UTC', 'YYYY-MM-DD')`;
  }

  /**
   * Whether the database answers, within PING_WAIT_MS: a probe (readyz, metrics) must not
   * hang on a database that stopped answering. One query at a time: probes arriving
   * while one is out share it, rather than each leave a stuck query holding a connection.
   */
  ping(): Promise<boolean> {
    this.pinging ??= sql`select 1`
      .execute(this.db)
      .then(
        () => true,
        () => false,
      )
      .finally(() => {
        this.pinging = null;
      });
    return boundInTime(this.pinging, PING_WAIT_MS, () => false);
  }

  async close(): Promise<void> {
    await this.db.destroy();
    await this.onClose();
  }
}
