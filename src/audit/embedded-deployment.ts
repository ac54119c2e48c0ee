import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { resolveConfig } from "../config/load-config.js";
import { KeyHasher } from "../keys/api-key.js";
import { issueKey } from "../keys/issue-key.js";
import { type RunningGateway, startGateway } from "../server/start-gateway.js";
import { loadServerSecret } from "../store/server-secret.js";
import { type FakeSupplier, startFakeSupplier } from "./fakes/fake-supplier.js";
import { type SeededLeakKind, seededLeak } from "./seeded-leak.js";

/** The audit's own gateway, fakes and keys, and everything the gateway printed. */
export interface EmbeddedDeployment {
  url: string;
  key: string;
  dataDir: string;
  fakes: { openai: FakeSupplier; anthropic: FakeSupplier };
  keys: { revoked: string; limited: string };
  /** Every log line and every other byte the process printed while the gateway ran. */
  printed: string[];
  gateway: RunningGateway;
  /** Stops the gateway (flushing everything it buffers) and the fakes. */
  stop(): Promise<void>;
  /** Removes the data dir and whatever a seeded leak left outside it. */
  remove(): Promise<void>;
}

/** Failed authentications allowed a minute: the throttle path, driven last, goes past it. */
const AUTH_FAILURES = 30;

/** Timeouts roomy enough for a loaded CI machine; the stall paths use models with their own. */
const TIMEOUTS = { connect_ms: 2_000, first_byte_ms: 5_000, idle_ms: 5_000, total_ms: 15_000 };
/**
 * Route timeouts for the paths where the supplier goes silent. Idle timeouts fire on
 * undici's coarse timer (up to a second late); the silent-from-the-start path uses the
 * total deadline, a plain timer, so the audit does not wait twice.
 */
const STALL = { idle_ms: 1, total_ms: 200 };

/** The audit's config: a model per fake, a fallback pair, a retaining supplier, a dead one, the demo. */
function auditConfig(openai: string, anthropic: string, unreachable: string): unknown {
  const supplier = (id: string, type: string, baseUrl: string, zdr = true) => ({
    id,
    type,
    base_url: baseUrl,
    zdr,
    timeouts: TIMEOUTS,
  });
  const model = (id: string, ...routes: [string, string][]) => ({
    id,
    routes: routes.map(([supplierId, upstream]) => ({ supplier: supplierId, model: upstream })),
  });
  const stalling = (id: string, supplierId: string, timeouts: Partial<typeof STALL>) => ({
    id,
    routes: [{ supplier: supplierId, model: "fake-stalling", timeouts }],
  });
  return {
    suppliers: [
      supplier("audit-openai", "openai", openai),
      supplier("audit-anthropic", "anthropic", anthropic),
      supplier("audit-retaining", "openai", openai, false),
      supplier("audit-unreachable", "openai", unreachable),
      { id: "demo", type: "demo", zdr: true },
    ],
    models: [
      model("audit-openai", ["audit-openai", "fake-gpt"]),
      model("audit-anthropic", ["audit-anthropic", "fake-claude"]),
      { ...model("audit-fallback", ["audit-openai", "fake-gpt"], ["audit-anthropic", "fake-claude"]), max_attempts: 2 },
      model("audit-retaining", ["audit-retaining", "fake-gpt"]),
      model("audit-unreachable", ["audit-unreachable", "fake-gpt"]),
      model("lethe-demo", ["demo", "lethe-demo"]),
      stalling("audit-stall-mid-stream", "audit-openai", { idle_ms: STALL.idle_ms }),
      stalling("audit-stall-first-byte", "audit-anthropic", { total_ms: STALL.total_ms }),
    ],
    // generous limits, so only the paths that test them meet them
    limits: { max_body_bytes: 256 * 1024, rpm: 100_000, tpm: 100_000_000, auth_failures_per_minute: AUTH_FAILURES },
    // one attempt and no breaker: each path sees exactly the failure it set up, however many came before
    routing: { max_attempts: 1, allow_route_header: true, breaker: { failure_threshold: 1_000_000 } },
    metering: { flush_interval_ms: 50 },
  };
}

/** A loopback URL where nothing listens: a port that was free a moment ago. */
async function deadUrl(): Promise<string> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 1;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}/v1`;
}

/** Copies everything written to stdout and stderr into `into` until the returned function runs. */
function tapProcessOutput(into: string[]): () => void {
  const streams = [process.stdout, process.stderr];
  const originals = streams.map((stream) => stream.write);
  streams.forEach((stream, index) => {
    const original = originals[index] as typeof stream.write;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      into.push(typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8"));
      return (original as (...args: unknown[]) => boolean).call(stream, chunk, ...rest);
    }) as typeof stream.write;
  });
  return () => {
    streams.forEach((stream, index) => {
      stream.write = originals[index] as typeof stream.write;
    });
  };
}

/** A revoked key of the demo account, and a key of an account allowed one request a minute. */
async function mintAuditKeys(gateway: RunningGateway, secret: string): Promise<EmbeddedDeployment["keys"]> {
  const store = gateway.gateway.store;
  const hasher = new KeyHasher(secret);
  const demo = await store.findAccountByName("demo");
  if (demo === undefined || gateway.firstStartKey === null) throw new Error("the audit gateway has no demo account");
  const revoked = await issueKey(store, hasher, demo.id, "audit: revoked");
  await store.revokeKey(revoked.record.id);
  gateway.gateway.authenticator.invalidate();
  const limitedAccount = await store.createAccount({ name: "audit-limited", rpm: 1, tpm: 1_000 });
  const limited = await issueKey(store, hasher, limitedAccount.id, "audit: rate limit");
  return { revoked: revoked.key, limited: limited.key };
}

/**
 * Starts the fakes and a gateway on a fresh temp data dir, and mints the audit's keys.
 * Given a Redis, the gateway is pointed at it under the audit's own key prefix; given a
 * PostgreSQL URL, at a schema of the audit's own.
 */
export async function startEmbedded(
  seedLeak: SeededLeakKind | undefined,
  redis: { url: string; prefix: string } | null,
  databaseUrl: string | null = null,
): Promise<EmbeddedDeployment> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "lethe-audit-"));
  const [openai, anthropic] = await Promise.all([startFakeSupplier("openai"), startFakeSupplier("anthropic")]);
  const printed: string[] = [];
  const logDestination = { write: (line: string) => void printed.push(line) };
  const leak = seedLeak === undefined ? null : seededLeak(seedLeak, { logDestination, dataDir, redis, databaseUrl });
  const env: Record<string, string> = { LETHE_DATA_DIR: dataDir, LETHE_PORT: "0", LETHE_HOST: "127.0.0.1" };
  if (redis !== null) Object.assign(env, { LETHE_REDIS_URL: redis.url, LETHE_REDIS_PREFIX: redis.prefix });
  if (databaseUrl !== null) env.LETHE_DATABASE_URL = databaseUrl;
  const config = resolveConfig(auditConfig(openai.url, anthropic.url, await deadUrl()), env, null);
  const untap = tapProcessOutput(printed);
  let gateway: RunningGateway | null = null;
  let keys: EmbeddedDeployment["keys"];
  try {
    gateway = await startGateway(config, {
      logDestination,
      ...(leak !== null && { configureServer: (app, running) => leak.configureServer(app, running) }),
    });
    keys = await mintAuditKeys(gateway, await loadServerSecret(config.dataDir, config.secret));
  } catch (thrown) {
    // nothing was driven yet: tear everything down and report the failure as it is
    untap();
    await gateway?.close();
    await Promise.all([openai.close(), anthropic.close(), rm(dataDir, { recursive: true, force: true })]);
    throw thrown;
  }
  const running = gateway;
  let stopped = false;
  return {
    url: running.url,
    key: running.firstStartKey as string,
    dataDir,
    fakes: { openai, anthropic },
    keys,
    printed,
    gateway: running,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await running.close();
        await Promise.all([openai.close(), anthropic.close()]);
      } finally {
        untap();
      }
    },
    async remove() {
      await Promise.all([rm(dataDir, { recursive: true, force: true }), leak?.cleanup()]);
    },
  };
}
