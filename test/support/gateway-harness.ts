import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { DEFAULT_CONFIG_FILE, resolveConfig } from "../../src/config/load-config.js";
import { KeyHasher } from "../../src/keys/api-key.js";
import { issueKey } from "../../src/keys/issue-key.js";
import type { MetadataRecord } from "../../src/metering/metadata-record.js";
import { type RunningGateway, startGateway } from "../../src/server/start-gateway.js";
import { loadServerSecret } from "../../src/store/server-secret.js";

/** A gateway running in this process on a loopback port, with its log lines captured. */
export interface TestGateway {
  url: string;
  /** For the openai SDK: `${url}/v1`. */
  baseURL: string;
  /** The `demo` account's first-start key. */
  key: string;
  dataDir: string;
  running: RunningGateway;
  /** Every log line the gateway printed so far. */
  logText(): string;
  /** Mints another key for an account (creating the account when needed). */
  createKey(accountName?: string): Promise<{ key: string; keyId: string }>;
  /** Writes buffered metadata now and returns every stored record, oldest first. */
  records(): Promise<MetadataRecord[]>;
  /**
   * Moves the gateway's routing clock an hour on: the rests suppliers asked for with a
   * `retry-after` and the breakers' cooldowns of earlier tests have passed (a config
   * reload's router keeps the moved clock).
   */
  passRouteRests(): void;
  close(): Promise<void>;
}

/** Starts a gateway on a fresh temp data dir; `config` is a config-file document (default: the demo). */
export async function startTestGateway(
  options: { config?: unknown; env?: Record<string, string>; credits?: number } = {},
): Promise<TestGateway> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-test-"));
  // tests get limits out of the way unless they bring their own (billing tests do)
  const document = {
    limits: { rpm: 1_000_000, tpm: 1_000_000_000_000 },
    ...((options.config ?? DEFAULT_CONFIG_FILE) as object),
  };
  const config = resolveConfig(
    document,
    { LETHE_DATA_DIR: dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1", ...options.env },
    null,
  );
  const lines: string[] = [];
  const running = await startGateway(config, { logDestination: { write: (line: string) => void lines.push(line) } });
  if (running.firstStartKey === null) throw new Error("expected a first-start key");
  const store = running.gateway.store;
  // accounts start with plenty of credit so priced routes work; billing tests pass their own
  const credits = options.credits ?? 1_000_000 * 1_000_000;
  const topUp = async (name: string) => {
    const account = await store.findAccountByName(name);
    if (account !== undefined && credits > 0) await store.ledger.credit(account.id, credits, "top_up");
  };
  await topUp("demo");
  let closed = false;
  let routerClockOffset = 0;
  return {
    url: running.url,
    baseURL: `${running.url}/v1`,
    key: running.firstStartKey,
    dataDir,
    running,
    logText: () => lines.join(""),
    async createKey(accountName = "demo") {
      const account =
        (await store.findAccountByName(accountName)) ?? (await store.createAccount({ name: accountName }));
      const hasher = new KeyHasher(await loadServerSecret(dataDir, null));
      const { key, record } = await issueKey(store, hasher, account.id, null);
      return { key, keyId: record.id };
    },
    async records() {
      await running.gateway.meter.drain();
      const db = (store as unknown as { db: import("kysely").Kysely<Record<string, Record<string, unknown>>> }).db;
      const rows = await db.selectFrom("request_metadata").selectAll().orderBy("ts").execute();
      return rows.map(
        (row) =>
          ({
            ...row,
            streamed: row.streamed === 1,
            cache_hit: row.cache_hit === 1,
            tokens_estimated: row.tokens_estimated === 1,
          }) as unknown as MetadataRecord,
      );
    },
    passRouteRests() {
      routerClockOffset += 3_600_000;
      (running.gateway.router as { now: () => number }).now = () => Date.now() + routerClockOffset;
    },
    async close() {
      if (closed) return;
      closed = true;
      await running.close();
    },
  };
}

/** Removes a test's data dir. */
export async function removeDataDir(gateway: TestGateway): Promise<void> {
  await rm(gateway.dataDir, { recursive: true, force: true });
}
