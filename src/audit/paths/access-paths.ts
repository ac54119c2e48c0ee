import {
  type AuditPath,
  type AuditSetting,
  expectStatus,
  NEEDS_FAKES,
  type PathContext,
  routeFor,
} from "./audit-path.js";
import { chatBody } from "./request-bodies.js";

const MAX_BAD_KEYS = 100;

/** A request whose body is full of canaries, authenticated in a given (wrong) way. */
async function refused(context: PathContext, model: string, auth: Parameters<PathContext["call"]>[2]) {
  const body = chatBody("openai", model, { system: context.canary(), user: context.canary() });
  const response = await context.call("openai", body, auth);
  expectStatus(context, response, 401);
}

/** Requests the rate limiter should stop: the limited account allows one request a minute. */
async function rateLimited(context: PathContext, model: string): Promise<void> {
  const key = context.keys.limited;
  if (key === null) context.notApplicable("needs an account the audit can create");
  for (let attempt = 0; attempt < 3; attempt++) {
    const body = chatBody("openai", model, { user: context.canary() });
    const response = await context.call("openai", body, { auth: { key } });
    if (response.status === 429) return;
    expectStatus(context, response, 200);
  }
  context.notApplicable("this build enforces no request rate limit (3 requests over an rpm of 1 were served)");
}

/** The same request twice: served once from a response cache, if this build has one. */
async function cached(context: PathContext, model: string): Promise<void> {
  const fake = context.fakes?.openai;
  if (fake === undefined) context.notApplicable("needs the audit's own fake supplier");
  const body = chatBody("openai", model, { system: context.canary(), user: context.canary() });
  body.temperature = 0;
  const before = fake.received;
  for (let attempt = 0; attempt < 2; attempt++) expectStatus(context, await context.call("openai", body), 200);
  if (fake.received - before === 2) {
    context.notApplicable("this build has no response cache (both identical requests reached the supplier)");
  }
}

/** Bad keys until the throttle refuses the address: it then refuses every key, so this path runs last. */
async function throttled(context: PathContext, model: string): Promise<void> {
  for (let attempt = 0; attempt < MAX_BAD_KEYS; attempt++) {
    const body = chatBody("openai", model, { user: context.canary() });
    const response = await context.call("openai", body, { auth: { key: `sk-lethe-${context.canary("token").text}` } });
    if (response.status === 429) return;
    if (response.status !== 401) return expectStatus(context, response, 401);
  }
  context.notApplicable(`this build does not throttle failed authentications (${MAX_BAD_KEYS} bad keys were refused)`);
}

/** Canaries in the API key slot, a revoked key, a missing key, rate limits and the response cache. */
export function accessPaths(setting: AuditSetting): AuditPath[] {
  const model = routeFor(setting, "openai").model;
  return [
    {
      name: "canary in the API key slot (Authorization: Bearer)",
      run: (context) => refused(context, model, { auth: { key: `sk-lethe-${context.canary("token").text}` } }),
    },
    {
      name: "canary in the API key slot (x-api-key)",
      async run(context) {
        const body = chatBody("anthropic", model, { user: context.canary() });
        const response = await context.call("anthropic", body, {
          auth: { header: "x-api-key", value: context.canary("header").text },
        });
        expectStatus(context, response, 401);
      },
    },
    {
      name: "canary in a malformed Authorization header",
      run: (context) =>
        refused(context, model, { auth: { header: "authorization", value: context.canary("header").text } }),
    },
    { name: "no API key", run: (context) => refused(context, model, { auth: "none" }) },
    {
      name: "revoked API key",
      embeddedOnly: "needs a key the audit revoked itself",
      async run(context) {
        const key = context.keys.revoked;
        if (key === null) return context.notApplicable("needs a key the audit can revoke");
        await refused(context, model, { auth: { key } });
      },
    },
    {
      name: "model list with a canary as the key",
      async run(context) {
        const response = await context.send({
          path: "/v1/models",
          headers: { authorization: `Bearer ${context.canary("token").text}` },
        });
        expectStatus(context, response, 401);
      },
    },
    {
      name: "canary as the model id of a model lookup, in each format",
      async run(context) {
        for (const client of ["openai", "anthropic"] as const) {
          expectStatus(context, await context.get(client, `/v1/models/${context.canary("token").text}`), 404);
          // a path the router cannot decode: refused without being quoted anywhere
          expectStatus(context, await context.get(client, `/v1/models/${context.canary("token").text}%E0%A4%A`), 400);
        }
      },
    },
    {
      name: "rate-limited request",
      embeddedOnly: "needs an account the audit limited itself",
      run: (context) => rateLimited(context, model),
    },
    { name: "cached response", embeddedOnly: NEEDS_FAKES, run: (context) => cached(context, model) },
    // must stay last: once throttled, the audit's address cannot authenticate for a minute
    {
      name: "throttled after repeated bad keys",
      embeddedOnly: "would lock this machine out of the target for a minute",
      run: (context) => throttled(context, model),
    },
  ];
}
