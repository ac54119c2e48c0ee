import {
  type AuditPath,
  type AuditRoute,
  type AuditSetting,
  CLIENT_FORMATS,
  type ClientFormat,
  expectEcho,
  expectStatus,
  NEEDS_FAKES,
  routeFor,
  routesFor,
} from "./audit-path.js";
import { chatBody } from "./request-bodies.js";

/** Over the embedded gateway's limit, and over Lethe's default limit (32 MiB) for a --target. */
const EMBEDDED_OVERSIZE = 300 * 1024;
const TARGET_OVERSIZE = 33 * 1024 * 1024;

function endpointOf(client: ClientFormat): string {
  return client === "openai" ? "/v1/chat/completions" : "/v1/messages";
}

/** Bad input from each client format: each must be refused without a trace. */
function badInputPaths(client: ClientFormat, setting: AuditSetting): AuditPath[] {
  const model = routeFor(setting, client).model;
  return [
    {
      name: `${client} client: malformed JSON`,
      async run(context) {
        const text = JSON.stringify(chatBody(client, model, { user: context.canary() }));
        const response = await context.call(client, text.slice(0, -2));
        expectStatus(context, response, 400);
      },
    },
    {
      name: `${client} client: oversized body`,
      async run(context) {
        const body = chatBody(client, model, { system: context.canary(), user: context.canary() });
        const size = context.setting.embedded ? EMBEDDED_OVERSIZE : TARGET_OVERSIZE;
        // never valid JSON, so a deployment with a larger limit still sends nothing upstream
        const text = `${JSON.stringify(body).slice(0, -1)},"padding":"${"x".repeat(size)}`;
        const response = await context.call(client, text);
        expectStatus(context, response, 413);
      },
    },
    {
      name: `${client} client: body that fails validation`,
      async run(context) {
        const body = chatBody(client, model, { user: context.canary() });
        body.messages = { role: "user", content: context.canary().text };
        body.temperature = context.canary().text;
        const response = await context.call(client, body);
        expectStatus(context, response, 400);
      },
    },
    {
      name: `${client} client: unknown model (canary in the model field)`,
      async run(context) {
        const response = await context.call(
          client,
          chatBody(client, context.canary().text, { user: context.canary() }),
        );
        expectStatus(context, response, 404);
      },
    },
    {
      name: `${client} client: canary as the x-lethe-zdr header (refused, not ignored)`,
      async run(context) {
        const body = chatBody(client, model, { user: context.canary() });
        const response = await context.call(client, body, {
          headers: { "x-lethe-zdr": context.canary("header").text },
        });
        expectStatus(context, response, 400);
      },
    },
  ];
}

/** Canaries in request headers and the query string, which the gateway takes to the model's supplier. */
function headerPath(client: ClientFormat, route: AuditRoute): AuditPath {
  return {
    name: `${client} client -> ${route.label}: canaries in headers and the query string`,
    async run(context) {
      const user = context.canary();
      const header = () => context.canary("header").text;
      const headers: Record<string, string> = {
        "user-agent": header(),
        "x-request-id": header(),
        "x-audit-unknown": header(),
        "openai-organization": header(),
        // forwarded to Anthropic-format suppliers; must still never be logged or kept
        "anthropic-beta": header(),
      };
      const query = encodeURIComponent(context.canary().text);
      const body = chatBody(client, route.model, { user });
      const response = await context.call(client, body, {
        headers,
        endpoint: `${endpointOf(client)}?trace=${query}`,
      });
      expectStatus(context, response, 200);
      expectEcho(context, response, user);
    },
  };
}

/** Malformed and oversized bodies, validation failures, unknown models, canaries in fields and headers. */
export function inputPaths(setting: AuditSetting): AuditPath[] {
  const paths = CLIENT_FORMATS.flatMap((client) => [
    ...badInputPaths(client, setting),
    ...routesFor(setting, client).map((route) => headerPath(client, route)),
  ]);
  for (const toAnthropic of routesFor(setting, "anthropic")) {
    paths.push({
      name: `openai client -> ${toAnthropic.label}: canary in the user field`,
      async run(context) {
        const user = context.canary();
        const body = chatBody("openai", toAnthropic.model, { user, endUser: context.canary() });
        const response = await context.call("openai", body);
        expectStatus(context, response, 200);
        expectEcho(context, response, user);
      },
    });
  }
  for (const toOpenAI of routesFor(setting, "openai")) {
    paths.push({
      name: `anthropic client -> ${toOpenAI.label}: canary in metadata.user_id`,
      async run(context) {
        const user = context.canary();
        const body = chatBody("anthropic", toOpenAI.model, { user, endUser: context.canary(), stream: true });
        const response = await context.call("anthropic", body);
        expectStatus(context, response, 200);
        expectEcho(context, response, user);
      },
    });
  }
  const toOpenAI = routeFor(setting, "openai");
  paths.push(
    {
      name: "anthropic client -> openai supplier: content the supplier format cannot take",
      embeddedOnly: NEEDS_FAKES,
      async run(context) {
        const body = chatBody("anthropic", toOpenAI.model, { user: context.canary() });
        const document = {
          type: "base64",
          media_type: "text/plain",
          data: Buffer.from(context.canary().text).toString("base64"),
        };
        (body.messages as { content: unknown[] }[])[0]?.content.push({ type: "document", source: document });
        const response = await context.call("anthropic", body);
        expectStatus(context, response, 400);
      },
    },
    {
      name: "openai client: canary in x-lethe-route",
      async run(context) {
        const headers = { "x-lethe-route": context.canary("header").text };
        const body = chatBody("openai", toOpenAI.model, { user: context.canary() });
        const response = await context.call("openai", body, { headers });
        // the audit's gateway honours the header, so a route no model has is refused; a target
        // may have routing.allow_route_header off (the default), and then ignores it and serves
        if (context.setting.embedded || response.status !== 200) expectStatus(context, response, 400);
      },
    },
    {
      name: "unknown endpoint (canaries in the URL path and query)",
      async run(context) {
        const path = `/v1/${encodeURIComponent(context.canary().text)}?q=${encodeURIComponent(context.canary().text)}`;
        const response = await context.call("openai", { note: context.canary().text }, { endpoint: path });
        expectStatus(context, response, 404);
      },
    },
  );
  return paths;
}
