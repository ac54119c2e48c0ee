// @ts-check
// The SQLite writer thread: the store's hot writes (metadata records, ledger debits) run
// here, on a connection of its own, so they never hold the event loop. Plain JavaScript
// so that it loads as it is from src/ (vitest does not transform worker threads) and
// from dist/ (tsc copies it, allowJs). It logs nothing: failures go back as codes only.

/** @import { DebitRow, MetadataRow, WriterReply, WriterRequest, WriterSetup } from "./writer-protocol.js" */
/** @import { RolledUp } from "../roll-up-day.js" */

import { randomBytes } from "node:crypto";
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import BetterSqlite3 from "better-sqlite3";
import { dayToRollUp, debitCutoff, rollUpStatements } from "../roll-up-day.js";

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";
const ID_LENGTH = 20;

/** Leading characters of an id that hold the time, so that new ids sort after older ones. */
const TIME_LENGTH = 9;

/**
 * Mints `count` ledger entry ids in mintId's shape (`le_` and 20 base36 characters): the
 * time in milliseconds, then 11 random characters (about 57 bits) from one draw of random
 * bytes for the whole batch. Time first, because the id is the table's primary key: ids
 * that sort in insertion order append to its index instead of landing on random pages,
 * which would rewrite a page of the index per charge at every commit.
 * @param {number} count
 */
function mintEntryIds(count) {
  const time = Date.now().toString(36).padStart(TIME_LENGTH, "0");
  const randomLength = ID_LENGTH - TIME_LENGTH;
  const bytes = randomBytes(count * randomLength);
  const ids = new Array(count);
  for (let index = 0; index < count; index++) {
    let id = `le_${time}`;
    for (let offset = index * randomLength; offset < (index + 1) * randomLength; offset++) {
      id += ALPHABET[/** @type {number} */ (bytes[offset]) % 36];
    }
    ids[index] = id;
  }
  return ids;
}

/** @param {unknown} error a plain, content-free code for the main thread */
function codeOf(error) {
  const code = /** @type {{ code?: unknown }} */ (error)?.code;
  return typeof code === "string" && /^SQLITE_[A-Z_]+$/.test(code) ? code : "SQLITE_WRITE_FAILED";
}

/**
 * Lowers this thread's scheduling priority (Linux: a thread id given to setpriority names
 * that thread alone). On a small machine its commits then yield the CPU to the request
 * path, which is latency-bound, while they still run as soon as a core is free. Elsewhere,
 * or without /proc, the thread keeps the process's priority.
 */
function yieldToRequests() {
  try {
    const threadId = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (Number.isInteger(threadId) && threadId > 0) setPriority(threadId, 10);
  } catch {
    // not Linux, or not allowed: nothing to do
  }
}

yieldToRequests();

const setup = /** @type {WriterSetup} */ (workerData);
const port = parentPort;
if (port === null) throw new Error("sqlite-writer-thread runs as a worker thread");

const database = new BetterSqlite3(setup.file);
for (const pragma of setup.pragmas) database.pragma(pragma);

// a record already there is the same record again (a retry after a commit whose answer was
// lost with a dying thread): skipped, or the meter would retry its batch forever; any other
// constraint still refuses the batch
const insertMetadata = database.prepare(
  `INSERT INTO request_metadata (${setup.metadataColumns.join(", ")}) VALUES (${setup.metadataColumns.map(() => "?").join(", ")}) ON CONFLICT (request_id) DO NOTHING`,
);
// a request already debited is skipped (migration 0005's unique index): the retry of a
// batch whose commit went through unseen must not charge it twice
const insertDebit = database.prepare(
  "INSERT INTO ledger_entries (id, account_id, ts, kind, amount_micros, request_id) VALUES (?, ?, ?, 'debit', ?, ?) ON CONFLICT (request_id) WHERE kind = 'debit' DO NOTHING",
);
const lowerBalance = database.prepare("UPDATE accounts SET balance_micros = balance_micros - ? WHERE id = ?");
// how far this thread's own debits move the store's revision (see revision.ts): the main
// thread's caches then tell them from changes made by anyone else
const readRevision = database.prepare(setup.readRevisionSql).pluck();
const shared = new BigInt64Array(setup.shared);

const writeMetadata = database.transaction(
  /** @param {MetadataRow[]} rows */ (rows) => {
    for (const row of rows) insertMetadata.run(row);
  },
);

// each charge is an entry, and each account's balance drops by their sum, in one transaction
const debitTransaction = database.transaction(
  /** @param {DebitRow[]} rows */ (rows) => {
    const before = Number(readRevision.get());
    const ids = mintEntryIds(rows.length);
    /** @type {Map<string, number>} */
    const perAccount = new Map();
    rows.forEach(([accountId, ts, amountMicros, requestId], index) => {
      // only what was written lowers the balance: it stays the sum of the entries
      if (insertDebit.run(ids[index], accountId, ts, -amountMicros, requestId).changes === 0) return;
      perAccount.set(accountId, (perAccount.get(accountId) ?? 0) + amountMicros);
    });
    for (const [accountId, total] of perAccount) lowerBalance.run(total, accountId);
    const moved = Number(readRevision.get()) - before;
    // odd from here until counted: a reader overlapping the commit retries
    Atomics.add(shared, setup.sequenceSlot, 1n);
    return moved;
  },
);

/**
 * Writes debits under an immediate transaction (the revision read first is then this
 * transaction's own), and counts what they moved the revision by once committed.
 * @param {DebitRow[]} rows
 */
function writeDebits(rows) {
  let moved = null;
  try {
    moved = debitTransaction.immediate(rows);
  } finally {
    if ((Atomics.load(shared, setup.sequenceSlot) & 1n) === 1n) {
      if (moved !== null) Atomics.add(shared, setup.ownMovesSlot, BigInt(moved));
      Atomics.add(shared, setup.sequenceSlot, 1n);
    }
  }
}

// each parameter appears once, in order: plain `?` (better-sqlite3 takes `?NNN` for a named one)
const rollUp = rollUpStatements(() => "?");
const oldestExpired = database.prepare(rollUp.oldest).pluck();
const insertAggregates = database.prepare(rollUp.insert);
const deleteRolledUp = database.prepare(rollUp.remove);
const debitTotals = database.prepare(rollUp.debitTotals);
const deleteDebits = database.prepare(rollUp.removeDebits);
const insertDebitTotal = database.prepare(rollUp.insertDebitTotal);

// immediate: it takes the write lock before it reads, so another process's retention run
// (a second gateway on the same file) waits for it and then finds the day gone
const rollUpDay = database.transaction(
  /** @param {number} cutoffMs @returns {RolledUp} */ (cutoffMs) => {
    const oldest = oldestExpired.get(cutoffMs, debitCutoff(cutoffMs));
    if (oldest === null || oldest === undefined) return { rolledUp: 0, aggregates: 0, debitsCollapsed: 0 };
    const { day, from, to } = dayToRollUp(Number(oldest), cutoffMs);
    const aggregates = insertAggregates.run(day, from, to).changes;
    const rolledUp = deleteRolledUp.run(from, to).changes;
    if (to > debitCutoff(cutoffMs)) return { rolledUp, aggregates, debitsCollapsed: 0 };
    // one IMMEDIATE transaction on the only writer: nothing is debited between the sum and the delete
    const totals = /** @type {{ account_id: string, amount_micros: number }[]} */ (debitTotals.all(from, to));
    const debitsCollapsed = deleteDebits.run(from, to).changes;
    const ids = mintEntryIds(totals.length);
    for (let index = 0; index < totals.length; index++) {
      const total = /** @type {{ account_id: string, amount_micros: number }} */ (totals[index]);
      insertDebitTotal.run(ids[index], total.account_id, from, total.amount_micros);
    }
    return { rolledUp, aggregates, debitsCollapsed };
  },
);

port.on(
  "message",
  /** @param {WriterRequest} request */ (request) => {
    if (request.kind === "close") {
      database.close();
      port.close();
      return;
    }
    /** @type {WriterReply} */
    const reply = { id: request.id, code: null };
    try {
      if (request.kind === "metadata") writeMetadata(request.rows);
      else if (request.kind === "debits") writeDebits(request.rows);
      else reply.rolledUp = rollUpDay.immediate(request.cutoffMs);
    } catch (error) {
      reply.code = codeOf(error);
    }
    port.postMessage(reply);
  },
);
