import { randomBytes } from "node:crypto";

/**
 * An id for a tool call whose OpenAI-format supplier named none: an Anthropic client
 * answers each `tool_use` by its id, so it must be there, and unique across the turns of
 * a conversation (a fixed `toolu_0` would be answered by the next turn's result too).
 */
export function mintToolUseId(): string {
  return `toolu_lethe${randomBytes(12).toString("hex")}`;
}
