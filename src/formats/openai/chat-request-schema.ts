import { z } from "zod";

const contentPart = z.looseObject({ type: z.string() });
const content = z
  .union([z.string(), z.array(contentPart)])
  .nullable()
  .optional();

const toolCall = z.looseObject({
  id: z.string().optional(),
  type: z.string().optional(),
  function: z.looseObject({ name: z.string(), arguments: z.string() }),
});

const message = z.looseObject({
  role: z.enum(["system", "developer", "user", "assistant", "tool", "function"]),
  content,
  name: z.string().nullable().optional(),
  tool_calls: z.array(toolCall).nullable().optional(),
  tool_call_id: z.string().nullable().optional(),
});

const positiveInt = z.number().int().positive();

/**
 * OpenAI's Chat Completions request, checked as far as Lethe must rely on it. Unknown
 * fields are kept and passed to the supplier unchanged.
 */
export const chatRequestSchema = z.looseObject({
  model: z.string().min(1),
  messages: z.array(message).min(1),
  stream: z.boolean().nullable().optional(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  max_tokens: positiveInt.nullable().optional(),
  max_completion_tokens: positiveInt.nullable().optional(),
  n: positiveInt.nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  stop: z
    .union([z.string(), z.array(z.string()).max(4)])
    .nullable()
    .optional(),
  // null is "not given", as OpenAI's own API reads it (clients that serialise every field send it)
  tools: z
    .array(z.looseObject({ type: z.string() }))
    .nullable()
    .optional(),
  tool_choice: z
    .union([z.string(), z.looseObject({ type: z.string() })])
    .nullable()
    .optional(),
  user: z.string().nullable().optional(),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;
