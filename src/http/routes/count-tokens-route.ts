import { anthropicHeaders } from "../../formats/anthropic/anthropic-surface.js";
import { countTokensRequestSchema } from "../../formats/anthropic/messages-request-schema.js";
import { validateBody } from "../../formats/validation/request-validation.js";
import { estimateInputTokens } from "../../metering/count-tokens.js";
import { RejectedBySupplier } from "../../routing/attempt-routes.js";
import { findModel, routesOf } from "../../routing/plan-routes.js";
import { zdrRequiredByHeader } from "../../zdr/zdr-header.js";
import { cancelOnClientClose } from "../cancel-on-close.js";
import { finishExchange, reportUpstreamError } from "../gateway.js";
import type { MeteredCall, MeteredEndpoint } from "../metered-call.js";

/**
 * `POST /v1/messages/count_tokens`: asks the model's first eligible route when its
 * supplier counts tokens itself (Anthropic), and counts locally otherwise.
 */
export const countTokensEndpoint: MeteredEndpoint = {
  path: "/v1/messages/count_tokens",
  format: "anthropic",
  serve: countTokens,
};

async function countTokens(call: MeteredCall): Promise<void> {
  const { gateway, exchange, request, response } = call;
  const body = validateBody(countTokensRequestSchema, call.body);
  const zdrRequired = zdrRequiredByHeader(request.headers["x-lethe-zdr"]) || (exchange.auth?.zdrRequired ?? true);
  const model = findModel(gateway.config, body.model);
  // known before the ZDR refusal that may follow: its record names the model it refused
  exchange.model = model.id;
  exchange.zdrEnforced = zdrRequired;
  const plan = routesOf(model, zdrRequired);
  const route = plan.routes[0];
  const supplier = route && gateway.suppliers.get(route.supplier.id);
  let inputTokens: number | null = null;
  if (supplier?.countTokens !== undefined && route !== undefined) {
    exchange.supplier = supplier.id;
    exchange.attempts = 1;
    const cancellation = cancelOnClientClose(gateway, response);
    const result = await supplier.countTokens({
      body: { ...body, model: route.upstreamModel },
      stream: false,
      cancellation,
      headers: anthropicHeaders(request.headers),
    });
    if (result.kind === "rejected") {
      const status = result.error.upstreamStatus;
      if (status !== 404 && status !== 405) throw new RejectedBySupplier(result.error, result.detail);
      // no count_tokens there (an Anthropic-format server without it): Lethe counts. A 404
      // could also be a model name the supplier does not know; the event tells the operator,
      // and the request itself would fail loudly
      reportUpstreamError(gateway, supplier.id, exchange, result.error);
    } else {
      inputTokens = result.kind === "json" ? Number(result.body.input_tokens) : 0;
    }
  }
  if (inputTokens === null) {
    // images and documents counted too (media-tokens.ts): a count of 0 for them would tell
    // a client its request fits a context it may not
    inputTokens = estimateInputTokens(body);
    exchange.tokensEstimated = true;
  }
  finishExchange(gateway, exchange, 200, null);
  const text = JSON.stringify({ input_tokens: inputTokens });
  call.headers.push(
    "x-lethe-zdr",
    exchange.zdrEnforced ? "enforced" : "off",
    "content-type",
    "application/json; charset=utf-8",
    "content-length",
    Buffer.byteLength(text),
  );
  response.writeHead(200, call.headers);
  response.end(text);
}
