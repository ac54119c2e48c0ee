import type { RouteConfig } from "../../config/load-config.js";
import { LetheError } from "../../errors/lethe-error.js";
import type { WireFormat } from "../../suppliers/supplier.js";

/**
 * Anthropic's message threads (`thread`, the message-threads beta) have the supplier keep
 * the conversation so that a client sends only its new turns. That is retention: a
 * ZDR-qualified supplier is never asked to do it (Anthropic itself refuses threads to
 * zero-retention organisations), and an OpenAI-format supplier cannot. Such a route is
 * refused the way Anthropic refuses it, `thread_unsupported_request` in `error.details`,
 * so that the SDK's threads fall back to sending the whole conversation on their own
 * (`unsupportedRequestBehavior: "continue_unthreaded"`); other callers get a clear 400.
 * Only an Anthropic supplier that is not ZDR-qualified, on a request that does not
 * require ZDR, is sent the field.
 */
export function refuseThreadFor(body: Record<string, unknown>, route: RouteConfig, supplierFormat: WireFormat): void {
  const thread = body.thread;
  if (thread === undefined || thread === null) return;
  if (route.supplier.zdr) {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      "Message threads keep the conversation at the supplier, which zero data retention rules out: send the whole conversation without `thread`.",
      { param: "thread", details: { error_code: "thread_unsupported_request", unsupported: ["zdr"] } },
    );
  }
  if (supplierFormat === "openai") {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      "This model's supplier cannot keep message threads: send the whole conversation without `thread`.",
      { param: "thread", details: { error_code: "thread_unsupported_request", unsupported: ["thread"] } },
    );
  }
}
