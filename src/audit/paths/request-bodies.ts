import { randomBytes } from "node:crypto";
import type { Canary } from "../canaries.js";
import type { ClientFormat } from "./audit-path.js";

type Json = Record<string, unknown>;

/** What a request carries; every field but `user` is optional, each a canary of its own. */
export interface Conversation {
  system?: Canary;
  user: Canary;
  /** Hidden in the bytes of an image, which travels base64-encoded. */
  image?: Canary;
  /** A tool definition, an earlier call of it and its result. */
  tools?: { definition: Canary; callArguments: Canary; result: Canary };
  /** An earlier turn's thinking block (Anthropic) and a request for reasoning. */
  thinking?: Canary;
  /** Ask for reasoning without an earlier thinking block (OpenAI `reasoning_effort`). */
  reasoning?: boolean;
  /** The end-user id field: OpenAI `user`, Anthropic `metadata.user_id`. */
  endUser?: Canary;
  stream?: boolean;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Image bytes with the canary inside, base64-encoded: a random lead-in varies its alignment. */
export function imageData(canary: Canary): string {
  const lead = randomBytes(1 + ((randomBytes(1)[0] as number) % 3));
  return Buffer.concat([PNG_SIGNATURE, lead, Buffer.from(canary.text), randomBytes(32)]).toString("base64");
}

function openAITools(definition: Canary): Json[] {
  const parameters = { type: "object", properties: { query: { type: "string", description: definition.text } } };
  return [{ type: "function", function: { name: "lookup", description: definition.text, parameters } }];
}

/** An OpenAI Chat Completions request holding the conversation. */
export function openAIBody(model: string, conversation: Conversation): Json {
  const messages: Json[] = [];
  if (conversation.system) messages.push({ role: "system", content: conversation.system.text });
  if (conversation.tools) {
    const { callArguments, result } = conversation.tools;
    messages.push(
      { role: "user", content: "Look this up." },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_1",
            type: "function",
            function: { name: "lookup", arguments: JSON.stringify({ query: callArguments.text }) },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: result.text },
    );
  }
  const text = { type: "text", text: conversation.user.text };
  messages.push({
    role: "user",
    content: conversation.image
      ? [text, { type: "image_url", image_url: { url: `data:image/png;base64,${imageData(conversation.image)}` } }]
      : conversation.user.text,
  });
  const body: Json = { model, messages, max_tokens: 64 };
  if (conversation.tools) body.tools = openAITools(conversation.tools.definition);
  if (conversation.endUser) body.user = conversation.endUser.text;
  if (conversation.reasoning || conversation.thinking) body.reasoning_effort = "low";
  if (conversation.stream) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
  return body;
}

/** An Anthropic Messages request holding the conversation. */
export function anthropicBody(model: string, conversation: Conversation): Json {
  const messages: Json[] = [];
  const lastTurn: Json[] = [];
  if (conversation.tools) {
    const { callArguments, result } = conversation.tools;
    messages.push(
      { role: "user", content: "Look this up." },
      {
        role: "assistant",
        content: [{ type: "tool_use", id: "toolu_1", name: "lookup", input: { query: callArguments.text } }],
      },
    );
    lastTurn.push({ type: "tool_result", tool_use_id: "toolu_1", content: result.text });
  }
  if (conversation.thinking) {
    messages.push(
      { role: "user", content: "Think about this." },
      {
        role: "assistant",
        content: [
          { type: "thinking", thinking: conversation.thinking.text, signature: "c2lnbmF0dXJl" },
          { type: "text", text: "Done." },
        ],
      },
    );
  }
  lastTurn.push({ type: "text", text: conversation.user.text });
  if (conversation.image) {
    lastTurn.push({
      type: "image",
      source: { type: "base64", media_type: "image/png", data: imageData(conversation.image) },
    });
  }
  messages.push({ role: "user", content: lastTurn });
  const body: Json = { model, messages, max_tokens: 64 };
  if (conversation.system) body.system = [{ type: "text", text: conversation.system.text }];
  if (conversation.tools) {
    const definition = conversation.tools.definition.text;
    const schema = { type: "object", properties: { query: { type: "string", description: definition } } };
    body.tools = [{ name: "lookup", description: definition, input_schema: schema }];
  }
  if (conversation.thinking || conversation.reasoning) {
    body.thinking = { type: "enabled", budget_tokens: 1024 };
    body.max_tokens = 2048;
  }
  if (conversation.endUser) body.metadata = { user_id: conversation.endUser.text };
  if (conversation.stream) body.stream = true;
  return body;
}

/** The request body of a client format. */
export function chatBody(client: ClientFormat, model: string, conversation: Conversation): Json {
  return client === "openai" ? openAIBody(model, conversation) : anthropicBody(model, conversation);
}
