import type { FastifyInstance } from "fastify";
import type { DestinationStream } from "pino";
import { CreditGuard } from "../billing/credit-guard.js";
import { RateLimits } from "../billing/rate-limits.js";
import type { LetheConfig } from "../config/load-config.js";
import { BodyBudget } from "../http/body-budget.js";
import { buildServer } from "../http/build-server.js";
import { ClientAddresses } from "../http/client-address.js";
import { CorsPolicy } from "../http/cors.js";
import type { Gateway } from "../http/gateway.js";
import { KeyHasher } from "../keys/api-key.js";
import { AuthThrottle } from "../keys/auth-throttle.js";
import { Authenticator } from "../keys/authenticator.js";
import { boundInTime } from "../lang/bound-in-time.js";
import { createEventLog, type EventLog, type ShutdownStep } from "../logging/event-log.js";
import { warmTokenizer } from "../metering/count-tokens.js";
import { Meter } from "../metering/meter.js";
import { GatewayMetrics } from "../metering/metrics.js";
import { scheduleRetention } from "../retention/retention-job.js";
import { Router } from "../routing/router.js";
import { openStore } from "../store/open-store.js";
import { loadServerSecret } from "../store/server-secret.js";
import { loadSigningKey } from "../store/signing-key.js";
import { InFlight } from "../suppliers/cancellation.js";
import { SupplierRegistry } from "../suppliers/registry.js";
import { letheVersion } from "../zdr/lethe-version.js";
import { buildStatement, signStatement } from "../zdr/retention-statement.js";
import { createDemoAccountIfEmpty } from "./bootstrap.js";

/** The least time the store gets to close its connections, when the flush took all of its own. */
const STORE_CLOSE_MS = 1_000;

/** A running gateway: where it listens, and how to stop it. */
export interface RunningGateway {
  url: string;
  port: number;
  gateway: Gateway;
  /** The key minted for the `demo` account on first start, to be shown once; else null. */
  firstStartKey: string | null;
  /** Stops accepting, finishes in-flight requests, flushes metadata, closes everything. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Where event-log lines go (tests capture them); stdout by default. */
  logDestination?: DestinationStream;
  log?: EventLog;
  /** Create the `demo` account and a key when the store has no account yet. */
  bootstrapDemoAccount?: boolean;
  /** Run the retention job (at start-up and hourly); tests that drive it themselves turn it off. */
  retention?: boolean;
  /** `lethe serve --dev`: the process hardening is off, and the signed statement says so. */
  developmentRun?: boolean;
  /** Adds to the server before it listens (the audit's seeded-leak self-test uses it). */
  configureServer?: (app: FastifyInstance, gateway: Gateway) => void;
}

/**
 * How long the requests the shutdown deadline cut have to send their ending (an error event,
 * a 503) before every connection still open is closed: the ending is written at once, so
 * only a client that reads nothing is still there.
 */
const CUT_GRACE_MS = 250;

/** Resolves once every metered request has finished (its record handed to the meter), or after `ms`. */
async function exchangesFinished(gateway: Gateway, ms: number): Promise<void> {
  const giveUpAt = Date.now() + ms;
  while (gateway.openExchanges > 0 && Date.now() < giveUpAt) await waitFor(10);
}

function waitFor(ms: number): Promise<void> {
  return ms <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, ms));
}

/** Opens the store, builds the suppliers and the HTTP server, and starts listening. */
export async function startGateway(config: LetheConfig, options: StartOptions = {}): Promise<RunningGateway> {
  const log = options.log ?? createEventLog(options.logDestination ? { destination: options.logDestination } : {});
  const store = await openStore(config);
  const secret = await loadServerSecret(config.dataDir, config.secret);
  const hasher = new KeyHasher(secret);
  const statement = signStatement(
    buildStatement(config, await letheVersion(), { developmentRun: options.developmentRun === true }),
    await loadSigningKey(config.dataDir),
  );
  // ioredis is loaded only when Redis is configured: a single replica never needs it
  const redis =
    config.redisUrl === null
      ? null
      : new (await import("../shared-state/redis-link.js")).RedisLink(config.redisUrl, config.redisPrefix);
  const shared = redis === null ? null : { client: redis.client, prefix: redis.prefix };
  // caches of keys and balances drop on a change notice from the database (PostgreSQL's
  // NOTIFY between replicas, SQLite's revision within a data dir)
  const changes = () => store.changeCounter();
  const gateway: Gateway = {
    config,
    store,
    redis,
    authenticator: new Authenticator(
      store,
      hasher,
      // a balance move (every ledger flush) says nothing about keys
      () => store.keyChangeCounter(),
      store.kind === "postgres" ? 1_000 : Number.POSITIVE_INFINITY,
    ),
    hasher,
    authThrottle: new AuthThrottle(secret, config.limits.authFailuresPerMinute, shared),
    clientAddresses: new ClientAddresses(config.server.trustedProxies),
    cors: CorsPolicy.of(config.server.corsOrigins),
    limits: new RateLimits({ rpm: config.limits.rpm, tpm: config.limits.tpm }, log, shared),
    credits: new CreditGuard(
      store,
      log,
      config.metering.flushIntervalMs,
      changes,
      // replicas sharing PostgreSQL hold credit in the database, so none can spend another's
      store.kind === "postgres" ? { holds: store.creditHolds, ttlMs: config.billing.holdTtlMs } : null,
      config.metering.batchSize,
    ),
    suppliers: new SupplierRegistry(config),
    router: new Router(config.routing),
    meter: new Meter(store, log, config.metering),
    metrics: new GatewayMetrics(),
    log,
    statement,
    draining: false,
    openExchanges: 0,
    // four bodies of the largest size at once per account, eight for all accounts, beyond
    // every body's first MiB
    bodies: new BodyBudget(4 * config.limits.maxBodyBytes, 8 * config.limits.maxBodyBytes),
    inFlight: new InFlight(),
  };
  gateway.metrics.watchRoutes(() => gateway.router);
  gateway.metrics.watchDependencies(gateway);
  const app = buildServer(gateway);
  options.configureServer?.(app, gateway);
  let firstStartKey: string | null;
  try {
    await app.listen({ host: config.host, port: config.port });
    // created once the gateway listens: a key printed once must be printed by a start that serves
    firstStartKey = options.bootstrapDemoAccount === false ? null : await createDemoAccountIfEmpty(store, hasher);
  } catch (error) {
    // a start that cannot listen (the port taken) or finish leaves nothing behind: no
    // connections, no server still answering, no demo account whose one-time key nobody saw
    await app.close().catch(() => {});
    gateway.credits.stopWatching();
    await redis?.close();
    await gateway.suppliers.close();
    await store.close();
    throw error;
  }
  if (firstStartKey !== null) log.event("first_start", { account_created: true });
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : config.port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  log.event("server_started", {
    host_is_loopback: config.host === "127.0.0.1" || config.host === "::1" || config.host === "localhost",
    port,
    models: config.models.size,
    suppliers: config.suppliers.size,
    store: store.kind,
  });
  const stopRetention = options.retention === false ? () => {} : scheduleRetention(store, config.retention, log);
  let closing: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    gateway,
    firstStartKey,
    close() {
      closing ??= (async () => {
        // unready first, so a load balancer stops sending before the socket closes
        gateway.draining = true;
        stopRetention();
        await waitFor(config.shutdown.drainDelayMs);
        // in-flight requests and streams may finish until the deadline; then they are cut: each
        // that waits on or relays a supplier is ended in its client's format (a 503, an error
        // event), and every connection still open a moment later is closed
        let lastCut: NodeJS.Timeout | undefined;
        const deadline = setTimeout(() => {
          // the streams cut may need their output counted: loaded first, so that the grace
          // below is theirs to write their endings in
          if (gateway.openExchanges > 0) warmTokenizer();
          gateway.inFlight.cancelAll("shutdown");
          lastCut = setTimeout(() => app.server.closeAllConnections(), CUT_GRACE_MS);
        }, config.shutdown.deadlineMs);
        // a connection kept alive after its last response would hold the close until the deadline
        // (streams are sent with `connection: keep-alive`): drop each one as soon as it goes idle
        app.server.keepAliveTimeout = 1;
        // each step runs even when one before it failed: whatever can still be flushed is
        let failed = false;
        const step = async (name: ShutdownStep, run: () => Promise<unknown>) => {
          try {
            await run();
          } catch {
            failed = true;
            log.event("server_stop_failed", { step: name });
          }
        };
        await step("http", () => app.close());
        clearTimeout(deadline);
        clearTimeout(lastCut);
        // a request whose connection was cut at the deadline ends a few ticks later (its
        // supplier call aborted, its stream settled): its record must be in the flush below
        await step("http", () => exchangesFinished(gateway, config.shutdown.deadlineMs));
        // what is buffered gets as long again to be written: a database that is away must not
        // hold the process for ever (what is left is lost, as on a crash, and the step says so)
        const flushBy = Date.now() + config.shutdown.deadlineMs;
        const inTime = (work: Promise<unknown>) =>
          boundInTime(work, Math.max(0, flushBy - Date.now()), () => {
            throw new Error("out of time");
          });
        // charges first: money before metadata, should the time run out
        gateway.credits.stopWatching();
        await step("ledger", () => inTime(gateway.credits.drain(flushBy)));
        await step("metadata", () => inTime(gateway.meter.drain(flushBy)));
        await step("suppliers", () => gateway.suppliers.close());
        await step("redis", async () => redis?.close());
        // closing the pool waits for its connections' queries: one stuck on a database that
        // stopped answering would hold the exit until the silence bound (60 s) cut it
        await step("store", () =>
          boundInTime(store.close(), Math.max(STORE_CLOSE_MS, flushBy - Date.now()), () => {
            throw new Error("out of time");
          }),
        );
        log.event("server_stopped", { flushed_records: gateway.meter.writtenCount });
        await new Promise<void>((resolve) => log.flush(resolve));
        if (failed) throw new Error("the shutdown did not complete; see server_stop_failed");
      })();
      return closing;
    },
  };
}
