// What one metadata row costs the SQLite writer thread, by schema: the table as migrations
// make it (a text primary key and two secondary indexes), and variants without some of
// them. Each variant is prefilled with 3 × N rows (a realistic tree), then N more are
// inserted in transactions of 64, as the writer thread does; it prints CPU and wall time
// per row. Run twice in a row: the first round warms the machine.
//
// Usage: node bench/sqlite-insert-bench.mjs [N]   (default 64000)
//
// Session 18's reading: the schema as it is 11.9–14.2 µs CPU a row; without the ts index
// 12.3–12.7; without both secondary indexes 9.3–10.1; a plain rowid table 8.3–9.2. The
// insert itself (22 bound parameters) is the floor; the indexes cost about 3 µs.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
// the record's columns as the store writes them (run `npm run build` first)
import { METADATA_COLUMNS as COLUMNS } from "../dist/metering/metadata-record.js";

const PRAGMAS = ["journal_mode = WAL", "synchronous = NORMAL", "secure_delete = ON", "cache_size = -2048"];
const REST =
  "ts bigint not null, account text, key_id text, endpoint text not null, client_format text not null, " +
  "model text not null, supplier text, status integer not null, error_code text, input_tokens integer not null, " +
  "output_tokens integer not null, cached_input_tokens integer not null, reasoning_tokens integer not null, " +
  "latency_ms double precision not null, ttft_ms double precision, output_tokens_per_s double precision, " +
  "streamed integer not null, cache_hit integer not null, cost_micros bigint not null, " +
  "tokens_estimated integer not null, attempts integer not null default 0";
const TS_INDEX = "CREATE INDEX by_ts ON request_metadata (ts)";
const ACCOUNT_INDEX = "CREATE INDEX by_account ON request_metadata (account, ts)";
const VARIANTS = {
  "as migrated": [`CREATE TABLE request_metadata (request_id text primary key, ${REST})`, TS_INDEX, ACCOUNT_INDEX],
  "without rowid": [
    `CREATE TABLE request_metadata (request_id text primary key, ${REST}) WITHOUT ROWID`,
    TS_INDEX,
    ACCOUNT_INDEX,
  ],
  "no ts index": [`CREATE TABLE request_metadata (request_id text primary key, ${REST})`, ACCOUNT_INDEX],
  "no secondary index": [`CREATE TABLE request_metadata (request_id text primary key, ${REST})`],
  "rowid table only": [`CREATE TABLE request_metadata (request_id text, ${REST})`],
};
const BATCH = 64;
const count = Number(process.argv[2] ?? 64_000);
const start = Date.now();

/** `count` rows in time order from `offset`, shaped like a bench request's record. */
function rows(offset) {
  const out = [];
  for (let index = 0; index < count; index++) {
    const ts = start + Math.floor((offset + index) / 3);
    const id = `req_${ts.toString(36)}abcd${((offset + index) % 1_679_616).toString(36).padStart(4, "0")}`;
    out.push([id, ts, "acct_a", "key_a", "/v1/chat/completions", "openai", "m", "s", 200, null, 12, 9, 0, 0, 1.2]);
    out[index].push(null, null, 0, 0, 123, 0, 1);
  }
  return out;
}

for (const round of [1, 2]) {
  for (const [name, statements] of Object.entries(VARIANTS)) {
    const directory = mkdtempSync(path.join(os.tmpdir(), "lethe-sqlite-bench-"));
    const database = new Database(path.join(directory, "bench.db"));
    for (const pragma of PRAGMAS) database.pragma(pragma);
    for (const statement of statements) database.exec(statement);
    const marks = COLUMNS.map(() => "?").join(", ");
    const insert = database.prepare(`INSERT INTO request_metadata (${COLUMNS.join(", ")}) VALUES (${marks})`);
    const write = database.transaction((batch) => {
      for (const row of batch) insert.run(row);
    });
    for (let fill = 0; fill < 3; fill++) {
      const prefill = rows(fill * count);
      for (let index = 0; index < count; index += BATCH) write(prefill.slice(index, index + BATCH));
    }
    const measured = rows(3 * count);
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    for (let index = 0; index < count; index += BATCH) write(measured.slice(index, index + BATCH));
    const cpu = process.cpuUsage(cpuBefore);
    const wallUs = ((performance.now() - wallBefore) * 1000) / count;
    const cpuUs = (cpu.user + cpu.system) / count;
    process.stdout.write(
      `round ${round}  ${name.padEnd(20)} ${cpuUs.toFixed(2)} µs CPU a row, ${wallUs.toFixed(2)} µs wall\n`,
    );
    database.close();
    rmSync(directory, { recursive: true, force: true });
  }
}
