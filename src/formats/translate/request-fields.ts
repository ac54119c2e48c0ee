/** A JSON object as a request's translation reads it. */
export type Json = Record<string, unknown>;

/** A JSON object (not null, not an array). */
export function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Tools to choose from: OpenAI refuses an empty list, and neither API takes a tool_choice without one. */
export function hasTools(tools: unknown): boolean {
  return Array.isArray(tools) && tools.length > 0;
}
