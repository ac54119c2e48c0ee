import { performance } from "node:perf_hooks";
import type { RouteConfig } from "../config/load-config.js";
import { LetheError, UpstreamError } from "../errors/lethe-error.js";
import type { ClientRequest, ClientSurface } from "../formats/surface/client-surface.js";
import { type Gateway, reportUpstreamError } from "../http/gateway.js";
import { estimateInputTokens } from "../metering/count-tokens.js";
import type { Exchange } from "../metering/exchange.js";
import { noTokens } from "../metering/token-usage.js";
import type { Cancellation } from "../suppliers/cancellation.js";
import { unreadableAnswer } from "../suppliers/http/read-json.js";
import { refusesAgain, shutdownCut } from "../suppliers/http/upstream-failure.js";
import type { Supplier, SupplierResult, SupplierSaid, WireEvent } from "../suppliers/supplier.js";
import { backoffMs, wait } from "./backoff.js";
import { type RoutePlan, zdrUnavailable } from "./plan-routes.js";
import type { RouteStats } from "./route-stats.js";
import type { ExpectedTokens } from "./router.js";

/** A supplier's rejection on its way to the caller: the detail is the caller's own data. */
export class RejectedBySupplier extends Error {
  constructor(
    readonly error: UpstreamError,
    readonly detail: SupplierSaid | undefined,
  ) {
    super(error.message);
  }
}

/** The answer that will be relayed, and the route it came from. */
export interface Attempted {
  result: Exclude<SupplierResult, { kind: "rejected" }>;
  route: RouteConfig;
  supplier: Supplier;
  stats: RouteStats;
  /** A JSON answer as the client gets it (rendered while another route could still serve); null for a stream. */
  answer: string | null;
  /** This request still holds the route's half-open probe: only then may it release it without a verdict. */
  probe: boolean;
  /**
   * When the answering attempt was sent, in ms after the request began: a fallback's
   * figures start there, not with the failed attempts before it (route-stats.ts).
   */
  sentAfterMs: number;
}

/**
 * Whether a route of the plan outside `cannotCarry` can carry the request (its format
 * takes it). Asked only on the rare path where every candidate refused it: no closure
 * or look-up per request.
 */
function someRouteCarries(
  gateway: Gateway,
  surface: ClientSurface,
  request: ClientRequest,
  plan: RoutePlan,
  cannotCarry: Set<RouteConfig>,
): boolean {
  return plan.routes.some((route) => {
    if (cannotCarry.has(route)) return false;
    try {
      surface.upstreamBody(request, route, gateway.suppliers.get(route.supplier.id).format);
      return true;
    } catch {
      return false;
    }
  });
}

const DEFAULT_EXPECTED_OUTPUT = 512;
/** What the strategies that ignore tokens get: one shared object, not one per request. */
const NO_EXPECTATION: ExpectedTokens = Object.freeze({ input: 0, output: 0 });

/** Rough token expectations, computed only for the strategies that need them. */
function expectedTokens(request: ClientRequest, plan: RoutePlan): ExpectedTokens {
  if (plan.model.strategy !== "lowest-price" && plan.model.strategy !== "lowest-latency") return NO_EXPECTATION;
  const limit = request.body.max_completion_tokens ?? request.body.max_tokens;
  // about four characters a token: good enough to rank routes, and no tokenizer on the hot path
  const input = Math.ceil(JSON.stringify(request.body.messages ?? "").length / 4);
  return { input, output: typeof limit === "number" ? limit : DEFAULT_EXPECTED_OUTPUT };
}

/**
 * A client that left while a supplier worked on its request: the supplier read the
 * prompt all the same, and bills the operator for it. The record carries that input,
 * estimated here at four characters a token (and marked estimated), so the client pays
 * for it too: otherwise leaving before the answer would be free prefill at the
 * operator's expense. Not by the tokenizer: its tables cost about 80 MB once loaded, and
 * every load run that ends, every impatient client, would load them. What the supplier
 * may have generated after is not known, and not charged.
 */
function chargeAbandonedInput(exchange: Exchange, request: ClientRequest): void {
  if (exchange.usage !== null) return;
  exchange.usage = { ...noTokens(), input: estimateInputTokens(request.body, "estimate", 0) };
  exchange.tokensEstimated = true;
}

/**
 * A supplier's JSON answer rendered for the client, which meters its usage. An answer that is
 * JSON of the wrong shape (`choices: [null]`, `content: [null]`) can make the rendering
 * throw: that is the supplier's garbage, not Lethe's failure, so it is a bad response
 * (retryable, counted against the route, the next route tried), not LETHE_INTERNAL.
 */
function renderAnswer(
  surface: ClientSurface,
  request: ClientRequest,
  result: Extract<SupplierResult, { kind: "json" }>,
  supplier: Supplier,
  exchange: Exchange,
): string {
  try {
    return surface.jsonResponse(request, result, supplier.format, exchange);
  } catch (thrown) {
    if (thrown instanceof LetheError) throw thrown;
    // nothing of the unreadable answer is metered: a later route's answer, or none, is
    exchange.usage = null;
    exchange.tokensEstimated = false;
    throw unreadableAnswer();
  }
}

/** The route the operator-enabled `x-lethe-route` header pins, matched against the plan only. */
export function pinnedRoute(plan: RoutePlan, header: unknown): RouteConfig {
  const route = plan.routes.find((candidate) => candidate.key === header || candidate.supplier.id === header);
  if (route === undefined) {
    throw new LetheError("LETHE_INVALID_REQUEST", "x-lethe-route names no eligible route of this model.");
  }
  return route;
}

/**
 * Waits for a stream's first event before anything is sent to the client, so that a
 * stream that breaks before it (silence, a reset, garbage) fails this attempt and the
 * next route can still serve. Yields that event, then the rest, as they come. A supplier
 * that sends its headers and then nothing (a server busy with the prompt) is given up on
 * at `answerBy` (first_byte_ms from when the request left, or the routing deadline if
 * sooner), as one that sent no headers is, rather than waited on for idle_ms.
 */
async function firstEventArrived(
  result: { events: AsyncIterable<WireEvent>; giveUp?: () => void },
  answerBy: number,
): Promise<AsyncIterable<WireEvent>> {
  const iterator = result.events[Symbol.asyncIterator]();
  // whole tenths of a second: Node keeps a timer list per distinct duration
  const waitMs = Math.max(100, Math.ceil((answerBy - performance.now()) / 100) * 100);
  const timer = result.giveUp === undefined ? null : setTimeout(result.giveUp, waitMs);
  let first: IteratorResult<WireEvent>;
  try {
    first = await iterator.next();
  } finally {
    if (timer !== null) clearTimeout(timer);
  }
  async function* replay(): AsyncGenerator<WireEvent> {
    try {
      for (let next = first; next.done !== true; next = await iterator.next()) yield next.value;
    } finally {
      // the client left early: let the supplier stream close its upstream response
      await iterator.return?.();
    }
  }
  return replay();
}

/**
 * A supplier's retryable refusal. A `retry-after` rests the route for every request; a 429
 * that names one of a second or more is the supplier's rate limit, which says nothing
 * against the route's health, so it does not count towards the breaker (a client that
 * waited it out would otherwise find the route shut for the breaker's cooldown). Anything
 * else counts: a 429 asking for a millisecond on every request is a route that fails.
 */
function recordRefusal(stats: RouteStats, error: UpstreamError, now: number, probe: boolean): void {
  const retryAfter = error.retryAfterSeconds;
  if (retryAfter === null || retryAfter <= 0) {
    stats.recordFailure(now);
    return;
  }
  const rateLimited = error.upstreamStatus === 429;
  stats.rest(now, retryAfter, rateLimited);
  if (!rateLimited || retryAfter < 1) {
    stats.recordFailure(now);
    return;
  }
  stats.recordRateLimit();
  // a probe that met the rate limit gives no verdict: the next request after the rest probes
  if (probe) stats.breaker.release();
}

/** True when a route after `turn` in the first pass has a supplier with a free connection (or no pool). */
function roomLater(gateway: Gateway, candidates: readonly RouteConfig[], turn: number): boolean {
  for (let next = turn + 1; next < candidates.length; next++) {
    const route = candidates[next] as RouteConfig;
    if (gateway.suppliers.get(route.supplier.id).full?.() !== true) return true;
  }
  return false;
}

/**
 * Sends the request along the model's routes. Before any byte reached the client (for
 * a stream: before its first event arrived), a retryable failure (refused, timed out,
 * 429, 5xx, garbage) moves on to the next route; once every route was tried, routes
 * are retried after an exponential, jittered backoff that honours each route's own
 * `retry-after`. Attempts and total time are bounded. A caller error (4xx other than
 * 408/409/429) is returned at once.
 */
export async function attemptRoutes(
  gateway: Gateway,
  surface: ClientSurface,
  request: ClientRequest,
  exchange: Exchange,
  plan: RoutePlan,
  cancellation: Cancellation,
  pinned: RouteConfig | null,
): Promise<Attempted> {
  const router = gateway.router;
  const settings = router.settings;
  const candidates = pinned === null ? router.order(plan, expectedTokens(request, plan)) : [pinned];
  if (candidates.length === 0) throw router.noHealthyRoute(plan);
  const deadline = router.now() + settings.deadlineMs;
  let lastFailure: UpstreamError | RejectedBySupplier | null = null;
  let skipped = 0;
  // routes whose supplier cannot carry this request as asked (translation refused it, or a
  // reload took its ZDR qualification away), and why
  let cannotCarry: Set<RouteConfig> | null = null;
  let refusal: LetheError | null = null;
  let lostZdr = 0;
  // routes that refused Lethe's own credentials or model name: tried once a request
  let refusedLethe: Set<RouteConfig> | null = null;
  // routes passed over on the first pass because their supplier's connections were all taken
  let deferred: Set<RouteConfig> | null = null;
  for (let turn = 0; exchange.attempts < plan.model.maxAttempts && skipped < candidates.length; turn++) {
    const route = candidates[turn % candidates.length] as RouteConfig;
    if (cannotCarry?.has(route) || refusedLethe?.has(route)) {
      skipped++;
      continue;
    }
    const stats = router.statsFor(route);
    // a route that began to rest (another request's retry-after) since the order was made
    if (turn < candidates.length && pinned === null && stats.msUntilRested(router.now()) > 0) {
      skipped++;
      continue;
    }
    // a route passed over on the first pass for a full pool was never tried: no backoff before its first try
    const firstTry = deferred?.delete(route) === true;
    if (turn >= candidates.length && lastFailure instanceof UpstreamError && !firstTry) {
      const askedMs = stats.msUntilRested(router.now());
      // a supplier that asks to be left alone for longer than Lethe's own backoff: the wait
      // is the client's to make (its SDK honours retry-after), not a connection held open
      // for it, which the SDK's own retries would then multiply
      if (askedMs > settings.backoffMaxMs) {
        skipped++;
        continue;
      }
      const delay = backoffMs(settings, turn - candidates.length + 1, askedMs > 0 ? askedMs / 1000 : null);
      if (router.now() + delay >= deadline) break;
      await wait(delay, cancellation);
    }
    if (cancellation.aborted) break;
    // the plan kept ZDR-qualified routes only, but a reload since (during an earlier attempt
    // or the backoff just waited) may have taken a supplier's qualification away: a request
    // that requires ZDR never reaches it (fail closed). Nothing is awaited from here to the send.
    const suppliers = gateway.suppliers;
    if (plan.zdrEnforced && !suppliers.qualifiesForZdr(route.supplier.id)) {
      cannotCarry ??= new Set();
      cannotCarry.add(route);
      lostZdr++;
      skipped++;
      continue;
    }
    const supplier = suppliers.get(route.supplier.id);
    // a route whose supplier has every connection taken would hold the request in its queue:
    // on the first pass it goes after the routes that have room (when one does), and is tried
    // on the next pass as any route is (not counted as skipped: the pass must come)
    if (
      turn < candidates.length &&
      pinned === null &&
      supplier.full?.() === true &&
      roomLater(gateway, candidates, turn)
    ) {
      deferred ??= new Set();
      deferred.add(route);
      continue;
    }
    // a request that finds the breaker half-open and is let through is its one probe
    const probe = pinned === null && stats.breaker.state(router.now()) === "half-open";
    if (pinned === null && !stats.breaker.tryAcquire(router.now())) {
      skipped++;
      continue;
    }
    let upstream: ReturnType<ClientSurface["upstreamBody"]>;
    try {
      upstream = surface.upstreamBody(request, route, supplier.format);
    } catch (thrown) {
      // this route's format cannot carry the request (n > 1 to Anthropic, say): another route's
      // may, so it is passed over, not counted as an attempt; refused only if none can
      if (probe) stats.breaker.release();
      if (!(thrown instanceof LetheError) || thrown instanceof UpstreamError) throw thrown;
      refusal = thrown;
      cannotCarry ??= new Set();
      cannotCarry.add(route);
      skipped++;
      continue;
    }
    skipped = 0;
    router.sending(plan, route);
    exchange.attempts++;
    exchange.supplier = supplier.id;
    exchange.price = route.price;
    const remaining = deadline - router.now();
    const sentAt = performance.now();
    const sentAfterMs = sentAt - exchange.startedAt;
    try {
      const result = await supplier.send({
        body: upstream.body,
        text: upstream.text,
        stream: request.stream,
        cancellation,
        // the deadline bounds the wait for an answer (a wait for a pooled connection too),
        // not the length of a stream once it flows
        timeouts: { ...route.timeouts, answerWithinMs: Math.max(1, remaining) },
        ...(request.headers !== undefined && { headers: request.headers }),
      });
      if (result.kind === "stream") {
        // first_byte_ms from when the request left (after any wait for a pooled connection),
        // the deadline from before it
        const firstByteBy = (result.sentAt ?? sentAt) + route.timeouts.firstByteMs;
        const events = await firstEventArrived(result, Math.min(firstByteBy, sentAt + Math.max(1, remaining)));
        // the route answers: a half-open breaker closes now, not when a stream that may run
        // for minutes ends (its probe would keep the route from everyone else until then)
        stats.breaker.onSuccess();
        return { result: { kind: "stream", events }, answer: null, route, supplier, stats, probe: false, sentAfterMs };
      }
      if (result.kind === "json") {
        const answer = renderAnswer(surface, request, result, supplier, exchange);
        return { result, answer, route, supplier, stats, probe, sentAfterMs };
      }
      reportUpstreamError(gateway, supplier.id, exchange, result.error);
      lastFailure = new RejectedBySupplier(result.error, result.detail);
      if (!result.error.retryable) {
        // the caller's own mistake: the route itself answered fine
        stats.breaker.onSuccess();
        throw lastFailure;
      }
      recordRefusal(stats, result.error, router.now(), probe);
      lastFailure = result.error;
      if (refusesAgain(result.error.upstreamStatus)) {
        refusedLethe ??= new Set();
        refusedLethe.add(route);
      }
    } catch (thrown) {
      if (thrown instanceof RejectedBySupplier) throw thrown;
      // no verdict on the route (Lethe's own failure, a client that left, the shutdown deadline):
      // a probe goes back for the next request; another request's release must not free a
      // probe that some other request holds. A cut by the deadline is not charged to the client.
      if (
        !(thrown instanceof UpstreamError) ||
        thrown.code === "LETHE_CLIENT_CLOSED" ||
        thrown.code === "LETHE_SHUTTING_DOWN"
      ) {
        if (probe) stats.breaker.release();
        if (thrown instanceof UpstreamError && thrown.sent && thrown.code === "LETHE_CLIENT_CLOSED") {
          chargeAbandonedInput(exchange, request);
        }
        throw thrown;
      }
      reportUpstreamError(gateway, supplier.id, exchange, thrown);
      recordRefusal(stats, thrown, router.now(), probe);
      lastFailure = thrown;
      if (!thrown.retryable) throw thrown;
    }
    if (router.now() >= deadline) break;
  }
  // a refusal only when no route could carry the request: one whose breaker kept it out of
  // `candidates` may, and then the model is unhealthy (503, retryable), not the request wrong
  // (a pinned route is the only one the client allows: its refusal stands)
  if (
    refusal !== null &&
    cannotCarry?.size === candidates.length &&
    (pinned !== null || !someRouteCarries(gateway, surface, request, plan, cannotCarry))
  ) {
    throw refusal;
  }
  if (cancellation.reason === "shutdown") throw shutdownCut(false);
  if (cancellation.aborted)
    throw new UpstreamError("LETHE_CLIENT_CLOSED", "The client closed the connection.", {
      upstreamStatus: 0,
      retryable: false,
    });
  // a reload left the model no ZDR-qualified route at all: the caller is told so, as the
  // next request would be (403), not given a supplier failure or a retryable 503
  if (lostZdr > 0 && plan.routes.every((route) => !gateway.suppliers.qualifiesForZdr(route.supplier.id))) {
    throw zdrUnavailable(plan.model.id);
  }
  throw lastFailure ?? router.noHealthyRoute(plan);
}
