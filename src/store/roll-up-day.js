// @ts-check
// Retention's roll-up of raw metadata into daily aggregates, as SQL that both stores run:
// PostgreSQL on its own connection, SQLite on the writer thread (which loads this file as it
// is, like sqlite-writer-thread.js). The database sums and ranks the rows; none of them is
// read into JavaScript. Reading a day of rows into the event loop to aggregate them there
// stalled every request for about 4 s a day at 300k requests a day.
//
// One call rolls up one UTC day, the oldest expired one, in one transaction: the caller
// repeats until nothing is left, so writes (and, on SQLite, the writer thread's metadata
// batches) take turns with it a day at a time.

const DAY_MS = 86_400_000;

/** Nearest-rank percentiles kept per aggregate, as usage-report.ts's `quantile` computes them. */
const PERCENTILES = /** @type {const} */ ([
  ["latency_p50_ms", 50],
  ["latency_p95_ms", 95],
  ["latency_p99_ms", 99],
]);

const SUMMED = ["input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "cost_micros"];

/**
 * @typedef {{ rolledUp: number, aggregates: number, debitsCollapsed: number }} RolledUp raw rows
 * rolled up (and deleted), aggregates written, per-request ledger debits folded into daily totals
 */

/**
 * @typedef {{ oldest: string, insert: string, move: string, remove: string, debitTotals: string,
 *   removeDebits: string, foldDebits: string, insertDebitTotal: string }} RollUpStatements
 * oldest(cutoff, debitCutoff) → the oldest expired ts of raw rows and per-request debits;
 * insert(day, from, to) → aggregates written; remove(from, to) → raw rows deleted (SQLite:
 * the two in one IMMEDIATE transaction); move(day, from, to) → both in one statement, for
 * PostgreSQL, answering each aggregate's `requests` (its parameters are numbered, not in order);
 * debitTotals(from, to) → each account's per-request debits of the day, summed;
 * removeDebits(from, to) → those debits deleted (SQLite: the two in one IMMEDIATE transaction);
 * foldDebits(from, to) → both in one statement, for PostgreSQL, where a debit committed
 * between two statements would be deleted without being summed;
 * insertDebitTotal(id, account, ts, amount)
 */

// a per-request debit: its request id ties an account to a request's time to the millisecond,
// which the raw metadata window bounds; the day's total per account is the billing record left
const PER_REQUEST_DEBITS = "kind = 'debit' AND request_id IS NOT NULL";

/**
 * The roll-up's statements; `param(n)` spells the n-th (1-based) parameter of a statement:
 * `?` on SQLite, `$n` on PostgreSQL. Each parameter appears once, in order.
 * @param {(n: number) => string} param
 * @returns {RollUpStatements}
 */
export function rollUpStatements(param) {
  const group = "account, model, supplier";
  // nearest rank of quantile p in n sorted values: ceil(p·n/100), in integer arithmetic
  const percentiles = PERCENTILES.map(
    ([, p]) => `MIN(CASE WHEN latency_rank = (${p} * latency_count + 99) / 100 THEN latency_ms END)`,
  );
  const columns = ["day", "account", "model", "supplier", "requests", "errors", ...SUMMED];
  /** The day's aggregates of the rows `source` yields, inserted; `day` spells the day's parameter. */
  const aggregate = (/** @type {string} */ day, /** @type {string} */ source) =>
    `INSERT INTO usage_daily (${[...columns, ...PERCENTILES.map(([column]) => column)].join(", ")})
SELECT CAST(${day} AS TEXT), ${group}, COUNT(*), SUM(CASE WHEN error_code IS NULL THEN 0 ELSE 1 END),
  ${SUMMED.map((column) => `SUM(${column})`).join(", ")}, ${percentiles.join(", ")}
FROM (
  SELECT ${group}, error_code, ${SUMMED.join(", ")}, latency_ms,
    ROW_NUMBER() OVER (PARTITION BY ${group} ORDER BY latency_ms) AS latency_rank,
    COUNT(*) OVER (PARTITION BY ${group}) AS latency_count
  FROM ${source}
) ranked
GROUP BY ${group}`;
  const insert = aggregate(param(1), `request_metadata WHERE ts >= ${param(2)} AND ts < ${param(3)}`);
  // PostgreSQL's: the rows deleted are exactly the rows summed, whatever commits between
  // two statements (a record a meter retried after an outage, for a day that is rolling up)
  const move = `WITH moved AS (
  DELETE FROM request_metadata WHERE ts >= ${param(2)} AND ts < ${param(3)}
  RETURNING ${group}, error_code, ${SUMMED.join(", ")}, latency_ms
) ${aggregate(param(1), "moved")}
RETURNING requests`;
  return {
    oldest: `SELECT MIN(oldest) AS oldest FROM (
  SELECT MIN(ts) AS oldest FROM request_metadata WHERE ts < ${param(1)}
  UNION ALL SELECT MIN(ts) AS oldest FROM ledger_entries WHERE ${PER_REQUEST_DEBITS} AND ts < ${param(2)}
) expired`,
    insert,
    move,
    remove: `DELETE FROM request_metadata WHERE ts >= ${param(1)} AND ts < ${param(2)}`,
    debitTotals: `SELECT account_id, SUM(amount_micros) AS amount_micros FROM ledger_entries
WHERE ${PER_REQUEST_DEBITS} AND ts >= ${param(1)} AND ts < ${param(2)} GROUP BY account_id`,
    removeDebits: `DELETE FROM ledger_entries WHERE ${PER_REQUEST_DEBITS} AND ts >= ${param(1)} AND ts < ${param(2)}`,
    foldDebits: `WITH folded AS (
  DELETE FROM ledger_entries WHERE ${PER_REQUEST_DEBITS} AND ts >= ${param(1)} AND ts < ${param(2)}
  RETURNING account_id, amount_micros
) SELECT account_id, SUM(amount_micros) AS amount_micros, COUNT(*) AS debits FROM folded GROUP BY account_id`,
    insertDebitTotal: `INSERT INTO ledger_entries (id, account_id, ts, kind, amount_micros, request_id)
VALUES (${param(1)}, ${param(2)}, ${param(3)}, 'debit', ${param(4)}, NULL)`,
  };
}

/**
 * Per-request debits are folded a day later than raw rows are rolled up: a folded debit no
 * longer names its request, so a charge still being retried then (a lost COMMIT, a backlog)
 * would be written again. A charge waits that long only through a ledger outage of days.
 * @param {number} cutoffMs
 */
export function debitCutoff(cutoffMs) {
  return cutoffMs - DAY_MS;
}

/**
 * The UTC day that holds `oldestTs`, as its YYYY-MM-DD and the [from, to) milliseconds to roll
 * up, ending at `cutoffMs` if that comes first (the cutoff is a day boundary in practice).
 * @param {number} oldestTs
 * @param {number} cutoffMs
 */
export function dayToRollUp(oldestTs, cutoffMs) {
  const from = Math.floor(oldestTs / DAY_MS) * DAY_MS;
  return { day: new Date(from).toISOString().slice(0, 10), from, to: Math.min(from + DAY_MS, cutoffMs) };
}
