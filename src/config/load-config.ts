import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { type ConfigFile, configSchema } from "./config-schema.js";
import { configuredId, type ModelId, type SupplierId } from "./ids.js";

/** Connection and timeout settings of one configured supplier. */
export interface SupplierConfig {
  id: SupplierId;
  type: "openai" | "anthropic" | "demo";
  baseUrl: string | null;
  apiKey: string | null;
  zdr: boolean;
  /** Send `store: false` to OpenAI-type suppliers (off for servers that reject the field). */
  sendStoreFalse: boolean;
  /** Where a translated request's output limit goes: `max_completion_tokens` for OpenAI itself, `max_tokens` elsewhere. */
  maxTokensField: "max_tokens" | "max_completion_tokens";
  maxConnections: number;
  /** How long an idle pooled connection is kept, unless the supplier's Keep-Alive header says less. */
  keepAliveMs: number;
  /** Bound on a whole JSON answer, and on one server-sent event of a stream. */
  maxResponseBytes: number;
  headers: Record<string, string>;
  timeouts: { connectMs: number; firstByteMs: number; idleMs: number; totalMs: number };
}

/**
 * OpenAI's own API takes `max_completion_tokens` from every model and refuses `max_tokens`
 * from its reasoning models; other OpenAI-compatible servers (vLLM, Ollama, llama.cpp…)
 * have long known `max_tokens`, and some only that.
 */
function defaultMaxTokensField(baseUrl: string | undefined): "max_tokens" | "max_completion_tokens" {
  if (baseUrl === undefined) return "max_tokens";
  try {
    return new URL(baseUrl).hostname === "api.openai.com" ? "max_completion_tokens" : "max_tokens";
  } catch {
    return "max_tokens";
  }
}

/** Per-million-token prices of a route, in the operator's currency. */
export interface RoutePrice {
  inputPerMtok: number;
  outputPerMtok: number;
  cachedInputPerMtok: number;
  /** Input tokens written to a prompt cache (Anthropic's cache_creation_input_tokens). */
  cacheWritePerMtok: number;
}

/** Timeouts of one attempt on a route: the route's own, else its supplier's. */
export interface AttemptTimeouts {
  firstByteMs: number;
  idleMs: number;
  totalMs: number;
  /**
   * What is left of the request's routing deadline: the answer must start within this many
   * ms, a wait for a pooled connection included (upstream-call.ts). When it comes before
   * `firstByteMs`, Lethe times it, not undici, whose first-byte timer ticks every half
   * second and may fire up to a tick early or late.
   */
  answerWithinMs?: number;
}

/** One way to serve a model: a supplier and the supplier's own model name. */
export interface RouteConfig {
  /** `supplier/model`: names the route in metrics, `lethe routes` and `x-lethe-route`. */
  key: string;
  supplier: SupplierConfig;
  upstreamModel: string;
  weight: number;
  price: RoutePrice;
  timeouts: AttemptTimeouts;
}

/** Retries, fallback and circuit breaking across a model's routes. */
export interface RoutingSettings {
  maxAttempts: number;
  deadlineMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  allowRouteHeader: boolean;
  breaker: { failureThreshold: number; windowMs: number; cooldownMs: number };
}

/** A model clients can name, with its routes in the operator's order. */
export interface ModelConfig {
  id: ModelId;
  strategy: "priority" | "weighted" | "lowest-price" | "lowest-latency";
  routes: RouteConfig[];
  /** This model's bound on supplier attempts per request (routing.max_attempts unless set). */
  maxAttempts: number;
  description: string | null;
  created: number;
}

/** Everything Lethe runs with: the config file resolved against the environment. */
export interface LetheConfig {
  host: string;
  port: number;
  dataDir: string;
  databaseUrl: string | null;
  redisUrl: string | null;
  redisPrefix: string;
  secret: string | null;
  configPath: string | null;
  suppliers: Map<SupplierId, SupplierConfig>;
  models: Map<string, ModelConfig>;
  limits: {
    rpm: number;
    tpm: number;
    maxBodyBytes: number;
    /** Values (objects, arrays, items) a request body may hold, counted before it is parsed. */
    maxJsonValues: number;
    authFailuresPerMinute: number;
    maxConnections: number;
    /** Connections one peer address may hold open at once (trusted proxies aside). */
    maxConnectionsPerAddress: number;
    requestTimeoutMs: number;
  };
  /** Reserve for requests without max_tokens; how long a database credit hold outlives a dead replica. */
  billing: { defaultOutputReserveTokens: number; holdTtlMs: number };
  routing: RoutingSettings;
  /** Reverse proxies (addresses and CIDR ranges) whose X-Forwarded-For is believed. */
  server: { trustedProxies: string[]; metricsAuth: "open" | "operator"; corsOrigins: string[] };
  /** SIGTERM: how long readyz reads unready before the socket closes, and how long in-flight work may run. */
  shutdown: { drainDelayMs: number; deadlineMs: number };
  retention: { metadataDays: number; aggregateDays: number };
  metering: { flushIntervalMs: number; batchSize: number; maxBuffered: number };
  /** PostgreSQL: how long a query's connection may stay silent before it is given up. */
  database: { queryTimeoutMs: number };
}

/** A config problem, reported to the operator as one line. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

const DATABASE_URL = /^postgres(ql)?:$/;
const REDIS_URL = /^rediss?:$/;
/** Aggregates are kept this long, or as long as raw records when those are kept longer. */
const DEFAULT_AGGREGATE_DAYS = 400;

/**
 * An environment URL, checked at start-up so a mistake gets its reason (the message names
 * the variable, never its value: a URL may hold a password).
 */
function checkedUrl(value: string | undefined, name: string, protocol: RegExp): string | null {
  if (value === undefined || value === "") return null;
  let valid = false;
  try {
    const url = new URL(value);
    const schema = url.searchParams.get("schema");
    valid = protocol.test(url.protocol) && (schema === null || /^[a-z_][a-z0-9_]{0,62}$/.test(schema));
  } catch {
    // not a URL at all
  }
  if (!valid) {
    throw new ConfigError(
      name === "LETHE_DATABASE_URL"
        ? "LETHE_DATABASE_URL must be a postgres:// URL, with an optional ?schema=NAME (a lowercase identifier)"
        : "LETHE_REDIS_URL must be a redis:// or rediss:// URL",
    );
  }
  return value;
}

/** LETHE_SECRET, when set: at least 16 characters (keys are HMACs under it). */
function checkedSecret(value: string | undefined): string | null {
  if (value === undefined || value === "") return null;
  if (value.length < 16) throw new ConfigError("LETHE_SECRET must be at least 16 characters");
  return value;
}

/** The embedded default: the built-in demo supplier and its one model. */
export const DEFAULT_CONFIG_FILE: unknown = {
  suppliers: [{ id: "demo", type: "demo", zdr: true }],
  models: [
    {
      id: "lethe-demo",
      description: "Lethe's built-in demo model: deterministic local answers, no supplier is called.",
      routes: [{ supplier: "demo", model: "lethe-demo" }],
    },
  ],
};

type Env = Record<string, string | undefined>;

function parsePort(raw: string | undefined): number {
  if (raw === undefined || raw === "") return 8080;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError("LETHE_PORT must be a port number (0-65535).");
  return port;
}

/** A key that can be repeated back: the file may not be a Lethe config at all (`--config /etc/shadow`). */
const NAMEABLE_KEY = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

function describeIssue(issue: { path: PropertyKey[]; message: string; code?: string; keys?: string[] }): string {
  const where = issue.path
    .map((part) => (typeof part === "string" && !NAMEABLE_KEY.test(part) ? "…" : String(part)))
    .join(".");
  let message = issue.message;
  // zod lists unknown keys in its message; only ones shaped like field names are repeated
  if (issue.code === "unrecognized_keys" && issue.keys !== undefined) {
    const keys = issue.keys;
    message =
      keys.every((key) => NAMEABLE_KEY.test(key)) && keys.length <= 5
        ? `unknown field${keys.length === 1 ? "" : "s"} ${keys.map((key) => `"${key}"`).join(", ")}`
        : `${keys.length} unknown field${keys.length === 1 ? "" : "s"} (not shown: the file may not be a Lethe config)`;
  }
  return where === "" ? message : `${where}: ${message}`;
}

/**
 * Whether suppliers' API keys must be in the environment: `serve` calls suppliers; the
 * store-only CLI commands (keys, credits, usage...) never do, and an operator topping up
 * credit need not hold the suppliers' secrets.
 */
export type SupplierKeys = "required" | "not-needed";

/** Validates a parsed config document and resolves it against the environment. */
export function resolveConfig(
  document: unknown,
  env: Env,
  configPath: string | null,
  supplierKeys: SupplierKeys = "required",
): LetheConfig {
  const parsed = configSchema.safeParse(document ?? {});
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new ConfigError(
      `invalid config${configPath ? ` (${configPath})` : ""}: ${first ? describeIssue(first) : "unknown problem"}`,
    );
  }
  const file: ConfigFile = parsed.data;
  const suppliers = new Map<SupplierId, SupplierConfig>();
  for (const entry of file.suppliers) {
    const supplierId = configuredId<SupplierId>(entry.id);
    if (suppliers.has(supplierId)) throw new ConfigError(`supplier "${entry.id}" is defined twice`);
    let apiKey: string | null = null;
    if (entry.api_key_env !== undefined) {
      apiKey = env[entry.api_key_env] ?? null;
      if ((apiKey === null || apiKey === "") && supplierKeys === "required") {
        throw new ConfigError(`supplier "${entry.id}": environment variable ${entry.api_key_env} is not set`);
      }
    }
    suppliers.set(supplierId, {
      id: supplierId,
      type: entry.type,
      baseUrl: entry.base_url?.replace(/\/+$/, "") ?? null,
      apiKey,
      zdr: entry.zdr,
      sendStoreFalse: entry.send_store_false,
      maxTokensField: entry.max_tokens_field ?? defaultMaxTokensField(entry.base_url),
      maxConnections: entry.max_connections,
      keepAliveMs: entry.keep_alive_ms,
      maxResponseBytes: entry.max_response_bytes,
      headers: entry.headers,
      timeouts: {
        connectMs: entry.timeouts.connect_ms,
        firstByteMs: entry.timeouts.first_byte_ms,
        idleMs: entry.timeouts.idle_ms,
        totalMs: entry.timeouts.total_ms,
      },
    });
  }
  const created = Math.floor(Date.now() / 1000);
  const models = new Map<string, ModelConfig>();
  for (const entry of file.models) {
    if (models.has(entry.id)) throw new ConfigError(`model "${entry.id}" is defined twice`);
    const routeKeys = new Set<string>();
    const routes = entry.routes.map((route): RouteConfig => {
      const supplier = suppliers.get(configuredId<SupplierId>(route.supplier));
      if (!supplier) throw new ConfigError(`model "${entry.id}": route names unknown supplier "${route.supplier}"`);
      // routes are told apart by supplier and model (breakers, metrics, latency figures)
      const routeKey = `${supplier.id}/${route.model}`;
      if (routeKeys.has(routeKey)) throw new ConfigError(`model "${entry.id}": route ${routeKey} is listed twice`);
      routeKeys.add(routeKey);
      return {
        key: routeKey,
        supplier,
        upstreamModel: route.model,
        weight: route.weight,
        timeouts: {
          firstByteMs: route.timeouts?.first_byte_ms ?? supplier.timeouts.firstByteMs,
          idleMs: route.timeouts?.idle_ms ?? supplier.timeouts.idleMs,
          totalMs: route.timeouts?.total_ms ?? supplier.timeouts.totalMs,
        },
        price: {
          inputPerMtok: route.price.input_per_mtok,
          outputPerMtok: route.price.output_per_mtok,
          cachedInputPerMtok: route.price.cached_input_per_mtok ?? route.price.input_per_mtok,
          cacheWritePerMtok: route.price.cache_write_per_mtok ?? route.price.input_per_mtok,
        },
      };
    });
    models.set(entry.id, {
      id: configuredId<ModelId>(entry.id),
      strategy: entry.strategy,
      routes,
      maxAttempts: entry.max_attempts ?? file.routing.max_attempts,
      description: entry.description ?? null,
      created,
    });
  }
  const databaseUrl = checkedUrl(env.LETHE_DATABASE_URL, "LETHE_DATABASE_URL", DATABASE_URL);
  // only PostgreSQL holds credit for a while (SQLite's guard lives in one process's memory)
  if (databaseUrl !== null) checkHoldOutlivesRequests(file.billing.hold_ttl_ms, file.routing.deadline_ms, models);
  return {
    host: env.LETHE_HOST || "127.0.0.1",
    port: parsePort(env.LETHE_PORT),
    dataDir: path.resolve(env.LETHE_DATA_DIR || ".lethe"),
    databaseUrl,
    redisUrl: checkedUrl(env.LETHE_REDIS_URL, "LETHE_REDIS_URL", REDIS_URL),
    redisPrefix: env.LETHE_REDIS_PREFIX || "lethe:",
    secret: checkedSecret(env.LETHE_SECRET),
    configPath,
    suppliers,
    models,
    limits: {
      rpm: file.limits.rpm,
      tpm: file.limits.tpm,
      maxBodyBytes: file.limits.max_body_bytes,
      maxJsonValues: file.limits.max_json_values,
      authFailuresPerMinute: file.limits.auth_failures_per_minute,
      maxConnections: file.limits.max_connections,
      maxConnectionsPerAddress: file.limits.max_connections_per_address,
      requestTimeoutMs: file.limits.request_timeout_ms,
    },
    billing: {
      defaultOutputReserveTokens: file.billing.default_output_reserve_tokens,
      holdTtlMs: file.billing.hold_ttl_ms,
    },
    shutdown: { drainDelayMs: file.shutdown.drain_delay_ms, deadlineMs: file.shutdown.deadline_ms },
    server: {
      trustedProxies: file.server.trusted_proxies,
      metricsAuth: file.server.metrics_auth,
      corsOrigins: file.server.cors_origins,
    },
    routing: {
      maxAttempts: file.routing.max_attempts,
      deadlineMs: file.routing.deadline_ms,
      backoffBaseMs: file.routing.backoff_base_ms,
      backoffMaxMs: file.routing.backoff_max_ms,
      allowRouteHeader: file.routing.allow_route_header,
      breaker: {
        failureThreshold: file.routing.breaker.failure_threshold,
        windowMs: file.routing.breaker.window_ms,
        cooldownMs: file.routing.breaker.cooldown_ms,
      },
    },
    retention: {
      metadataDays: file.retention.metadata_days,
      aggregateDays: file.retention.aggregate_days ?? Math.max(DEFAULT_AGGREGATE_DAYS, file.retention.metadata_days),
    },
    metering: {
      flushIntervalMs: file.metering.flush_interval_ms,
      batchSize: file.metering.batch_size,
      maxBuffered: file.metering.max_buffered,
    },
    database: { queryTimeoutMs: file.database.query_timeout_ms },
  };
}

/** What a hold must outlast beyond its request: the write of the request's charge, retries included. */
const HOLD_MARGIN_MS = 60_000;

/**
 * A credit hold (PostgreSQL) expires `hold_ttl_ms` after it is taken, however long its request
 * still runs: one that can run longer (retries until `routing.deadline_ms`, then an attempt of
 * up to its route's `total_ms`) would stop counting midway, and the account could spend its
 * credit twice over. Refused rather than let a raised `total_ms` quietly allow that.
 * SQLite takes no holds that expire: its check is the process's own, in memory.
 */
function checkHoldOutlivesRequests(
  holdTtlMs: number,
  deadlineMs: number,
  models: ReadonlyMap<string, ModelConfig>,
): void {
  let longestTotalMs = 0;
  for (const model of models.values())
    for (const route of model.routes) longestTotalMs = Math.max(longestTotalMs, route.timeouts.totalMs);
  const longestRequestMs = deadlineMs + longestTotalMs;
  if (holdTtlMs >= longestRequestMs + HOLD_MARGIN_MS) return;
  throw new ConfigError(
    `billing.hold_ttl_ms (${holdTtlMs}) must be at least a minute longer than a request may run on PostgreSQL: ` +
      `routing.deadline_ms + the longest route total_ms is ${longestRequestMs} ms ` +
      `(a credit hold that ends before its request lets an account spend its credit twice)`,
  );
}

/**
 * Loads the config named by `--config`, then LETHE_CONFIG, then ./lethe.config.yaml
 * when present; with none of them, the embedded demo default.
 */
export async function loadConfig(
  env: Env = process.env,
  explicitPath?: string,
  supplierKeys: SupplierKeys = "required",
): Promise<LetheConfig> {
  const named = explicitPath ?? env.LETHE_CONFIG;
  let configPath: string | null = null;
  if (named) configPath = path.resolve(named);
  else if (existsSync("lethe.config.yaml")) configPath = path.resolve("lethe.config.yaml");
  if (configPath === null) return resolveConfig(DEFAULT_CONFIG_FILE, env, null, supplierKeys);
  let text: string;
  try {
    text = await readFile(configPath, "utf8");
  } catch (error) {
    // the code says why (ENOENT, EISDIR, EACCES); the operator's own path is named
    const code = (error as { code?: unknown } | null)?.code;
    throw new ConfigError(`cannot read config file ${configPath}${typeof code === "string" ? ` (${code})` : ""}`);
  }
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    // where the parser stopped, never the text there: a line may hold a key's value
    const line = (error as { linePos?: { line?: unknown }[] } | null)?.linePos?.[0]?.line;
    const where = typeof line === "number" ? ` (line ${line})` : "";
    throw new ConfigError(`config file ${configPath} is not valid YAML${where}`);
  }
  return resolveConfig(document, env, configPath, supplierKeys);
}
