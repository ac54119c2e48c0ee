import type { AuditRequest, AuditResponse } from "../audit-client.js";
import { type Canary, type CanaryForm, mentions } from "../canaries.js";
import type { FakeSupplier } from "../fakes/fake-supplier.js";

/** The two client wire formats Lethe serves. */
export type ClientFormat = "openai" | "anthropic";

/** The client formats, in the order paths are listed. */
export const CLIENT_FORMATS: readonly ClientFormat[] = ["openai", "anthropic"];

/** A model the paths send to, and the wire format of the supplier behind it (null: unknown). */
export interface AuditRoute {
  label: string;
  model: string;
  format: "openai" | "anthropic" | null;
}

/** Where the audit runs: against its own gateway and fakes, or a deployment it cannot steer. */
export interface AuditSetting {
  embedded: boolean;
  /** One route per supplier format in embedded mode; one per model driven against a target. */
  routes: AuditRoute[];
}

/**
 * The route a model-independent path uses (auth failures, malformed input: the gateway
 * refuses them before any model matters), so it runs once, not once per model.
 */
export function routeFor(setting: AuditSetting, format: "openai" | "anthropic"): AuditRoute {
  return setting.routes.find((route) => route.format === format) ?? (setting.routes[0] as AuditRoute);
}

/**
 * The routes a content path runs on, so every supplier behind them sees its canaries:
 * the one to a supplier of `format` in embedded mode; every model against a target,
 * whose supplier formats the audit cannot know.
 */
export function routesFor(setting: AuditSetting, format: "openai" | "anthropic"): AuditRoute[] {
  const routes = setting.routes.filter((route) => route.format === format || route.format === null);
  return routes.length > 0 ? routes : [routeFor(setting, format)];
}

/** How a call authenticates: the audit's key by default, another value, or none at all. */
export type CallAuth = { key: string } | { header: string; value: string } | "none";

/** Options of one call to an inference endpoint. */
export interface CallOptions {
  /** Another endpoint than the format's inference one (count_tokens). */
  endpoint?: string;
  auth?: CallAuth;
  headers?: Record<string, string>;
  abortWhen?: AuditRequest["abortWhen"];
}

/** What a path can use while it runs. */
export interface PathContext {
  readonly setting: AuditSetting;
  /** Mints a canary on this path's account. */
  canary(form?: CanaryForm): Canary;
  /** Calls the inference endpoint of a client format, authenticated like that format's SDK. */
  call(client: ClientFormat, body: unknown, options?: CallOptions): Promise<AuditResponse>;
  /** Sends a raw request. */
  send(request: AuditRequest): Promise<AuditResponse>;
  /** GETs a path (and query), authenticated like `client`'s SDK. */
  get(client: ClientFormat, path: string): Promise<AuditResponse>;
  /** The fake suppliers, in embedded mode. */
  readonly fakes: { openai: FakeSupplier; anthropic: FakeSupplier } | null;
  /** Keys the embedded audit minted for itself: a revoked one and one of a rate-limited account. */
  readonly keys: { revoked: string | null; limited: string | null };
  /** Notes that the path did not go as designed; the embedded audit fails on any such note. */
  expect(condition: boolean, what: string): void;
  /** Stops the path: this build or setting cannot drive it. */
  notApplicable(reason: string): never;
}

/** One way content can travel through Lethe, driven with fresh canaries. */
export interface AuditPath {
  name: string;
  /** Why the path needs the audit's own gateway (fakes, config, store): not applicable against a --target. */
  embeddedOnly?: string;
  run(context: PathContext): Promise<void>;
}

/** Why most embedded-only paths cannot run against a deployment. */
export const NEEDS_FAKES = "needs the audit's own fake suppliers";

/** Thrown by `notApplicable`: the runner lists the path with this reason. */
export class PathNotApplicable extends Error {
  override name = "PathNotApplicable";
}

/** Checks the status of an answer. */
export function expectStatus(context: PathContext, response: AuditResponse, status: number): void {
  context.expect(response.status === status, `answered ${response.status}, expected ${status}`);
}

/** Checks that the answer carried the canary back, which only the audit's own fakes guarantee. */
export function expectEcho(context: PathContext, response: AuditResponse, canary: Canary): void {
  if (context.setting.embedded)
    context.expect(mentions(response.text, canary), "the answer did not carry the prompt back");
}
