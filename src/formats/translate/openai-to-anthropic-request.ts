import { LetheError } from "../../errors/lethe-error.js";
import { base64DataUrl } from "../surface/data-url.js";
import { MAX_JSON_DEPTH, nestsTooDeep } from "../validation/json-depth.js";
import { hasTools, isObject, type Json } from "./request-fields.js";

/** `max_tokens` sent to Anthropic when an OpenAI client set none (Anthropic requires one). */
export const DEFAULT_ANTHROPIC_MAX_TOKENS = 4096;

/** An OpenAI `image_url` part as an Anthropic image block (base64 data URLs or plain URLs). */
function imageBlock(part: Json): Json {
  const imageUrl = part.image_url;
  const url = typeof imageUrl === "string" ? imageUrl : isObject(imageUrl) ? imageUrl.url : undefined;
  if (typeof url !== "string") {
    throw new LetheError("LETHE_INVALID_REQUEST", "An image_url part needs a url.", { param: "messages" });
  }
  const dataUrl = base64DataUrl(url);
  if (dataUrl) {
    // `image/jpg` is common and not a registered type; Anthropic takes `image/jpeg`
    const mediaType = dataUrl.mediaType === "image/jpg" ? "image/jpeg" : dataUrl.mediaType;
    if (!IMAGE_TYPES.has(mediaType)) {
      throw new LetheError(
        "LETHE_INVALID_REQUEST",
        "An image sent to this model's supplier must be JPEG, PNG, GIF or WebP.",
        { param: "messages" },
      );
    }
    return { type: "image", source: { type: "base64", media_type: mediaType, data: dataUrl.payload } };
  }
  // a data URL not in base64 (`data:image/svg+xml,<svg...`) is no URL Anthropic can fetch
  if (/^data:/i.test(url)) {
    throw new LetheError("LETHE_INVALID_REQUEST", "An image data URL must be base64 for this model's supplier.", {
      param: "messages",
    });
  }
  if (!/^https?:\/\//i.test(url)) {
    throw new LetheError("LETHE_INVALID_REQUEST", "An image URL must be http(s) or a base64 data URL.", {
      param: "messages",
    });
  }
  return { type: "image", source: { type: "url", url } };
}

/** The image types Anthropic takes inline. */
const IMAGE_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp"]);

/**
 * An OpenAI `file` part as an Anthropic document: a PDF sent inline (`file_data`, a data
 * URL, or bare base64 of a `.pdf` file), titled with its filename. A `file_id` names a file
 * uploaded to OpenAI, which Anthropic cannot read; other file types Anthropic does not take.
 */
function documentBlock(part: Json): Json {
  const file = isObject(part.file) ? part.file : {};
  const data = file.file_data;
  if (typeof data !== "string") {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      "A file part by file_id cannot be sent to this model's supplier; send the file itself as file_data.",
      { param: "messages" },
    );
  }
  const filename = typeof file.filename === "string" && file.filename !== "" ? file.filename : null;
  const dataUrl = base64DataUrl(data);
  const pdf =
    dataUrl !== null ? dataUrl.mediaType === "application/pdf" : filename !== null && /\.pdf$/i.test(filename);
  if (!pdf) {
    throw new LetheError("LETHE_INVALID_REQUEST", "Only PDF files can be sent to this model's supplier.", {
      param: "messages",
    });
  }
  const source = { type: "base64", media_type: "application/pdf", data: dataUrl === null ? data : dataUrl.payload };
  return filename === null ? { type: "document", source } : { type: "document", source, title: filename };
}

/** Anthropic refuses text blocks that are empty or only whitespace, which OpenAI clients do send. */
function isBlank(text: string): boolean {
  return text.trim() === "";
}

/** OpenAI message content (a string or parts) as Anthropic content blocks. */
function contentBlocks(content: unknown): Json[] {
  if (typeof content === "string") return isBlank(content) ? [] : [{ type: "text", text: content }];
  if (!Array.isArray(content)) return [];
  const blocks: Json[] = [];
  for (const part of content) {
    if (!isObject(part)) continue;
    if (part.type === "text" && typeof part.text === "string") {
      if (!isBlank(part.text)) blocks.push({ type: "text", text: part.text });
    } else if (part.type === "image_url") blocks.push(imageBlock(part));
    else if (part.type === "file") blocks.push(documentBlock(part));
    else if (part.type === "refusal" && typeof part.refusal === "string")
      blocks.push({ type: "text", text: part.refusal });
    else
      throw new LetheError("LETHE_INVALID_REQUEST", "This content part type cannot be sent to this model's supplier.", {
        param: "messages",
      });
  }
  return blocks;
}

function parseArguments(text: unknown): unknown {
  if (typeof text !== "string" || text === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new LetheError("LETHE_INVALID_REQUEST", "A tool call's arguments are not valid JSON.", { param: "messages" });
  }
  if (nestsTooDeep(parsed)) {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      `A tool call's arguments nest objects and arrays more than ${MAX_JSON_DEPTH} levels deep.`,
      { param: "messages" },
    );
  }
  return parsed;
}

/**
 * Refuses a conversation whose last user or tool turn held only blank text, which
 * Anthropic does not take (contentBlocks drops it): the turn before would then come last,
 * and an assistant turn there is a prefill the model continues, not a question it answers
 * (one ending in whitespace, or no turn at all, Anthropic refuses outright).
 */
function refuseDroppedLastTurn(messages: Json[], turns: Json[]): void {
  let last: Json | undefined;
  for (const message of messages) if (message.role !== "system" && message.role !== "developer") last = message;
  // OpenAI answers a system prompt alone; Anthropic needs a turn to answer
  if (last === undefined) {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      "This model's supplier needs a user message, not only system or developer messages.",
      { param: "messages" },
    );
  }
  if (last.role === "assistant") return;
  if (turns.at(-1)?.role === "user") return;
  throw new LetheError(
    "LETHE_INVALID_REQUEST",
    "The last message is empty: this model's supplier needs text in it (an empty user turn cannot be sent).",
    { param: "messages" },
  );
}

/** OpenAI's `stop` as Anthropic's stop_sequences, which may not be empty or only whitespace (`\n` is common in OpenAI's). */
function stopSequences(stop: unknown[]): unknown[] {
  for (const sequence of stop) {
    if (typeof sequence === "string" && isBlank(sequence)) {
      throw new LetheError(
        "LETHE_INVALID_REQUEST",
        'This model\'s supplier takes no stop sequence that is empty or only whitespace (such as "\\n").',
        { param: "stop" },
      );
    }
  }
  return stop;
}

/** Appends a turn, merging it into the previous one when the role repeats (Anthropic wants alternation). */
function pushTurn(turns: Json[], role: "user" | "assistant", blocks: Json[]): void {
  if (blocks.length === 0) return;
  const last = turns[turns.length - 1];
  if (last !== undefined && last.role === role) (last.content as Json[]).push(...blocks);
  else turns.push({ role, content: blocks });
}

function toolChoice(choice: unknown, parallel: unknown): Json | undefined {
  let out: Json | undefined;
  if (choice === "auto") out = { type: "auto" };
  else if (choice === "none") out = { type: "none" };
  else if (choice === "required") out = { type: "any" };
  else if (isObject(choice) && isObject(choice.function)) out = { type: "tool", name: choice.function.name };
  else if (isObject(choice) && choice.type === "allowed_tools" && isObject(choice.allowed_tools)) {
    // the tools it may call are the tools it is sent (allowedToolNames filters them)
    out = { type: choice.allowed_tools.mode === "required" ? "any" : "auto" };
  } else if (choice !== undefined && choice !== null) refuse("tool_choice");
  // Anthropic's `none` choice takes no other field: parallelism is moot when no tool may be called
  if (parallel === false && out?.type !== "none") {
    out = { ...(out ?? { type: "auto" }), disable_parallel_tool_use: true };
  }
  return out;
}

function refuse(param: string): never {
  throw new LetheError("LETHE_INVALID_REQUEST", `'${param}' cannot be honoured by this model's supplier.`, { param });
}

/** A number set to something else than OpenAI's default of 0. */
function isSet(value: unknown): boolean {
  return typeof value === "number" && value !== 0;
}

/**
 * Refuses what an Anthropic model cannot do as asked, rather than answering something
 * else: several choices, log probabilities, sampling penalties and biases, web search,
 * audio output, the legacy `functions`. Dropped silently, a client would get one choice
 * for three, or an answer that never searched. What only tunes an answer that comes all
 * the same (`seed`, `reasoning_effort`, `service_tier`, `prediction`…) is left behind.
 */
function refuseUntranslatable(body: Json): void {
  if (typeof body.n === "number" && body.n > 1) refuse("n");
  if (body.logprobs === true) refuse("logprobs");
  if (typeof body.top_logprobs === "number" && body.top_logprobs > 0) refuse("top_logprobs");
  if (isSet(body.frequency_penalty)) refuse("frequency_penalty");
  if (isSet(body.presence_penalty)) refuse("presence_penalty");
  if (isObject(body.logit_bias) && Object.keys(body.logit_bias).length > 0) refuse("logit_bias");
  if (body.web_search_options !== undefined && body.web_search_options !== null) refuse("web_search_options");
  if (
    (body.audio !== undefined && body.audio !== null) ||
    (Array.isArray(body.modalities) && body.modalities.includes("audio"))
  )
    refuse("audio");
  if (hasTools(body.functions) || (body.function_call !== undefined && body.function_call !== null))
    refuse("functions");
  // OpenAI's custom tools take free text, not JSON arguments: Anthropic has no such tool; nor
  // can it call a function that has no name
  if (
    Array.isArray(body.tools) &&
    body.tools.some(
      (tool) =>
        !isObject(tool) ||
        tool.type !== "function" ||
        !isObject(tool.function) ||
        typeof tool.function.name !== "string",
    )
  )
    refuse("tools");
  // a legacy `function` message answers a `function_call` by name alone: Anthropic's tool
  // results answer a tool call by its id
  if ((body.messages as Json[]).some((message) => message.role === "function")) {
    throw new LetheError(
      "LETHE_INVALID_REQUEST",
      "Messages of the legacy role 'function' cannot be sent to this model's supplier; send tool messages.",
      { param: "messages" },
    );
  }
}

/** The tools an `allowed_tools` choice lets the model call, by name; undefined when all of them. */
function allowedToolNames(choice: unknown): Set<unknown> | undefined {
  if (!isObject(choice) || choice.type !== "allowed_tools" || !isObject(choice.allowed_tools)) return undefined;
  const allowed = choice.allowed_tools.tools;
  if (!Array.isArray(allowed)) refuse("tool_choice");
  return new Set(allowed.map((tool) => (isObject(tool) && isObject(tool.function) ? tool.function.name : undefined)));
}

/**
 * OpenAI's `response_format` as Anthropic's structured output (`output_config.format`): a
 * JSON schema carries over. Anthropic's structured output is always strict, whatever the
 * client's `strict` said: a schema it cannot enforce (no `additionalProperties: false`,
 * say) comes back from the supplier as a 400 the client reads, never as free text;
 * `json_object`, JSON of no set shape, has no counterpart and is refused rather than
 * answered in free text, which a client that parses the answer would choke on.
 */
function outputFormat(format: unknown): Json | undefined {
  if (!isObject(format) || format.type === undefined || format.type === "text") return undefined;
  const jsonSchema = format.json_schema;
  if (format.type === "json_schema" && isObject(jsonSchema) && isObject(jsonSchema.schema)) {
    return { type: "json_schema", schema: jsonSchema.schema };
  }
  // a client that asked for json_object (AI SDK's and LangChain's JSON modes do) can say what it wants with a schema
  const message =
    format.type === "json_object"
      ? "'response_format' json_object cannot be honoured by this model's supplier; a json_schema response_format can."
      : "'response_format' cannot be honoured by this model's supplier.";
  throw new LetheError("LETHE_INVALID_REQUEST", message, { param: "response_format" });
}

/** A tool message's content as a tool_result's: text as it is, parts as blocks (images included). */
function toolResultContent(content: unknown): string | Json[] {
  if (typeof content === "string") return content;
  const blocks = contentBlocks(content);
  return blocks.length === 0 ? "" : blocks;
}

/**
 * An OpenAI Chat Completions request as an Anthropic Messages request: system and
 * developer messages become `system`, tool results become `tool_result` blocks in a
 * user turn (consecutive ones merged), tool calls become `tool_use` blocks.
 */
export function openAIToAnthropicRequest(body: Json, upstreamModel: string): Json {
  refuseUntranslatable(body);
  const system: Json[] = [];
  const turns: Json[] = [];
  for (const message of body.messages as Json[]) {
    switch (message.role) {
      case "system":
      case "developer": {
        // Anthropic's system prompt is text only: an image or a file there is refused, not dropped
        const blocks = contentBlocks(message.content);
        if (blocks.some((block) => block.type !== "text")) {
          throw new LetheError("LETHE_INVALID_REQUEST", "A system or developer message holds text only here.", {
            param: "messages",
          });
        }
        system.push(...blocks);
        break;
      }
      case "user":
        pushTurn(turns, "user", contentBlocks(message.content));
        break;
      case "assistant": {
        const blocks = contentBlocks(message.content);
        // an OpenAI answer's refusal, sent back as history: the assistant's turn all the same
        if (typeof message.refusal === "string" && !isBlank(message.refusal)) {
          blocks.push({ type: "text", text: message.refusal });
        }
        for (const call of (message.tool_calls as Json[] | undefined) ?? []) {
          const fn = call.function as Json;
          blocks.push({ type: "tool_use", id: call.id, name: fn.name, input: parseArguments(fn.arguments) });
        }
        pushTurn(turns, "assistant", blocks);
        break;
      }
      case "tool": {
        const toolUseId = message.tool_call_id;
        if (typeof toolUseId !== "string") {
          throw new LetheError("LETHE_INVALID_REQUEST", "A tool message needs the tool_call_id it answers.", {
            param: "messages",
          });
        }
        pushTurn(turns, "user", [
          {
            type: "tool_result",
            tool_use_id: toolUseId,
            content: toolResultContent(message.content),
          },
        ]);
        break;
      }
    }
  }
  refuseDroppedLastTurn(body.messages as Json[], turns);
  const out: Json = {
    model: upstreamModel,
    messages: turns,
    max_tokens: body.max_completion_tokens ?? body.max_tokens ?? DEFAULT_ANTHROPIC_MAX_TOKENS,
  };
  if (system.length > 0) out.system = system;
  if (body.stream === true) out.stream = true;
  // Anthropic's temperature range is 0-1, OpenAI's 0-2
  if (typeof body.temperature === "number") out.temperature = Math.min(1, body.temperature);
  // top_p 1 samples from every token, as no top_p does; many clients send it by default, and
  // Anthropic's newer models refuse temperature and top_p together
  if (typeof body.top_p === "number" && !(body.top_p === 1 && typeof body.temperature === "number")) {
    out.top_p = body.top_p;
  }
  if (typeof body.stop === "string") out.stop_sequences = stopSequences([body.stop]);
  else if (Array.isArray(body.stop)) out.stop_sequences = stopSequences(body.stop);
  const allowed = allowedToolNames(body.tool_choice);
  const tools =
    allowed === undefined || !Array.isArray(body.tools)
      ? body.tools
      : (body.tools as Json[]).filter((tool) => isObject(tool.function) && allowed.has(tool.function.name));
  if (hasTools(tools)) {
    out.tools = (tools as Json[]).map((tool) => {
      const fn = (tool.function ?? {}) as Json;
      return {
        name: fn.name,
        ...(fn.description !== undefined && { description: fn.description }),
        input_schema: fn.parameters ?? { type: "object", properties: {} },
        // strict tool use: the call's input must follow the schema, on both sides
        ...(fn.strict === true && { strict: true }),
      };
    });
  }
  // Anthropic refuses a tool_choice without tools (OpenAI clients send parallel_tool_calls regardless)
  const choice = hasTools(tools) ? toolChoice(body.tool_choice, body.parallel_tool_calls) : undefined;
  if (choice !== undefined) out.tool_choice = choice;
  const format = outputFormat(body.response_format);
  if (format !== undefined) out.output_config = { format };
  // OpenAI's `safety_identifier` is what `user` was for: an end user's stable id
  const user = typeof body.user === "string" ? body.user : body.safety_identifier;
  if (typeof user === "string") out.metadata = { user_id: user };
  return out;
}
