/*
 * ============================================================================
 *  A DELIBERATE LEAK. This file exists only to prove that `lethe audit` can fail.
 *
 *  An audit that cannot fail proves nothing, so the audit's own tests run it once
 *  per store kind with a hook that writes every request body where it must never
 *  go, and check that the audit reports hits there and a failing verdict.
 *
 *  It is reachable only through `runAudit({ seedLeak })`, a programmatic option of
 *  the embedded audit: no CLI flag, environment variable or config field sets it,
 *  and it is installed only on the audit's own throw-away gateway.
 * ============================================================================
 */
import { randomBytes } from "node:crypto";
import { appendFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import pg from "pg";
import { Counter } from "prom-client";
import type { Gateway } from "../http/gateway.js";
import { parseDatabaseUrl } from "../store/postgres/open-postgres-store.js";
import { SQLITE_FILE } from "../store/sqlite/open-sqlite-store.js";
import type { Supplier } from "../suppliers/supplier.js";

/** The store a seeded leak writes request bodies into. */
export type SeededLeakKind = "log" | "data-dir" | "temp-dir" | "metrics" | "redis" | "postgres";

/** A leak installed on the audit's gateway, and how to remove its traces afterwards. */
export interface SeededLeak {
  configureServer(app: FastifyInstance, gateway: Gateway): void;
  /** Removes the leak's file outside the audit's own data dir (the temp-dir leak). */
  cleanup(): Promise<void>;
}

/** Where the leak may write: the gateway's log destination and data dir. */
export interface LeakTargets {
  logDestination: { write(line: string): void };
  dataDir: string;
  /** The Redis the audit's gateway was given, with the audit's own key prefix. */
  redis: { url: string; prefix: string } | null;
  /** The PostgreSQL URL (with the audit's own schema) the gateway was given. */
  databaseUrl: string | null;
}

/** How each kind of leak writes a body, set up on the gateway it leaks from. */
function leakWriter(
  kind: SeededLeakKind,
  targets: LeakTargets,
  tempFile: string,
  app: FastifyInstance,
  gateway: Gateway,
) {
  switch (kind) {
    case "log":
      // the classic mistake: a "debug" line with the request body in it
      return (body: string) => targets.logDestination.write(`${JSON.stringify({ level: "debug", body })}\n`);
    case "data-dir": {
      // a row in Lethe's own SQLite database, in a table nobody asked for
      const database = new BetterSqlite3(path.join(targets.dataDir, SQLITE_FILE));
      database.exec("CREATE TABLE IF NOT EXISTS seeded_leak (body TEXT NOT NULL)");
      const insert = database.prepare("INSERT INTO seeded_leak (body) VALUES (?)");
      app.addHook("onClose", async () => database.close());
      return (body: string) => void insert.run(body);
    }
    case "temp-dir":
      // a "scratch" file in the temp dir, base64-encoded as if that hid it
      return (body: string) => appendFileSync(tempFile, `${Buffer.from(body).toString("base64")}\n`);
    case "metrics": {
      // a metric label holding client text: every scrape then keeps it
      const counter = new Counter({
        name: "lethe_seeded_leak_total",
        help: "A deliberate leak, for the audit's self-test.",
        labelNames: ["prompt"],
        registers: [gateway.metrics.registry],
      });
      return (body: string) => counter.inc({ prompt: body.slice(0, 2_000) });
    }
    case "redis": {
      if (targets.redis === null) throw new Error("the redis seeded leak needs LETHE_REDIS_URL");
      const client = new Redis(targets.redis.url, { maxRetriesPerRequest: 1 });
      const key = `${targets.redis.prefix}seeded-leak`;
      app.addHook("onClose", async () => void (await client.quit()));
      return (body: string) => void client.rpush(key, body).catch(() => {});
    }
    case "postgres": {
      if (targets.databaseUrl === null) throw new Error("the postgres seeded leak needs LETHE_DATABASE_URL");
      // a table of its own in Lethe's schema, as a "debug copy" of every request
      const { connectionString, schema } = parseDatabaseUrl(targets.databaseUrl);
      const pool = new pg.Pool({
        connectionString,
        max: 2,
        ...(schema !== null && { options: `-c search_path=${schema}` }),
      });
      pool.on("error", () => {});
      const ready = pool.query("CREATE TABLE IF NOT EXISTS seeded_leak (body text NOT NULL)");
      app.addHook("onClose", async () => void (await pool.end()));
      return (body: string) =>
        void ready.then(() => pool.query("INSERT INTO seeded_leak (body) VALUES ($1)", [body])).catch(() => {});
    }
  }
}

/** Builds the deliberate leak of one kind; see the comment at the top of this file. */
export function seededLeak(kind: SeededLeakKind, targets: LeakTargets): SeededLeak {
  const tempFile = path.join(os.tmpdir(), `lethe-seeded-leak-${randomBytes(6).toString("hex")}.txt`);
  return {
    configureServer(app, gateway) {
      const write = leakWriter(kind, targets, tempFile, app, gateway);
      app.addHook("preHandler", async (request) => {
        if (request.body !== undefined) write(JSON.stringify(request.body));
      });
      // the metered endpoints are not served by Fastify: leak what they send to suppliers
      const suppliers = gateway.suppliers;
      const supplierOf = suppliers.get.bind(suppliers);
      suppliers.get = (id) => {
        const supplier = supplierOf(id);
        const leaking: Supplier = Object.create(supplier);
        leaking.send = (call) => {
          write(JSON.stringify(call.body));
          return supplier.send(call);
        };
        return leaking;
      };
    },
    async cleanup() {
      await rm(tempFile, { force: true });
    },
  };
}
