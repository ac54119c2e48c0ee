import { type DestinationStream, type Logger, pino } from "pino";
import type { ModelId, SupplierId } from "../config/ids.js";
import type { ErrorCode } from "../errors/lethe-error.js";

/**
 * Lethe's logs are allow-listed events, never objects handed over whole. Each event
 * names the only fields it may carry, and every field is a number, a boolean or a
 * value from a closed set. A request, a body, a header map or a supplier message has
 * no field to go into.
 */
export interface EventFields {
  server_started: { host_is_loopback: boolean; port: number; models: number; suppliers: number; store: StoreKind };
  server_stopping: { signal: SignalName };
  server_stopped: { flushed_records: number };
  server_stop_failed: { step: ShutdownStep };
  first_start: { account_created: boolean };
  upstream_error: { supplier: SupplierId; model: ModelId; status: number; code: ErrorCode };
  stream_error: { supplier: SupplierId; model: ModelId; code: ErrorCode };
  request_failed: { status: number; code: ErrorCode };
  meter_flush_failed: { records: number; code: ErrorCode };
  meter_dropped: { records: number };
  ledger_flush_failed: { records: number };
  rate_limit_degraded: { dependency: "redis" };
  retention_ran: { rolled_up: number; aggregates: number; debits_collapsed: number; unlinked: number };
  retention_failed: { code: ErrorCode };
  admin_action: { action: AdminAction };
  worker_replaced: { exit_code: number; killed: boolean };
  uncaught_exception: { code: ErrorCode };
  config_loaded: { models: number; suppliers: number };
  /** SIGHUP: the config file was read again and its routing applied; `restart_needed`: other sections changed too. */
  config_reloaded: { models: number; suppliers: number; restart_needed: boolean };
  config_reload_failed: { reason: ReloadFailure };
  process_hardened: { core_dumps_disabled: boolean; diagnostic_reports_disabled: boolean; development_run: boolean };
  /** Several workers without Redis: each counts rate limits (and the auth throttle) on its own. */
  limits_per_worker: { workers: number };
  /** Someone sent the signal that opens Node's debugger; it was not opened. */
  signal_ignored: { signal: "SIGUSR1" };
  /** A process warning, by its kind and deprecation code; never its message (harden-process.ts). */
  node_warning: { kind: WarningKind; code: string | null };
}

/** The kinds of process warning Node and libraries emit; any other is `other`. */
export const WARNING_KINDS = [
  "DeprecationWarning",
  "ExperimentalWarning",
  "MaxListenersExceededWarning",
  "TimeoutOverflowWarning",
  "TimeoutNegativeWarning",
  "UnhandledPromiseRejectionWarning",
  "Warning",
  "other",
] as const;
export type WarningKind = (typeof WARNING_KINDS)[number];

export type EventName = keyof EventFields;
export type StoreKind = "sqlite" | "postgres";
/** What an operator did through the admin API (also the audit events' `action`). */
export type AdminAction =
  | "account_create"
  | "account_update"
  | "account_delete"
  | "account_export"
  | "key_create"
  | "key_revoke"
  | "credits_add"
  | "operator_create"
  | "operator_revoke"
  | "operator_rotate"
  | "operator_reinstate";
export type SignalName = "SIGTERM" | "SIGINT" | "shutdown";
/** Why a SIGHUP left the running config in place: the file did not load, or it names no model. */
export type ReloadFailure = "invalid_config" | "no_models" | "failed";
/** The steps of a graceful shutdown, in order; one that fails is logged and the rest still run. */
export type ShutdownStep = "http" | "metadata" | "ledger" | "suppliers" | "redis" | "store";

type Level = "info" | "warn" | "error";

const LEVELS: Record<EventName, Level> = {
  server_started: "info",
  server_stopping: "info",
  server_stopped: "info",
  server_stop_failed: "error",
  first_start: "info",
  upstream_error: "warn",
  stream_error: "warn",
  request_failed: "info",
  meter_flush_failed: "error",
  meter_dropped: "error",
  ledger_flush_failed: "error",
  rate_limit_degraded: "warn",
  retention_ran: "info",
  retention_failed: "error",
  admin_action: "info",
  worker_replaced: "warn",
  uncaught_exception: "error",
  config_loaded: "info",
  config_reloaded: "info",
  config_reload_failed: "error",
  process_hardened: "info",
  signal_ignored: "warn",
  limits_per_worker: "warn",
  node_warning: "warn",
};

/** The one logger Lethe uses: `log.event(name, fields)`. */
export interface EventLog {
  event<Name extends EventName>(name: Name, fields: EventFields[Name]): void;
  /** Writes out buffered lines; `done` runs once they are written. */
  flush(done?: () => void): void;
}

/** Copies only primitives: a mistyped caller still cannot push an object or a long string through. */
function pickPrimitives(fields: object): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value === "number" || typeof value === "boolean") out[key] = value;
    else if (typeof value === "string" && value.length <= 64) out[key] = value;
  }
  return out;
}

/** Builds the event log over pino; `destination` lets tests capture every line. */
export function createEventLog(options: { level?: string; destination?: DestinationStream } = {}): EventLog {
  const logger: Logger = pino(
    {
      level: options.level ?? "info",
      base: null,
      messageKey: "event",
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
  return {
    event(name, fields) {
      logger[LEVELS[name]](pickPrimitives(fields), name);
    },
    flush(done) {
      logger.flush(done && (() => done()));
    },
  };
}

/** A log that drops everything, for CLI commands that print their own output. */
export const silentLog: EventLog = {
  event() {},
  flush(done) {
    done?.();
  },
};
