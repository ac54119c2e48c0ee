import { z } from "zod";

const block = z.looseObject({ type: z.string() });
const content = z.union([z.string(), z.array(block)]);

const message = z.looseObject({
  role: z.enum(["user", "assistant", "system"]),
  content,
});

const tool = z.looseObject({ name: z.string().min(1) });

const toolChoice = z.looseObject({
  type: z.enum(["auto", "any", "tool", "none"]),
  name: z.string().optional(),
  disable_parallel_tool_use: z.boolean().optional(),
});

/** Fields `count_tokens` and `messages` share. */
const countTokensShape = {
  model: z.string().min(1),
  messages: z.array(message).min(1),
  system: content.optional(),
  tools: z.array(tool).optional(),
  tool_choice: toolChoice.optional(),
  thinking: z.looseObject({ type: z.string() }).optional(),
};

/**
 * Anthropic's Messages request, checked as far as Lethe relies on it. Unknown fields
 * are kept and passed on unchanged to Anthropic suppliers.
 */
export const messagesRequestSchema = z.looseObject({
  ...countTokensShape,
  max_tokens: z.number().int().positive(),
  stream: z.boolean().optional(),
  stop_sequences: z.array(z.string()).optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().min(0).max(1).optional(),
  top_k: z.number().int().nonnegative().optional(),
  metadata: z.looseObject({ user_id: z.string().nullable().optional() }).optional(),
});

/** Anthropic's `count_tokens` request. */
export const countTokensRequestSchema = z.looseObject(countTokensShape);

export type MessagesRequest = z.infer<typeof messagesRequestSchema>;
