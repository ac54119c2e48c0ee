import type { RoutingSettings } from "../config/load-config.js";
import type { Cancellation } from "../suppliers/cancellation.js";

/**
 * The wait before retry number `retry` (1-based) of a route already tried: exponential
 * with full jitter, never less than what the supplier asked for in `retry-after`.
 */
export function backoffMs(
  settings: RoutingSettings,
  retry: number,
  retryAfterSeconds: number | null,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(settings.backoffMaxMs, settings.backoffBaseMs * 2 ** (retry - 1));
  const jittered = Math.floor(ceiling * random());
  return retryAfterSeconds === null ? jittered : Math.max(jittered, Math.ceil(retryAfterSeconds * 1000));
}

/** Waits `ms`, or less if the request is cancelled first (the client left: no point waiting). */
export function wait(ms: number, cancellation: Cancellation): Promise<void> {
  if (ms <= 0 || cancellation.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      unsubscribe();
      resolve();
    };
    const timer = setTimeout(done, ms);
    const unsubscribe = cancellation.onAbort(done);
  });
}
