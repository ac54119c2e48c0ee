import type { LetheConfig, ModelConfig, RouteConfig } from "../config/load-config.js";
import { LetheError } from "../errors/lethe-error.js";

/** The routes a request may use, in the order to try them. */
export interface RoutePlan {
  model: ModelConfig;
  routes: RouteConfig[];
  /** True when only ZDR-qualified suppliers were allowed. */
  zdrEnforced: boolean;
}

/** Each model's ZDR-qualified routes, filtered once per model rather than per request. */
const zdrRoutesOf = new WeakMap<ModelConfig, RouteConfig[]>();

function zdrRoutes(model: ModelConfig): RouteConfig[] {
  let routes = zdrRoutesOf.get(model);
  if (routes === undefined) {
    routes = model.routes.filter((route) => route.supplier.zdr);
    zdrRoutesOf.set(model, routes);
  }
  return routes;
}

/** The configured model a client's `model` names; refused (404) when there is none. */
export function findModel(config: LetheConfig, requestedModel: string): ModelConfig {
  const model = config.models.get(requestedModel);
  if (model === undefined) {
    throw new LetheError(
      "LETHE_UNKNOWN_MODEL",
      "The requested model does not exist here; GET /v1/models lists the models.",
      { param: "model" },
    );
  }
  return model;
}

/**
 * A model's routes, filtered by the ZDR policy first. Fails closed: when ZDR is required
 * and no ZDR supplier serves the model, the request is refused rather than sent anywhere else.
 */
export function routesOf(model: ModelConfig, zdrRequired: boolean): RoutePlan {
  const routes = zdrRequired ? zdrRoutes(model) : model.routes;
  if (routes.length === 0) throw zdrUnavailable(model.id);
  return { model, routes, zdrEnforced: zdrRequired };
}

/** The refusal of a request that requires ZDR when no qualified supplier serves its model. */
export function zdrUnavailable(modelId: string): LetheError {
  return new LetheError(
    "LETHE_ZDR_UNAVAILABLE",
    `Zero data retention is required, and no ZDR-qualified supplier serves model '${modelId}'.`,
    { param: "model" },
  );
}
