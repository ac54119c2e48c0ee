import pg from "pg";
import { parseDatabaseUrl } from "../../store/postgres/open-postgres-store.js";
import type { MatchSession } from "../pattern-matcher.js";
import type { SourceCount, StoreScanner } from "./store-scanner.js";

/** Rows fetched per round trip from a table's cursor: memory stays flat whatever the table's size. */
const BATCH_ROWS = 500;

/**
 * The relations holding rows in the schema: tables (partitions included, not their
 * parents, which would read them twice) and populated materialized views. With no
 * schema in the URL, Lethe keeps its migration bookkeeping in `public` ($2).
 */
const RELATIONS = `
  SELECT n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
    AND (n.nspname = $1 OR ($2 AND n.nspname = 'public' AND c.relname IN ('lethe_migrations', 'lethe_migration_lock')))
  ORDER BY 1, 2`;

/** Every comment on the schema and on what it holds: relations and their columns, functions. */
const COMMENTS = `
  SELECT d.description FROM pg_description d, pg_namespace n
  WHERE n.nspname = $1 AND (
    (d.classoid = 'pg_namespace'::regclass AND d.objoid = n.oid)
    OR (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = n.oid))
    OR (d.classoid = 'pg_proc'::regclass AND d.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = n.oid)))`;

/** Where a PostgreSQL URL points, without its password. */
function shown(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || "5432"}${parsed.pathname}`;
  } catch {
    return "the configured PostgreSQL";
  }
}

function feedText(session: MatchSession, text: string): number {
  const buffer = Buffer.from(text, "utf8");
  session.feed(buffer);
  return buffer.length;
}

/** A bytea value as row_to_json writes it: `"\\x"` and hex digits, inside the JSON text. */
const BYTEA_IN_JSON = /"\\\\x((?:[0-9a-f]{2})+)"/g;

/**
 * Feeds a row's JSON text, and the bytes of each bytea value in it: row_to_json writes
 * them as hex, in which a canary stored as UTF-16 or base64 bytes would not show.
 */
function feedRow(session: MatchSession, row: string): number {
  let bytes = feedText(session, row);
  if (row.includes('"\\\\x')) {
    for (const match of row.matchAll(BYTEA_IN_JSON)) {
      const raw = Buffer.from(match[1] as string, "hex");
      session.feed(raw);
      bytes += raw.length;
    }
  }
  return bytes;
}

/** Reads one relation through a cursor, a batch of rows at a time, each row as JSON text. */
async function feedRelation(client: pg.Client, relation: string, session: MatchSession, batchRows: number) {
  let bytes = 0;
  // `alias.*`: a column named like the alias would otherwise stand for the row
  await client.query(
    `DECLARE audit_rows NO SCROLL CURSOR FOR SELECT row_to_json(lethe_audit_row.*)::text AS row FROM ${relation} lethe_audit_row`,
  );
  for (;;) {
    const batch = await client.query<{ row: string }>(`FETCH ${batchRows} FROM audit_rows`);
    for (const { row } of batch.rows) bytes += feedRow(session, row);
    if (batch.rows.length < batchRows) break;
  }
  await client.query("CLOSE audit_rows");
  return bytes;
}

/**
 * Every table and materialized view in Lethe's PostgreSQL schema, and every comment on
 * what the schema holds. The schema is the one the URL names, or else the one Lethe's
 * tables land in: the role's current_schema(), the first existing schema of its
 * search_path. Rows are read as text (`row_to_json`) through a cursor in one read-only
 * snapshot. `batchRows` is for tests.
 */
export function postgresStore(url: string, options: { batchRows?: number } = {}): StoreScanner {
  const { connectionString, schema } = parseDatabaseUrl(url);
  const batchRows = options.batchRows ?? BATCH_ROWS;
  let schemaName = schema;
  const connect = async () => {
    const client = new pg.Client({ connectionString, connectionTimeoutMillis: 3_000 });
    client.on("error", () => {});
    await client.connect();
    return client;
  };
  return {
    store: "postgres",
    get description() {
      const where =
        schemaName === null
          ? "the role's current schema"
          : `schema ${schemaName}${schema === null ? " (the role's current_schema(): the URL names none)" : ""}`;
      return `every table, materialized view and comment in ${where} at ${shown(url)}`;
    },
    async unavailable() {
      let client: pg.Client;
      try {
        client = await connect();
      } catch {
        return `cannot reach PostgreSQL at ${shown(url)}`;
      }
      let migrated = false;
      try {
        schemaName ??=
          (await client.query<{ name: string | null }>("SELECT current_schema() AS name")).rows[0]?.name ?? null;
        // Lethe's bookkeeping table says the schema is a deployment's, not a typo in ?schema=
        // (with no schema in the URL, Lethe keeps it in public)
        const found = await client.query<{ found: string | null }>(
          `SELECT coalesce(to_regclass(format('%I.lethe_migrations', $1::text)),
            CASE WHEN $2 THEN to_regclass('public.lethe_migrations') END)::text AS found`,
          [schemaName, schema === null],
        );
        migrated = found.rows[0]?.found != null;
      } finally {
        await client.end();
      }
      if (schemaName === null) return "the role's search_path names no existing schema: where Lethe writes is unknown";
      return migrated ? null : `schema ${schemaName} holds no Lethe tables: not the deployment's schema`;
    },
    async scan(open): Promise<SourceCount> {
      const client = await connect();
      let sources = 0;
      let bytes = 0;
      try {
        // one snapshot: rows cannot move between batches, and nothing is written
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        const relations = await client.query<{ schema: string; name: string }>(RELATIONS, [
          schemaName,
          schema === null,
        ]);
        for (const relation of relations.rows) {
          sources++;
          const identifier = `${client.escapeIdentifier(relation.schema)}.${client.escapeIdentifier(relation.name)}`;
          bytes += await feedRelation(client, identifier, open(), batchRows);
        }
        const comments = await client.query<{ description: string }>(COMMENTS, [schemaName]);
        sources++;
        const session = open();
        for (const { description } of comments.rows) bytes += feedText(session, `${description}\n`);
        await client.query("COMMIT");
      } finally {
        await client.end();
      }
      return { sources, bytes };
    },
  };
}

/** Drops the schema a URL names (the embedded audit's own, once scanned). */
export async function dropSchema(url: string): Promise<void> {
  const { connectionString, schema } = parseDatabaseUrl(url);
  if (schema === null) return;
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 3_000 });
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${client.escapeIdentifier(schema)} CASCADE`);
  } finally {
    await client.end();
  }
}
