import type { ModelId } from "../../config/ids.js";
import { toAnthropicUsage } from "../../metering/anthropic-usage.js";
import { type TokenUsage, toOpenAIUsage } from "../../metering/token-usage.js";
import { nestsTooDeep } from "../validation/json-depth.js";
import { anthropicStop, toOpenAIFinishReason } from "./map-finish-reason.js";
import { mintToolUseId } from "./tool-use-id.js";

type Json = Record<string, unknown>;

function parseArguments(text: unknown): unknown {
  if (typeof text !== "string" || text === "") return {};
  try {
    const parsed: unknown = JSON.parse(text);
    // nested past what Lethe's walks take: passed on as the text it came as
    return nestsTooDeep(parsed) ? { _raw: text } : parsed;
  } catch {
    // a model that produced broken JSON: hand the raw text over rather than lose it
    return { _raw: text };
  }
}

/**
 * An OpenAI `chat.completion` as an Anthropic `message` (first choice); `stopSequences` are
 * the request's, to tell which one ended the answer when the supplier names it.
 */
export function openAIToAnthropicMessage(
  completion: Json,
  model: ModelId,
  usage: TokenUsage,
  stopSequences?: unknown,
): Json {
  const choice = ((completion.choices as Json[] | undefined) ?? [])[0] ?? {};
  const message = (choice.message ?? {}) as Json;
  const content: Json[] = [];
  let refused = false;
  const reasoning = message.reasoning_content ?? message.reasoning;
  if (typeof reasoning === "string" && reasoning !== "")
    content.push({ type: "thinking", thinking: reasoning, signature: "" });
  if (typeof message.content === "string" && message.content !== "")
    content.push({ type: "text", text: message.content });
  // a refusal is the model's answer all the same: Anthropic has no field for it but text
  else if (typeof message.refusal === "string" && message.refusal !== "") {
    content.push({ type: "text", text: message.refusal });
    refused = true;
  }
  for (const call of (message.tool_calls as (Json | null)[] | undefined) ?? []) {
    if (call === null || typeof call !== "object") continue;
    const fn = (call.function ?? {}) as Json;
    // a call without an id could not be answered with a tool_result
    const id = typeof call.id === "string" && call.id !== "" ? call.id : mintToolUseId();
    content.push({ type: "tool_use", id, name: fn.name, input: parseArguments(fn.arguments) });
  }
  const id = typeof completion.id === "string" ? completion.id : "";
  return {
    id: id.startsWith("msg_") ? id : `msg_${id.replace(/^chatcmpl-/, "")}`,
    type: "message",
    role: "assistant",
    model,
    content,
    ...anthropicStop(
      choice,
      stopSequences,
      content.some((block) => block.type === "tool_use"),
      refused,
    ),
    usage: toAnthropicUsage(usage),
  };
}

/** An Anthropic `message` as an OpenAI `chat.completion`. */
export function anthropicToOpenAICompletion(message: Json, model: ModelId, usage: TokenUsage): Json {
  let text = "";
  let reasoning = "";
  const toolCalls: Json[] = [];
  for (const block of (message.content as Json[] | undefined) ?? []) {
    if (block.type === "text") text += String(block.text ?? "");
    else if (block.type === "thinking") reasoning += String(block.thinking ?? "");
    else if (block.type === "tool_use") {
      toolCalls.push({
        id: block.id,
        type: "function",
        function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) },
      });
    }
  }
  // OpenAI always writes `refusal` (null unless the model refused), and its SDK's type requires it
  const out: Json = { role: "assistant", content: text === "" && toolCalls.length > 0 ? null : text, refusal: null };
  if (reasoning !== "") out.reasoning_content = reasoning;
  if (toolCalls.length > 0) out.tool_calls = toolCalls;
  return {
    id: `chatcmpl-${String(message.id ?? "").replace(/^msg_/, "")}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: out, finish_reason: toOpenAIFinishReason(message.stop_reason), logprobs: null }],
    usage: toOpenAIUsage(usage),
  };
}
