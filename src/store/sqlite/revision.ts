import type BetterSqlite3 from "better-sqlite3";

/** Tables whose changes the auth cache and the credit guard must see: keys, accounts, the ledger. */
const WATCHED_TABLES = ["api_keys", "accounts", "ledger_entries"] as const;

/**
 * Installs the store's revision: one counter that triggers move on every change to
 * keys, accounts or the ledger, whichever connection or process makes it (the CLI, an
 * operator, another replica). Idempotent; SQLite only (PostgreSQL announces changes with
 * NOTIFY). Request metadata does not move it: the writer thread inserts those constantly.
 */
export function installRevision(database: BetterSqlite3.Database): void {
  database.exec(`CREATE TABLE IF NOT EXISTS lethe_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
  );
  INSERT OR IGNORE INTO lethe_revision (id, value) VALUES (1, 0);`);
  for (const table of WATCHED_TABLES) {
    for (const event of ["INSERT", "UPDATE", "DELETE"]) {
      // a debit entry never comes alone: the same transaction lowers its account's balance,
      // whose trigger moves the revision once per account rather than once per charge
      const when = table === "ledger_entries" && event === "INSERT" ? "WHEN NEW.kind <> 'debit'" : "";
      database.exec(`CREATE TRIGGER IF NOT EXISTS lethe_revision_${table}_${event.toLowerCase()}
        AFTER ${event} ON ${table} ${when}
        BEGIN UPDATE lethe_revision SET value = value + 1 WHERE id = 1; END;`);
    }
  }
}

/** The statement the writer thread reads the revision with, inside its own transactions. */
export const READ_REVISION_SQL = "SELECT value FROM lethe_revision WHERE id = 1";

/** Slots of the shared memory between the store and its writer thread. */
export const OWN_MOVES = 0;
/** Odd while the writer commits and counts; even otherwise (a sequence lock). */
export const WRITER_SEQUENCE = 1;

/**
 * A change counter for this process's caches that moves when anyone but this process's
 * own writer thread changed keys, accounts or the ledger. The writer adds what each of
 * its transactions moved the revision by to `shared[OWN_MOVES]` right after committing,
 * and keeps `shared[WRITER_SEQUENCE]` odd from just before the commit until it has
 * counted, so a consistent read (sequence even and unchanged around it) sees exactly its
 * counted moves in the revision: whatever else moved it was someone else.
 *
 * `PRAGMA data_version` is the cheap first check (it moves on any other connection's
 * commit); only then is the revision read. A read that overlapped a writer commit is
 * retried on the next call rather than trusted.
 */
export function revisionCounter(database: BetterSqlite3.Database, shared: BigInt64Array): () => number {
  const dataVersion = database.prepare("PRAGMA data_version").pluck();
  const revision = database.prepare(READ_REVISION_SQL).pluck();
  let lastVersion: unknown = null;
  let lastRevision: number | null = null;
  let lastOwn = 0n;
  let generation = 0;
  return () => {
    const version = dataVersion.get();
    if (version === lastVersion) return generation;
    const before = Atomics.load(shared, WRITER_SEQUENCE);
    const own = Atomics.load(shared, OWN_MOVES);
    const current = Number(revision.get());
    if ((before & 1n) === 1n || Atomics.load(shared, WRITER_SEQUENCE) !== before) return generation;
    lastVersion = version;
    if (lastRevision !== null && current - lastRevision > Number(own - lastOwn)) generation++;
    lastRevision = current;
    lastOwn = own;
    return generation;
  };
}
