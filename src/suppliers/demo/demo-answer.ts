import { collectText, countTextTokens, estimateInputTokens, truncateToTokens } from "../../metering/count-tokens.js";

/** What the demo model decided to say: text, or a call of one of the request's tools. */
export interface DemoAnswer {
  text: string;
  toolCall: { name: string; arguments: string } | null;
  finishReason: "stop" | "length" | "tool_calls";
  /** The stop sequence the answer ended at, named as vLLM names it (the choice's `stop_reason`), or null. */
  stopSequence: string | null;
  promptTokens: number;
  completionTokens: number;
}

const ECHO_LIMIT = 400;

function lastMessageText(messages: unknown[]): { role: string; text: string } {
  const last = messages[messages.length - 1];
  if (typeof last !== "object" || last === null) return { role: "user", text: "" };
  const record = last as Record<string, unknown>;
  const texts: string[] = [];
  collectText(record.content, texts);
  return { role: typeof record.role === "string" ? record.role : "user", text: texts.join(" ") };
}

function pickTool(body: Record<string, unknown>): string | null {
  const tools = Array.isArray(body.tools) ? body.tools : [];
  if (tools.length === 0 || body.tool_choice === "none") return null;
  const choice = body.tool_choice as { function?: { name?: unknown } } | undefined;
  if (typeof choice?.function?.name === "string") return choice.function.name;
  const first = tools[0] as { function?: { name?: unknown } } | undefined;
  return typeof first?.function?.name === "string" ? first.function.name : null;
}

/** Where the earliest of the request's stop sequences occurs in `text`, and which it is. */
function firstStop(text: string, stop: unknown): { at: number; sequence: string } | null {
  const stops = typeof stop === "string" ? [stop] : Array.isArray(stop) ? stop : [];
  let first: { at: number; sequence: string } | null = null;
  for (const sequence of stops) {
    if (typeof sequence !== "string" || sequence === "") continue;
    const at = text.indexOf(sequence);
    if (at !== -1 && (first === null || at < first.at)) first = { at, sequence };
  }
  return first;
}

/**
 * The demo model's deterministic answer to an OpenAI-format request: it says it is a
 * demo and echoes the last message; with tools it calls one; it honours max tokens
 * and stop sequences so clients can exercise those paths offline.
 */
export function demoAnswer(body: Record<string, unknown>): DemoAnswer {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const last = lastMessageText(messages);
  const promptTokens = estimateInputTokens(body);
  const toolName = last.role === "tool" ? null : pickTool(body);
  if (toolName !== null) {
    const args = JSON.stringify({ echo: last.text.slice(0, 100) });
    return {
      text: "",
      toolCall: { name: toolName, arguments: args },
      finishReason: "tool_calls",
      stopSequence: null,
      promptTokens,
      completionTokens: countTextTokens(toolName) + countTextTokens(args),
    };
  }
  const echo = last.text.length > ECHO_LIMIT ? `${last.text.slice(0, ECHO_LIMIT)}…` : last.text;
  const intro = last.role === "tool" ? "The tool answered" : `You sent ${messages.length} message(s)`;
  let text = `Lethe demo model, no supplier was called. ${intro}; echo: ${echo}`;
  let finishReason: DemoAnswer["finishReason"] = "stop";
  const stop = firstStop(text, body.stop ?? body.stop_sequences);
  if (stop !== null) text = text.slice(0, stop.at);
  let stopSequence = stop?.sequence ?? null;
  const limit = body.max_completion_tokens ?? body.max_tokens;
  if (typeof limit === "number" && limit > 0) {
    const cut = truncateToTokens(text, limit);
    if (cut !== text) {
      text = cut;
      finishReason = "length";
      // the token limit came first: the stop sequence was never reached
      stopSequence = null;
    }
  }
  return { text, toolCall: null, finishReason, stopSequence, promptTokens, completionTokens: countTextTokens(text) };
}
