/** Anthropic's `stop_reason` for an OpenAI `finish_reason`. */
export function toAnthropicStopReason(finishReason: unknown): string {
  switch (finishReason) {
    case "length":
      return "max_tokens";
    case "tool_calls":
    case "function_call":
      return "tool_use";
    case "content_filter":
      return "refusal";
    default:
      return "end_turn";
  }
}

/** OpenAI's `finish_reason` for an Anthropic `stop_reason`. */
export function toOpenAIFinishReason(stopReason: unknown): string {
  switch (stopReason) {
    case "max_tokens":
    case "model_context_window_exceeded":
      return "length";
    case "tool_use":
      return "tool_calls";
    case "refusal":
      return "content_filter";
    default:
      return "stop";
  }
}

/**
 * Anthropic's `stop_reason` and `stop_sequence` for how an OpenAI-compatible answer ended.
 * vLLM and servers like it name the matched stop string in the choice's `stop_reason`;
 * only one of the request's own `stop_sequences` counts. OpenAI itself does not say which
 * one matched, so its answers report `end_turn`. An answer that was only OpenAI's
 * `refusal` (structured outputs) ends `finish_reason: stop`; Anthropic clients read a
 * refusal from `stop_reason: refusal`, so `refused` says so.
 */
export function anthropicStop(
  choice: { finish_reason?: unknown; stop_reason?: unknown },
  stopSequences: unknown,
  calledTools: boolean,
  refused = false,
): { stop_reason: string; stop_sequence: string | null } {
  if (refused && !calledTools && choice.finish_reason === "stop")
    return { stop_reason: "refusal", stop_sequence: null };
  const matched = choice.stop_reason;
  if (
    choice.finish_reason === "stop" &&
    typeof matched === "string" &&
    Array.isArray(stopSequences) &&
    stopSequences.includes(matched)
  ) {
    return { stop_reason: "stop_sequence", stop_sequence: matched };
  }
  return { stop_reason: toolUseStop(toAnthropicStopReason(choice.finish_reason), calledTools), stop_sequence: null };
}

/**
 * Some OpenAI-compatible servers end an answer that calls tools with `finish_reason: stop`;
 * Anthropic clients (agent loops) act on tool calls only when `stop_reason` is `tool_use`.
 */
function toolUseStop(stopReason: string, calledTools: boolean): string {
  return calledTools && stopReason === "end_turn" ? "tool_use" : stopReason;
}
