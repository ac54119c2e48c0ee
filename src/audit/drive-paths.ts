import type { AuditClient, AuditResponse } from "./audit-client.js";
import type { CanaryRegistry } from "./canary-registry.js";
import type { FakeSupplier } from "./fakes/fake-supplier.js";
import {
  type AuditPath,
  type AuditSetting,
  type CallOptions,
  type ClientFormat,
  type PathContext,
  PathNotApplicable,
} from "./paths/audit-path.js";

/**
 * How one path went. `notes` never hold content: only the path's own wording and numbers.
 * "refused by limits": the gateway turned the audit's own key away (its rate limit, its
 * credit, a draining gateway) before the path's canaries reached the content plane, so the
 * path proves nothing.
 */
export interface PathRun {
  name: string;
  outcome: "driven" | "not applicable" | "not as designed" | "refused by limits";
  notes: string[];
  /** The path's inference requests with the audit's own key that were answered 2xx. */
  served?: number;
}

/** The refusals of a key's limits (not of the request itself): the canaries went no further than the gate. */
const LIMIT_REFUSAL =
  /"code":"(LETHE_RATE_LIMITED|LETHE_AUTH_THROTTLED|LETHE_INSUFFICIENT_CREDIT|LETHE_SHUTTING_DOWN|LETHE_METERING_UNAVAILABLE)"/;

/**
 * Against a target, a ZDR refusal too: the key's account requires ZDR and the model has no
 * ZDR supplier, so its routes never see the audit's canaries (another account's would).
 * The embedded audit drives such a refusal on purpose (its retaining-supplier path).
 */
const ZDR_REFUSAL = '"code":"LETHE_ZDR_UNAVAILABLE"';

/** The refused code of a response the audit's own key got, or null. */
function limitRefusal(response: AuditResponse, embedded: boolean): string | null {
  const status = response.status;
  if (status === 403 && !embedded && response.text.includes(ZDR_REFUSAL)) return "LETHE_ZDR_UNAVAILABLE";
  if (status !== 429 && status !== 402 && status !== 503) return null;
  return LIMIT_REFUSAL.exec(response.text)?.[1] ?? null;
}

/** Everything the paths run against. */
export interface PathEnvironment {
  setting: AuditSetting;
  client: AuditClient;
  /** The key the audit sends by default. */
  key: string;
  registry: CanaryRegistry;
  fakes: { openai: FakeSupplier; anthropic: FakeSupplier } | null;
  keys: PathContext["keys"];
}

const ANTHROPIC_VERSION = "2023-06-01";

function inferenceEndpoint(client: ClientFormat): string {
  return client === "openai" ? "/v1/chat/completions" : "/v1/messages";
}

/** The headers of a call: authentication the way the format's SDK sends it, then the extras. */
function callHeaders(client: ClientFormat, key: string, options: CallOptions): Record<string, string> {
  const headers: Record<string, string> = client === "anthropic" ? { "anthropic-version": ANTHROPIC_VERSION } : {};
  const auth = options.auth ?? { key };
  if (auth !== "none") {
    if ("key" in auth) {
      if (client === "openai") headers.authorization = `Bearer ${auth.key}`;
      else headers["x-api-key"] = auth.key;
    } else headers[auth.header] = auth.value;
  }
  return { ...headers, ...options.headers };
}

function contextFor(
  environment: PathEnvironment,
  pathIndex: number,
  notes: string[],
  refusals: Set<string>,
  tally: { served: number },
): PathContext {
  const { client, registry } = environment;
  // only the audit's own key counts: paths that use another key mean to be refused
  const watched = async (sent: Promise<AuditResponse>, ownKey: boolean, inference = false): Promise<AuditResponse> => {
    const response = await sent;
    const refused = ownKey ? limitRefusal(response, environment.setting.embedded) : null;
    if (refused !== null) refusals.add(refused);
    // an inference answered: a supplier was reached (a model list needs none)
    if (inference && ownKey && response.status >= 200 && response.status < 300) tally.served++;
    return response;
  };
  return {
    setting: environment.setting,
    fakes: environment.fakes,
    keys: environment.keys,
    canary: (form) => registry.mint(pathIndex, form),
    call(format, body, options = {}): Promise<AuditResponse> {
      const sent = client.send({
        method: "POST",
        path: options.endpoint ?? inferenceEndpoint(format),
        body,
        headers: callHeaders(format, environment.key, options),
        ...(options.abortWhen !== undefined && { abortWhen: options.abortWhen }),
      });
      // a count_tokens may be answered by Lethe itself: only a chat or a message says a supplier answered
      return watched(sent, options.auth === undefined, !(options.endpoint ?? "").includes("count_tokens"));
    },
    send: (request) => client.send(request),
    get: (format, path) =>
      watched(client.send({ method: "GET", path, headers: callHeaders(format, environment.key, {}) }), true),
    expect(condition, what) {
      if (!condition) notes.push(what);
    },
    notApplicable(reason): never {
      throw new PathNotApplicable(reason);
    },
  };
}

/** Drives every path in turn, each with fresh canaries, and says how each went. */
export async function drivePaths(paths: AuditPath[], environment: PathEnvironment): Promise<PathRun[]> {
  const runs: PathRun[] = [];
  for (const [index, path] of paths.entries()) {
    if (path.embeddedOnly !== undefined && !environment.setting.embedded) {
      runs.push({ name: path.name, outcome: "not applicable", notes: [path.embeddedOnly] });
      continue;
    }
    const notes: string[] = [];
    const refusals = new Set<string>();
    const tally = { served: 0 };
    let outcome: PathRun["outcome"] = "driven";
    try {
      await path.run(contextFor(environment, index, notes, refusals, tally));
      // a deployment may answer differently (a model without images, a stricter limit): a remark there
      if (notes.length > 0 && environment.setting.embedded) outcome = "not as designed";
    } catch (thrown) {
      if (thrown instanceof PathNotApplicable) {
        outcome = "not applicable";
        notes.splice(0, notes.length, thrown.message);
      } else {
        outcome = "not as designed";
        // the kind only: an error's message could quote what the path sent
        notes.push(`failed (${thrown instanceof Error ? thrown.name : "unknown error"})`);
      }
    }
    if (refusals.size > 0 && outcome !== "not applicable") {
      outcome = "refused by limits";
      notes.push(`the audit's key was refused (${[...refusals].join(", ")}): its canaries did not reach the gateway`);
    }
    // a behaviour no request used (the gateway refused first) must not leak into the next path
    environment.fakes?.openai.reset();
    environment.fakes?.anthropic.reset();
    runs.push({ name: path.name, outcome, notes, served: tally.served });
  }
  return runs;
}
