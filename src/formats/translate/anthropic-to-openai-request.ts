import { LetheError } from "../../errors/lethe-error.js";
import { hasTools, isObject, type Json } from "./request-fields.js";

function blocksOf(content: unknown): Json[] {
  if (typeof content === "string") return [{ type: "text", text: content }];
  return Array.isArray(content) ? content.filter(isObject) : [];
}

/** An Anthropic image block as an OpenAI `image_url` part. */
function imagePart(block: Json): Json {
  const source = isObject(block.source) ? block.source : {};
  if (source.type === "base64") {
    return { type: "image_url", image_url: { url: `data:${source.media_type};base64,${source.data}` } };
  }
  if (source.type === "url") return { type: "image_url", image_url: { url: source.url } };
  throw new LetheError("LETHE_INVALID_REQUEST", "This image source cannot be sent to this model's supplier.", {
    param: "messages",
  });
}

/**
 * An Anthropic document as OpenAI parts: a base64 PDF as a `file` part (its title as the
 * filename), a text or content document as text under its title; the document's
 * `context` follows as text of its own, so the prompt keeps everything the client wrote.
 * A document by URL or Anthropic file id has no OpenAI counterpart, nor do citations (the
 * answer could not cite it as asked).
 */
function documentParts(block: Json): Json[] {
  if (isObject(block.citations) && block.citations.enabled === true) throw unsupported("A document with citations");
  const source = isObject(block.source) ? block.source : {};
  const title = typeof block.title === "string" && block.title !== "" ? block.title : null;
  let part: Json;
  if (source.type === "base64" && source.media_type === "application/pdf" && typeof source.data === "string") {
    // OpenAI tells a file's type by its name
    const filename = title === null ? "document.pdf" : /\.pdf$/i.test(title) ? title : `${title}.pdf`;
    part = { type: "file", file: { filename, file_data: `data:application/pdf;base64,${source.data}` } };
  } else {
    let text: string;
    if (source.type === "text" && typeof source.data === "string") text = source.data;
    else if (source.type === "content") text = textOf(source.content, "A document with content other than text");
    else throw unsupported("A document from this source");
    part = { type: "text", text: title === null ? text : `${title}\n\n${text}` };
  }
  const context = typeof block.context === "string" && block.context !== "" ? block.context : null;
  return context === null ? [part] : [part, { type: "text", text: context }];
}

/**
 * The text of text blocks (a system prompt, a tool result) as one string for an OpenAI
 * message. Blocks are separate passages (a client splits them where its prompt cache
 * breaks): joined with a blank line, not run into each other word to word.
 */
function textOf(content: unknown, refuseOther?: string): string {
  let text = "";
  for (const block of blocksOf(content)) {
    if (block.type !== "text" || typeof block.text !== "string") {
      if (refuseOther !== undefined) throw unsupported(refuseOther);
      continue;
    }
    text = text === "" ? block.text : `${text}\n\n${block.text}`;
  }
  return text;
}

function unsupported(what: string): LetheError {
  return new LetheError("LETHE_INVALID_REQUEST", `${what} cannot be sent to this model's supplier.`, {
    param: "messages",
  });
}

/** One Anthropic user turn as OpenAI messages: tool results first (they answer the last call), then the rest. */
function userMessages(content: unknown): Json[] {
  const toolMessages: Json[] = [];
  const parts: Json[] = [];
  for (const block of blocksOf(content)) {
    if (block.type === "tool_result") {
      // an OpenAI tool message holds text only: an image or document in a result is refused, not dropped
      const content = textOf(block.content, "A tool result with content other than text");
      toolMessages.push({ role: "tool", tool_call_id: block.tool_use_id, content });
    } else if (block.type === "text") parts.push({ type: "text", text: block.text });
    else if (block.type === "image") parts.push(imagePart(block));
    else if (block.type === "document") parts.push(...documentParts(block));
    // a block OpenAI has no part for (a search result, say) is refused, not left out: the
    // answer would be to a prompt missing what the client sent
    else throw unsupported("A content block of this type");
  }
  if (parts.length === 0) return toolMessages;
  const only = parts.length === 1 ? parts[0] : undefined;
  const userContent = only?.type === "text" ? only.text : parts;
  return [...toolMessages, { role: "user", content: userContent }];
}

/** One Anthropic assistant turn as an OpenAI assistant message (thinking blocks cannot be carried over). */
function assistantMessage(content: unknown): Json {
  let text = "";
  const toolCalls: Json[] = [];
  for (const block of blocksOf(content)) {
    if (block.type === "text") text += String(block.text ?? "");
    else if (block.type === "tool_use") {
      toolCalls.push({
        id: block.id,
        type: "function",
        function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) },
      });
    }
  }
  const message: Json = { role: "assistant", content: text === "" && toolCalls.length > 0 ? null : text };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return message;
}

function toolChoice(choice: unknown): unknown {
  if (!isObject(choice)) return undefined;
  switch (choice.type) {
    case "auto":
      return "auto";
    case "any":
      return "required";
    case "none":
      return "none";
    case "tool":
      return { type: "function", function: { name: choice.name } };
    default:
      return undefined;
  }
}

/**
 * Anthropic's structured output (`output_config.format`, a JSON schema the answer must
 * follow) as OpenAI's `response_format`, strict as Anthropic's is. A format Lethe does not
 * know is refused: answering in free text would break a client that parses the answer.
 */
function responseFormat(outputConfig: unknown): Json | undefined {
  if (!isObject(outputConfig) || outputConfig.format === undefined || outputConfig.format === null) return undefined;
  const format = outputConfig.format;
  if (!isObject(format) || format.type !== "json_schema" || !isObject(format.schema)) {
    throw new LetheError("LETHE_INVALID_REQUEST", "This output format cannot be sent to this model's supplier.", {
      param: "output_config.format",
    });
  }
  return { type: "json_schema", json_schema: { name: "output", schema: format.schema, strict: true } };
}

/**
 * Fields that change which tools the model has, what it may keep or drop of the
 * conversation, or where it may run (`inference_geo` is a data-residency control): OpenAI's
 * format cannot ask for any of them, so a request that sets one is refused, not answered
 * as though it had not. `service_tier` only tunes how an answer comes, and is left behind.
 */
const UNCARRIED_FIELDS = ["mcp_servers", "container", "context_management", "inference_geo"] as const;

function refuseUncarried(body: Json): void {
  for (const field of UNCARRIED_FIELDS) {
    if (body[field] !== undefined && body[field] !== null) {
      throw new LetheError("LETHE_INVALID_REQUEST", `${field} cannot be sent to this model's supplier.`, {
        param: field,
      });
    }
  }
}

/**
 * An Anthropic Messages request as an OpenAI Chat Completions request: `system`
 * becomes the first message, tool results become `tool` messages, `tool_use` blocks
 * become `tool_calls`, images become `image_url` parts.
 */
export function anthropicToOpenAIRequest(
  body: Json,
  upstreamModel: string,
  maxTokensField: "max_tokens" | "max_completion_tokens" = "max_tokens",
): Json {
  refuseUncarried(body);
  const messages: Json[] = [];
  // an OpenAI system message holds text only: any other block there is refused, not dropped
  if (body.system !== undefined) {
    messages.push({ role: "system", content: textOf(body.system, "A system block other than text") });
  }
  for (const message of body.messages as Json[]) {
    if (message.role === "system") {
      messages.push({ role: "system", content: textOf(message.content, "A system block other than text") });
    } else if (message.role === "assistant") messages.push(assistantMessage(message.content));
    else messages.push(...userMessages(message.content));
  }
  const out: Json = { model: upstreamModel, messages, [maxTokensField]: body.max_tokens };
  if (body.stream === true) {
    out.stream = true;
    out.stream_options = { include_usage: true };
  }
  if (typeof body.temperature === "number") out.temperature = body.temperature;
  if (typeof body.top_p === "number") out.top_p = body.top_p;
  if (Array.isArray(body.stop_sequences)) out.stop = body.stop_sequences;
  if (hasTools(body.tools)) {
    out.tools = (body.tools as Json[]).map((tool) => {
      if (tool.input_schema === undefined) throw unsupported("A server tool");
      return {
        type: "function",
        function: {
          name: tool.name,
          ...(tool.description !== undefined && { description: tool.description }),
          parameters: tool.input_schema,
          ...(tool.strict === true && { strict: true }),
        },
      };
    });
  }
  // OpenAI refuses tool_choice and parallel_tool_calls without tools
  const choice = hasTools(body.tools) ? toolChoice(body.tool_choice) : undefined;
  if (choice !== undefined) out.tool_choice = choice;
  if (choice !== undefined && isObject(body.tool_choice) && body.tool_choice.disable_parallel_tool_use === true) {
    out.parallel_tool_calls = false;
  }
  const format = responseFormat(body.output_config);
  if (format !== undefined) out.response_format = format;
  const metadata = body.metadata;
  if (isObject(metadata) && typeof metadata.user_id === "string") out.user = metadata.user_id;
  return out;
}
