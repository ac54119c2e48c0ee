import {
  type AuditPath,
  type AuditRoute,
  type AuditSetting,
  CLIENT_FORMATS,
  type ClientFormat,
  expectEcho,
  expectStatus,
  NEEDS_FAKES,
  type PathContext,
  routeFor,
  routesFor,
} from "./audit-path.js";
import { chatBody } from "./request-bodies.js";

/** Which optional parts of a conversation a path fills with canaries. */
interface Shape {
  system?: boolean;
  tools?: boolean;
  image?: boolean;
  thinking?: boolean;
  reasoning?: boolean;
  stream?: boolean;
}

/** Sends one conversation of the given shape and checks it came back through the response path. */
async function converse(context: PathContext, client: ClientFormat, model: string, shape: Shape): Promise<void> {
  const user = context.canary();
  const conversation = {
    user,
    stream: shape.stream === true,
    reasoning: shape.reasoning === true,
    ...(shape.system && { system: context.canary() }),
    ...(shape.image && { image: context.canary() }),
    ...(shape.thinking && { thinking: context.canary() }),
    ...(shape.tools && {
      tools: { definition: context.canary(), callArguments: context.canary(), result: context.canary() },
    }),
  };
  const response = await context.call(client, chatBody(client, model, conversation));
  expectStatus(context, response, 200);
  expectEcho(context, response, user);
}

/** The paths every client format takes to every supplier format. */
function pairPaths(client: ClientFormat, route: AuditRoute): AuditPath[] {
  const pair = `${client} client -> ${route.label}`;
  const path = (what: string, shape: Shape): AuditPath => ({
    name: `${pair}: ${what}`,
    run: (context) => converse(context, client, route.model, shape),
  });
  return [
    path("system prompt and messages", { system: true }),
    path("streamed", { system: true, stream: true }),
    path("tool definition, call and result", { tools: true }),
    path("tool call streamed", { tools: true, stream: true }),
    path("base64 image", { image: true }),
  ];
}

/** Anthropic's `count_tokens`, counted upstream (Anthropic supplier) or locally (OpenAI supplier). */
function countTokensPath(route: AuditRoute): AuditPath {
  return {
    name: `anthropic client -> ${route.label}: count_tokens`,
    async run(context) {
      const body = chatBody("anthropic", route.model, { system: context.canary(), user: context.canary() });
      delete body.max_tokens;
      const response = await context.call("anthropic", body, { endpoint: "/v1/messages/count_tokens" });
      expectStatus(context, response, 200);
    },
  };
}

/** Sends to a model of the audit's own config, which a --target does not have. */
function embeddedModelPath(name: string, client: ClientFormat, model: string, shape: Shape): AuditPath {
  return {
    name,
    embeddedOnly: "needs the audit's own demo model",
    run: (context) => converse(context, client, model, shape),
  };
}

/** Content paths: both client formats to both supplier formats, reasoning, token counting, the demo. */
export function chatPaths(setting: AuditSetting): AuditPath[] {
  const paths: AuditPath[] = [];
  for (const client of CLIENT_FORMATS) for (const route of setting.routes) paths.push(...pairPaths(client, route));
  for (const anthropic of routesFor(setting, "anthropic")) {
    paths.push(
      {
        name: `anthropic client -> ${anthropic.label}: extended thinking`,
        run: (context) => converse(context, "anthropic", anthropic.model, { thinking: true }),
      },
      {
        name: `anthropic client -> ${anthropic.label}: extended thinking streamed`,
        run: (context) => converse(context, "anthropic", anthropic.model, { thinking: true, stream: true }),
      },
    );
  }
  for (const openai of routesFor(setting, "openai")) {
    paths.push({
      name: `openai client -> ${openai.label}: reasoning streamed`,
      run: (context) => converse(context, "openai", openai.model, { reasoning: true, stream: true }),
    });
  }
  const toOpenAI = routeFor(setting, "openai");
  paths.push(
    {
      name: "anthropic client -> openai supplier: reasoning streamed back as thinking",
      embeddedOnly: NEEDS_FAKES,
      async run(context) {
        // Lethe does not carry `thinking` to OpenAI-format suppliers; reasoning still flows back
        context.fakes?.openai.next("ok-reasoning");
        await converse(context, "anthropic", toOpenAI.model, { thinking: true, stream: true });
      },
    },
    ...setting.routes.map(countTokensPath),
    embeddedModelPath("openai client -> demo supplier: messages", "openai", "lethe-demo", { system: true }),
    embeddedModelPath("anthropic client -> demo supplier: streamed", "anthropic", "lethe-demo", { stream: true }),
  );
  return paths;
}
