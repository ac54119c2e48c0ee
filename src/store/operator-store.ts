import type { Kysely } from "kysely";
import type { AdminAction } from "../logging/event-log.js";
import { mintId } from "./mint-id.js";
import type { Database } from "./schema.js";

/** An operator of the admin API, known by the HMAC of its token. */
export interface OperatorRecord {
  id: string;
  name: string;
  tokenHash: string;
  revokedAt: number | null;
}

/** One admin action: who, what, when, on which account or key. Never content. */
export interface AuditEvent {
  /** Who acted: an operator, or null for the CLI. */
  operatorId: string | null;
  action: AdminAction;
  /** The operator an operator_* action changed. */
  subjectOperatorId?: string | null;
  accountId?: string | null;
  keyId?: string | null;
  amountMicros?: number | null;
}

/** Operators of the admin API and the audit trail of what they did. */
export class OperatorStore {
  constructor(private readonly db: Kysely<Database>) {}

  async create(name: string, tokenHash: string): Promise<OperatorRecord> {
    const row = { id: mintId("op"), name, token_hash: tokenHash, created_at: Date.now(), revoked_at: null };
    await this.db.insertInto("operators").values(row).execute();
    return { id: row.id, name, tokenHash, revokedAt: null };
  }

  /** Revokes an operator's token; false when there is no such active operator. Effective on the next admin request. */
  async revoke(name: string): Promise<OperatorRecord | undefined> {
    const operator = await this.findByName(name);
    if (operator === undefined || operator.revokedAt !== null) return undefined;
    await this.db.updateTable("operators").set({ revoked_at: Date.now() }).where("id", "=", operator.id).execute();
    return operator;
  }

  /**
   * Gives an operator a new token (active again if it was revoked): the old one stops
   * working on the next admin request. Undefined when there is no such operator.
   */
  async rotate(name: string, tokenHash: string): Promise<(OperatorRecord & { wasRevoked: boolean }) | undefined> {
    const operator = await this.findByName(name);
    if (operator === undefined) return undefined;
    await this.db
      .updateTable("operators")
      .set({ token_hash: tokenHash, revoked_at: null })
      .where("id", "=", operator.id)
      .execute();
    return { ...operator, tokenHash, revokedAt: null, wasRevoked: operator.revokedAt !== null };
  }

  /** Every operator, by name (tokens as hashes only). */
  async list(): Promise<(OperatorRecord & { createdAt: number })[]> {
    const rows = await this.db.selectFrom("operators").selectAll().orderBy("name").execute();
    return rows.map((row) => ({
      id: row.id,
      name: row.name,
      tokenHash: row.token_hash,
      createdAt: Number(row.created_at),
      revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
    }));
  }

  async findByName(name: string): Promise<OperatorRecord | undefined> {
    const row = await this.db.selectFrom("operators").selectAll().where("name", "=", name).executeTakeFirst();
    return (
      row && {
        id: row.id,
        name: row.name,
        tokenHash: row.token_hash,
        revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
      }
    );
  }

  async findByHash(tokenHash: string): Promise<OperatorRecord | undefined> {
    const row = await this.db
      .selectFrom("operators")
      .selectAll()
      .where("token_hash", "=", tokenHash)
      .executeTakeFirst();
    return (
      row && {
        id: row.id,
        name: row.name,
        tokenHash: row.token_hash,
        revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
      }
    );
  }

  async recordEvent(event: AuditEvent): Promise<void> {
    await this.db
      .insertInto("audit_events")
      .values({
        id: mintId("ae"),
        ts: Date.now(),
        operator_id: event.operatorId,
        action: event.action,
        subject_operator_id: event.subjectOperatorId ?? null,
        account_id: event.accountId ?? null,
        key_id: event.keyId ?? null,
        amount_micros: event.amountMicros ?? null,
      })
      .execute();
  }

  /** The most recent audit events, newest first. */
  async recentEvents(limit: number): Promise<
    {
      ts: number;
      operator_id: string | null;
      action: string;
      subject_operator_id: string | null;
      account_id: string | null;
      key_id: string | null;
      amount_micros: number | null;
    }[]
  > {
    const rows = await this.db.selectFrom("audit_events").selectAll().orderBy("ts", "desc").limit(limit).execute();
    return rows.map((row) => ({
      ...row,
      ts: Number(row.ts),
      amount_micros: row.amount_micros === null ? null : Number(row.amount_micros),
    }));
  }
}
