import { createHash, type KeyObject, sign, verify } from "node:crypto";
import type { LetheConfig } from "../config/load-config.js";
import { METADATA_COLUMNS } from "../metering/metadata-record.js";
import { canonicalJson } from "./canonical-json.js";

/** What this deployment keeps and for how long, generated from the running configuration. */
export interface RetentionStatement {
  lethe_version: string;
  issued_at: string;
  config_sha256: string;
  content_retained: "none";
  metadata: { fields: readonly string[]; retention_days: number };
  aggregates: { description: string; account_unlinked_after_days: number };
  ledger: { description: string; per_request_debits_days: number };
  response_cache: { enabled: boolean; window_seconds: number };
  logs: string;
  zdr_required_by_default: boolean;
  /**
   * `lethe serve --dev`: the process hardening is off (a debugger may attach, the heap may be
   * dumped), so content in memory could be read out of the process (docs/zdr.md).
   */
  development_run: boolean;
  suppliers: { id: string; type: string; zdr: boolean }[];
  models: { id: string; zdr_eligible: boolean }[];
}

/** The statement with its Ed25519 signature over the canonical JSON of `statement`. */
export interface SignedStatement {
  statement: RetentionStatement;
  algorithm: "ed25519";
  public_key: string;
  signature: string;
}

/** The operator's configuration without secrets, as hashed into the statement. */
export function publicConfig(config: LetheConfig): object {
  return {
    suppliers: [...config.suppliers.values()].map((supplier) => ({
      id: supplier.id,
      type: supplier.type,
      base_url: supplier.baseUrl,
      zdr: supplier.zdr,
      timeouts: supplier.timeouts,
    })),
    models: [...config.models.values()].map((model) => ({
      id: model.id,
      strategy: model.strategy,
      routes: model.routes.map((route) => ({
        supplier: route.supplier.id,
        model: route.upstreamModel,
        weight: route.weight,
        price: route.price,
      })),
    })),
    limits: config.limits,
    retention: config.retention,
  };
}

/** Builds the statement from the running configuration. */
export function buildStatement(
  config: LetheConfig,
  version: string,
  options: { developmentRun?: boolean; now?: Date } = {},
): RetentionStatement {
  const now = options.now ?? new Date();
  return {
    lethe_version: version,
    issued_at: now.toISOString(),
    config_sha256: createHash("sha256")
      .update(canonicalJson(publicConfig(config)))
      .digest("hex"),
    content_retained: "none",
    metadata: { fields: METADATA_COLUMNS, retention_days: config.retention.metadataDays },
    aggregates: {
      description: "daily counts, token sums, cost and latency percentiles per account, model and supplier",
      account_unlinked_after_days: config.retention.aggregateDays,
    },
    ledger: {
      description:
        "the billing record: top-ups and adjustments, and each request's debit, which a day after the metadata window is folded into one debit per account and UTC day",
      per_request_debits_days: config.retention.metadataDays + 1,
    },
    response_cache: { enabled: false, window_seconds: 0 },
    logs: "allow-listed events of numbers, booleans and closed-set values; no request or response content",
    zdr_required_by_default: true,
    development_run: options.developmentRun ?? false,
    suppliers: [...config.suppliers.values()].map((supplier) => ({
      id: supplier.id,
      type: supplier.type,
      zdr: supplier.zdr,
    })),
    models: [...config.models.values()].map((model) => ({
      id: model.id,
      zdr_eligible: model.routes.some((route) => route.supplier.zdr),
    })),
  };
}

/** The public key as base64 of its raw 32 bytes (the last 32 of the SPKI DER). */
export function rawPublicKey(publicKey: KeyObject): string {
  const der = publicKey.export({ type: "spki", format: "der" });
  return der.subarray(der.length - 32).toString("base64");
}

/** Signs a statement with the server's Ed25519 key. */
export function signStatement(
  statement: RetentionStatement,
  keys: { privateKey: KeyObject; publicKey: KeyObject },
): SignedStatement {
  const signature = sign(null, Buffer.from(canonicalJson(statement)), keys.privateKey);
  return {
    statement,
    algorithm: "ed25519",
    public_key: rawPublicKey(keys.publicKey),
    signature: signature.toString("base64"),
  };
}

// the fixed SPKI DER prefix of an Ed25519 public key, before its 32 raw bytes
const ED25519_SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** Checks a signed statement against a raw Ed25519 public key (base64). */
export function verifyStatement(signed: SignedStatement, publicKeyBase64: string): boolean {
  const raw = Buffer.from(publicKeyBase64, "base64");
  if (raw.length !== 32 || signed.algorithm !== "ed25519") return false;
  try {
    const key = { key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: "der" as const, type: "spki" as const };
    return verify(null, Buffer.from(canonicalJson(signed.statement)), key, Buffer.from(signed.signature, "base64"));
  } catch {
    return false;
  }
}
