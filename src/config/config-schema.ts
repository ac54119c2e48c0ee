import { z } from "zod";
import { parseAddressRange } from "../http/client-address.js";
import { isCorsOrigin } from "../http/cors.js";

const id = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/, "ids use letters, digits and . _ : / -");

/**
 * Free text of the operator's (an upstream model name, a description): it reaches `/metrics`
 * labels, `/v1/models` and the CLI's output, so no terminal control (C0, C1, line separators,
 * bidirectional overrides) may be in it.
 */
const PRINTABLE = /^[^\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]*$/u;
const NO_CONTROLS = "may not hold control characters";

/**
 * A price per million tokens: at most a million units of currency, far past any model's,
 * so that a cost is summed exactly in whole billionths of a micro-unit (cost.ts); 1e300
 * passed as a number and came to a cost of 0.
 */
const perMtok = z.number().nonnegative().max(1_000_000, "a price per million tokens is at most 1000000");

const price = z
  .object({
    input_per_mtok: perMtok.default(0),
    output_per_mtok: perMtok.default(0),
    cached_input_per_mtok: perMtok.optional(),
    // Anthropic bills writes to its prompt cache above the input price (1.25× for five
    // minutes, 2× for an hour): without this, they are billed as plain input
    cache_write_per_mtok: perMtok.optional(),
  })
  .strict()
  // credit reservations bound a request's input at the input price: a dearer cached price
  // would let a request cost more than was reserved for it
  .refine((value) => value.cached_input_per_mtok === undefined || value.cached_input_per_mtok <= value.input_per_mtok, {
    message: "cached_input_per_mtok may not be above input_per_mtok",
    path: ["cached_input_per_mtok"],
  });

/**
 * The longest duration any setting takes: a day. Node's timers fire at once past 2^31 - 1 ms
 * (about 24.8 days), so `total_ms: 99999999999999` failed every request within a millisecond;
 * a day leaves room for the sums made of them (the shutdown's, the hold's).
 */
const MAX_DURATION_MS = 86_400_000;
const AT_MOST_A_DAY = "a duration is at most 86400000 ms (a day)";

const timeouts = z
  .object({
    connect_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(5_000),
    first_byte_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(60_000),
    idle_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(60_000),
    total_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(600_000),
  })
  .strict();

const supplier = z
  .object({
    id,
    type: z.enum(["openai", "anthropic", "demo"]),
    // undici speaks HTTP only: another scheme failed at start with no word of the config
    base_url: z
      .string()
      .url()
      .refine((url) => /^https?:\/\//i.test(url), "must be an http:// or https:// URL")
      .optional(),
    api_key_env: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
      .optional(),
    zdr: z.boolean().default(false),
    send_store_false: z.boolean().default(true),
    // the field a translated Anthropic request's max_tokens goes in: OpenAI's reasoning models
    // refuse max_tokens; many OpenAI-compatible servers know only max_tokens
    max_tokens_field: z.enum(["max_tokens", "max_completion_tokens"]).optional(),
    max_connections: z.number().int().positive().default(128),
    // an idle pooled connection is closed after this: below the 5 s after which many servers
    // (uvicorn under vLLM, Node) close theirs without saying so, or a request sent on one
    // just as the server closes it fails (undici's own default; a Keep-Alive header's
    // timeout, when the supplier sends one, is honoured, less undici's two-second margin)
    keep_alive_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(4_000),
    // a whole JSON answer, or one event of a stream (a stream itself may run on): a supplier
    // sending without end must not fill the gateway's memory
    max_response_bytes: z
      .number()
      .int()
      .min(1024)
      .default(64 * 1024 * 1024),
    headers: z.record(z.string(), z.string()).default({}),
    timeouts: timeouts.prefault({}),
  })
  .strict()
  .refine((value) => value.type === "demo" || value.base_url !== undefined, {
    message: "base_url is required for openai and anthropic suppliers",
    path: ["base_url"],
  });

const routeTimeouts = z
  .object({
    first_byte_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).optional(),
    idle_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).optional(),
    total_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).optional(),
  })
  .strict();

const route = z
  .object({
    supplier: id,
    model: z.string().min(1).max(256).regex(PRINTABLE, NO_CONTROLS),
    weight: z.number().nonnegative().default(1),
    price: price.prefault({}),
    timeouts: routeTimeouts.optional(),
  })
  .strict();

const routing = z
  .object({
    max_attempts: z.number().int().min(1).max(10).default(3),
    deadline_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(60_000),
    backoff_base_ms: z.number().int().nonnegative().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(100),
    backoff_max_ms: z.number().int().nonnegative().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(2_000),
    allow_route_header: z.boolean().default(false),
    breaker: z
      .object({
        failure_threshold: z.number().int().positive().default(5),
        window_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(30_000),
        cooldown_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(15_000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

const model = z
  .object({
    id,
    strategy: z.enum(["priority", "weighted", "lowest-price", "lowest-latency"]).default("priority"),
    routes: z.array(route).min(1),
    max_attempts: z.number().int().min(1).max(10).optional(),
    description: z.string().max(200).regex(PRINTABLE, NO_CONTROLS).optional(),
  })
  .strict();

/** The operator's config file, as documented in the README. */
export const configSchema = z
  .object({
    suppliers: z.array(supplier).default([]),
    models: z.array(model).default([]),
    limits: z
      .object({
        rpm: z.number().int().positive().default(600),
        tpm: z.number().int().positive().default(1_000_000),
        max_body_bytes: z
          .number()
          .int()
          .positive()
          .default(32 * 1024 * 1024),
        // objects, arrays and items a body may hold: its parsing cost is in these, not its bytes
        max_json_values: z.number().int().positive().default(200_000),
        auth_failures_per_minute: z.number().int().positive().default(20),
        // client connections one process holds open at once; past it, a new one is closed at accept
        max_connections: z.number().int().positive().default(10_000),
        // of which one client address may hold (the operator's trusted proxies are not capped)
        max_connections_per_address: z.number().int().positive().default(1_000),
        // how long a client may take to send a whole request (headers and body); the answer,
        // however long it streams, is not counted
        request_timeout_ms: z.number().int().min(1_000).max(MAX_DURATION_MS, AT_MOST_A_DAY).default(60_000),
      })
      .strict()
      .prefault({}),
    billing: z
      .object({
        default_output_reserve_tokens: z.number().int().positive().default(4096),
        // it must outlast deadline_ms + total_ms, a day each at most
        hold_ttl_ms: z
          .number()
          .int()
          .positive()
          .max(3 * MAX_DURATION_MS, "hold_ttl_ms is at most 259200000 (three days)")
          .default(900_000),
      })
      .strict()
      .prefault({}),
    routing: routing.prefault({}),
    server: z
      .object({
        // reverse proxies whose X-Forwarded-For names the client (for the auth-failure throttle)
        trusted_proxies: z
          .array(
            z
              .string()
              .refine((entry) => parseAddressRange(entry) !== null, "an IP address or a CIDR range, like 10.0.0.0/8"),
          )
          .max(1_000)
          .default([]),
        // who may read GET /metrics (supplier ids, upstream model names, volumes): anyone who
        // reaches the port, or only a caller with an operator token (as Prometheus' bearer token)
        metrics_auth: z.enum(["open", "operator"]).default("open"),
        // browser apps' origins allowed to call (CORS): none by default, `*` for any
        cors_origins: z
          .array(z.string().refine(isCorsOrigin, "an origin like https://app.example.com (no path), or *"))
          .max(1_000)
          .default([]),
      })
      .strict()
      .prefault({}),
    shutdown: z
      .object({
        drain_delay_ms: z.number().int().nonnegative().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(0),
        deadline_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(30_000),
      })
      .strict()
      .prefault({}),
    retention: z
      .object({
        metadata_days: z.number().int().positive().default(90),
        // when not set: 400, or metadata_days if that is longer (configs that set only a long
        // metadata window loaded before the check below)
        aggregate_days: z.number().int().positive().optional(),
      })
      .strict()
      // aggregates are made from raw records as they expire: raw records kept longer than the
      // aggregates would keep the account linked past what the signed statement says
      .refine((value) => value.aggregate_days === undefined || value.metadata_days <= value.aggregate_days, {
        message: "metadata_days cannot be more than aggregate_days",
        path: ["metadata_days"],
      })
      .prefault({}),
    metering: z
      .object({
        flush_interval_ms: z.number().int().positive().max(MAX_DURATION_MS, AT_MOST_A_DAY).default(250),
        batch_size: z.number().int().positive().default(64),
        max_buffered: z.number().int().positive().default(100_000),
      })
      .strict()
      .prefault({}),
    database: z
      .object({
        // PostgreSQL: a query whose connection stays silent this long is given up and the
        // connection closed (a dropped firewall entry would otherwise hold it for good)
        query_timeout_ms: z.number().int().min(100).max(MAX_DURATION_MS, AT_MOST_A_DAY).default(60_000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type ConfigFile = z.infer<typeof configSchema>;
