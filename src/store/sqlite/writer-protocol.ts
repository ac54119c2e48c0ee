// The messages between the store and its SQLite writer thread (sqlite-writer-thread.js).
// Rows travel as positional parameter arrays: structured clone copies them far more
// cheaply than record objects, and every value is already what SQLite binds.

import type { RolledUp } from "../roll-up-day.js";

/** One request_metadata row, in METADATA_COLUMNS order, booleans as 0/1. */
export type MetadataRow = (string | number | null)[];

/** One settled charge: account id, timestamp, amount (positive micro-units), request id. */
export type DebitRow = [accountId: string, ts: number, amountMicros: number, requestId: string];

/** What the writer thread needs to open its own connection to the store's file. */
export interface WriterSetup {
  file: string;
  /** Applied as on the main connection, so both behave alike (WAL, busy timeout, secure_delete…). */
  pragmas: readonly string[];
  metadataColumns: readonly string[];
  /** Shared with the main thread: the writer's own revision moves and its commit sequence (revision.ts). */
  shared: SharedArrayBuffer;
  ownMovesSlot: number;
  sequenceSlot: number;
  readRevisionSql: string;
}

/** A write (one transaction each, handled in the order sent), or the request to finish. */
export type WriterRequest =
  | { id: number; kind: "metadata"; rows: MetadataRow[] }
  | { id: number; kind: "debits"; rows: DebitRow[] }
  | { id: number; kind: "rollUpDay"; cutoffMs: number }
  | { kind: "close" };

/**
 * The answer to one write: `code` is null once committed, else a plain error code (never row
 * contents). A roll-up also tells the raw rows it deleted and the aggregates it wrote.
 */
export interface WriterReply {
  id: number;
  code: string | null;
  rolledUp?: RolledUp;
}
