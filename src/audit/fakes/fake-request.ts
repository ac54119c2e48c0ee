type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const ECHO_LIMIT = 4000;
const TEXT_KEYS = new Set(["text", "content", "thinking"]);

/** Every string under a text-carrying key (text, content, thinking), in document order. */
function collectTexts(value: unknown, into: string[], underTextKey: boolean): void {
  if (typeof value === "string") {
    if (underTextKey) into.push(value);
  } else if (Array.isArray(value)) {
    for (const item of value) collectTexts(item, into, underTextKey);
  } else if (isObject(value)) {
    for (const [key, child] of Object.entries(value)) collectTexts(child, into, TEXT_KEYS.has(key));
  }
}

/** A request to a fake supplier, reduced to what shapes its answer. */
export interface FakeRequest {
  body: Json;
  stream: boolean;
  model: string;
  /**
   * The text of the last message (user text, tool result, whatever it holds): the
   * fake says it back, so canaries travel through Lethe's response path too.
   */
  echo: string;
  /** The first tool's name when the request offers tools: the fake then calls it. */
  toolName: string | null;
  /** The request asked for reasoning (OpenAI `reasoning_effort`, Anthropic `thinking`). */
  reasoning: boolean;
}

function firstToolName(tools: unknown): string | null {
  if (!Array.isArray(tools) || tools.length === 0) return null;
  const tool: unknown = tools[0];
  if (!isObject(tool)) return null;
  if (typeof tool.name === "string") return tool.name;
  if (isObject(tool.function) && typeof tool.function.name === "string") return tool.function.name;
  return null;
}

/** Reads a parsed JSON body (either wire format) as a FakeRequest. */
export function readFakeRequest(body: Json): FakeRequest {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const texts: string[] = [];
  collectTexts(messages[messages.length - 1], texts, false);
  const thinking = isObject(body.thinking) && body.thinking.type === "enabled";
  return {
    body,
    stream: body.stream === true,
    model: typeof body.model === "string" ? body.model : "fake-model",
    echo: texts.join(" ").slice(0, ECHO_LIMIT),
    toolName: firstToolName(body.tools),
    reasoning: thinking || typeof body.reasoning_effort === "string",
  };
}
