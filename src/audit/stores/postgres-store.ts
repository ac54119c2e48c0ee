import pg from "pg";
import { parseDatabaseUrl } from "../../store/postgres/open-postgres-store.js";
import type { StoreScanner } from "./store-scanner.js";

/** Where a PostgreSQL URL points, without its password. */
function shown(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || "5432"}${parsed.pathname}`;
  } catch {
    return "the configured PostgreSQL";
  }
}

/**
 * Every table Lethe owns in its PostgreSQL schema (the schema named in the URL, or
 * `public`): each row is read as text (`row_to_json`) and fed to the matcher, the
 * migration bookkeeping tables included.
 */
export function postgresStore(url: string): StoreScanner {
  const { connectionString, schema } = parseDatabaseUrl(url);
  const schemaName = schema ?? "public";
  const connect = async () => {
    const client = new pg.Client({ connectionString, connectionTimeoutMillis: 3_000 });
    client.on("error", () => {});
    await client.connect();
    return client;
  };
  return {
    store: "postgres",
    description: `every table in schema ${schemaName} at ${shown(url)}`,
    async unavailable() {
      try {
        await (await connect()).end();
        return null;
      } catch {
        return `cannot reach PostgreSQL at ${shown(url)}`;
      }
    },
    async scan(open) {
      const client = await connect();
      let sources = 0;
      let bytes = 0;
      try {
        const tables = await client.query<{ table_name: string }>(
          "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
          [schemaName],
        );
        for (const { table_name: table } of tables.rows) {
          sources++;
          const session = open();
          const identifier = `${client.escapeIdentifier(schemaName)}.${client.escapeIdentifier(table)}`;
          const rows = await client.query<{ row: string }>(`SELECT row_to_json(t)::text AS row FROM ${identifier} t`);
          for (const { row } of rows.rows) {
            const buffer = Buffer.from(row, "utf8");
            bytes += buffer.length;
            session.feed(buffer);
          }
        }
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
