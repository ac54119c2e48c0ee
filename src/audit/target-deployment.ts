import { AuditClient } from "./audit-client.js";
import type { TargetStores } from "./stores/database-stores.js";

/** Bad input to the audit (an unreachable target, a refused key): one line, exit code 2. */
export class AuditInputError extends Error {
  override name = "AuditInputError";
}

/** A running deployment the audit may drive: its root URL, the models it lists, and a client. */
export interface TargetDeployment {
  root: string;
  /** What the report shows: the origin, never credentials or the key. */
  shown: string;
  /** Every model id `GET /v1/models` lists, in its order. */
  models: string[];
  /** Whether it stores in PostgreSQL and uses Redis, as its /readyz says. */
  stores: TargetStores;
  client: AuditClient;
}

const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$/;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The model ids of a `GET /v1/models` answer, each once. */
function listedModels(text: string): string[] {
  try {
    const parsed: unknown = JSON.parse(text);
    const data: unknown[] = isObject(parsed) && Array.isArray(parsed.data) ? parsed.data : [];
    // a Lethe model id is letters, digits and . _ : / - (config-schema.ts): any other is no
    // Lethe model's, and is not driven nor printed (a hostile target's could carry escapes)
    const ids = data.flatMap((entry) =>
      isObject(entry) && typeof entry.id === "string" && MODEL_ID.test(entry.id) ? [entry.id] : [],
    );
    return [...new Set(ids)];
  } catch {
    return [];
  }
}

/** What a `/readyz` answer says of the stores in use; null for what it does not say (an older Lethe). */
function storesOf(text: string): TargetStores {
  try {
    const parsed: unknown = JSON.parse(text);
    if (!isObject(parsed)) return { postgres: null, redis: null };
    const redis = isObject(parsed.dependencies) ? parsed.dependencies.redis : undefined;
    return {
      postgres: typeof parsed.store === "string" ? parsed.store === "postgres" : null,
      redis: typeof redis === "string" ? redis !== "not configured" : null,
    };
  } catch {
    return { postgres: null, redis: null };
  }
}

/**
 * Checks that the target answers and accepts the key (GET /v1/models) before any
 * canary is sent, so bad input fails fast with a clear reason.
 */
export async function connectTarget(url: string, key: string): Promise<TargetDeployment> {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new AuditInputError("--target must be an http(s) URL, e.g. http://127.0.0.1:8080");
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new AuditInputError("--target must be an http(s) URL, e.g. http://127.0.0.1:8080");
  }
  const root = `${base.origin}${base.pathname.replace(/\/+$/, "").replace(/\/v1$/, "")}`;
  const shown = base.origin;
  if (key === "") throw new AuditInputError("--key must not be empty");
  const client = new AuditClient(root);
  try {
    const response = await client.send({ path: "/v1/models", headers: { authorization: `Bearer ${key}` } });
    if (response.status === 0) throw new AuditInputError(`cannot reach ${shown}: is Lethe running there?`);
    if (response.status === 401 || response.status === 403) {
      throw new AuditInputError(
        `${shown} refused the key (HTTP ${response.status}): pass a valid, active key with --key`,
      );
    }
    if (response.status === 429 && response.text.includes("LETHE_AUTH_THROTTLED")) {
      throw new AuditInputError(
        `${shown} is refusing keys from this address after too many failed ones (HTTP 429; an audit's own bad-key paths count): wait a minute`,
      );
    }
    if (response.status === 429) {
      throw new AuditInputError(
        `${shown} rate-limited the key (HTTP 429): wait, or pass a key whose account has no rpm/tpm limit`,
      );
    }
    if (response.status !== 200) {
      throw new AuditInputError(`${shown} answered HTTP ${response.status} to GET /v1/models: is it a Lethe gateway?`);
    }
    const models = listedModels(response.text);
    if (models.length === 0) throw new AuditInputError(`${shown} serves no models to audit`);
    const ready = await client.send({ path: "/readyz" });
    return { root, shown, models, stores: storesOf(ready.text), client };
  } catch (thrown) {
    await client.close();
    throw thrown;
  }
}
