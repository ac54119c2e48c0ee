import type Anthropic from "@anthropic-ai/sdk";
import type OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { anthropicBehaviour, FAKE_SIGNATURE } from "./support/fake-anthropic-supplier.js";
import { behaviour } from "./support/fake-openai-supplier.js";
import { closeTranslationRig, MODELS, startTranslationRig, type TranslationRig } from "./support/translation-rig.js";

/**
 * Tool calls across formats: a full round trip (the model calls a tool, the client
 * sends the result back) for every client/supplier pair, streaming and not; arguments
 * streamed as they are produced; parallel tool results merged into one Anthropic user
 * turn; and a snapshot of the richest request body each translation sends upstream.
 */

let rig: TranslationRig;

beforeAll(async () => {
  rig = await startTranslationRig();
});

afterAll(async () => {
  expect(await closeTranslationRig(rig)).toEqual([]);
});

afterEach(() => {
  expect(rig.openAIFake.clearQueue()).toBe(0);
  expect(rig.anthropicFake.clearQueue()).toBe(0);
});

function lastOpenAIBody(): Record<string, unknown> {
  const upstream = rig.openAIFake.requests.at(-1);
  if (upstream === undefined) throw new Error("the fake OpenAI supplier received nothing");
  return upstream.body as Record<string, unknown>;
}

function lastAnthropicBody(): Record<string, unknown> {
  return rig.anthropicFake.lastRequest().body as Record<string, unknown>;
}

function anthropicTools(description: string): Anthropic.Tool[] {
  return [
    {
      name: "lookup",
      description,
      input_schema: { type: "object", properties: { query: { type: "string" } }, required: ["query"] },
    },
  ];
}

function openAITools(description: string): OpenAI.Chat.ChatCompletionFunctionTool[] {
  return [
    {
      type: "function",
      function: {
        name: "lookup",
        description,
        parameters: { type: "object", properties: { query: { type: "string" } }, required: ["query"] },
      },
    },
  ];
}

/** Asks with the Anthropic SDK; when streaming, also collects the input_json pieces as the SDK saw them. */
async function askAnthropic(params: Anthropic.MessageCreateParamsNonStreaming, stream: boolean) {
  if (!stream) return { message: await rig.anthropic.messages.create(params), argumentPieces: [] as string[] };
  const argumentPieces: string[] = [];
  const messageStream = rig.anthropic.messages.stream(params);
  messageStream.on("inputJson", (piece) => {
    if (piece !== "") argumentPieces.push(piece);
  });
  return { message: await messageStream.finalMessage(), argumentPieces };
}

/** Asks with the openai SDK; when streaming, also collects the argument deltas as the SDK saw them. */
async function askOpenAI(params: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, stream: boolean) {
  if (!stream) return { completion: await rig.openai.chat.completions.create(params), argumentPieces: [] as string[] };
  const argumentPieces: string[] = [];
  const completionStream = rig.openai.chat.completions.stream({ ...params, stream: true });
  completionStream.on("tool_calls.function.arguments.delta", (event) => argumentPieces.push(event.arguments_delta));
  return { completion: await completionStream.finalChatCompletion(), argumentPieces };
}

describe.each([false, true])("stream: %s", (stream) => {
  it("an OpenAI client calls a tool on an Anthropic supplier and sends the result back", async () => {
    const question = rig.canary("oa-question");
    const toolDefinition = rig.canary("oa-tooldef");
    const toolResult = rig.canary("oa-toolresult");
    const tools = openAITools(`Looks a term up. ${toolDefinition}`);
    const ask: OpenAI.Chat.ChatCompletionMessageParam = { role: "user", content: `Look up ${question}` };

    rig.anthropicFake.enqueue(anthropicBehaviour.ok({ toolCall: true }));
    const first = await askOpenAI(
      { model: MODELS.claude, messages: [ask], tools, tool_choice: "required", parallel_tool_calls: false },
      stream,
    );
    expect(lastAnthropicBody()).toMatchObject({
      tools: [
        {
          name: "lookup",
          description: `Looks a term up. ${toolDefinition}`,
          input_schema: { type: "object", properties: { query: { type: "string" } }, required: ["query"] },
        },
      ],
      tool_choice: { type: "any", disable_parallel_tool_use: true },
    });
    const choice = first.completion.choices[0];
    const argumentsText = JSON.stringify({ query: `Look up ${question}` });
    expect(choice?.finish_reason).toBe("tool_calls");
    expect(choice?.message.content).toBe("Let me look that up.");
    expect(choice?.message.tool_calls).toMatchObject([
      { id: "toolu_fake01", type: "function", function: { name: "lookup", arguments: argumentsText } },
    ]);
    if (stream) {
      // the arguments reach the client in the pieces the supplier produced them in, not at the end
      expect(first.argumentPieces.length).toBeGreaterThanOrEqual(2);
      expect(first.argumentPieces.join("")).toBe(argumentsText);
    }

    const second = await askOpenAI(
      {
        model: MODELS.claude,
        tools,
        messages: [
          ask,
          {
            role: "assistant",
            content: choice?.message.content ?? null,
            tool_calls: [
              { id: "toolu_fake01", type: "function", function: { name: "lookup", arguments: argumentsText } },
            ],
          },
          { role: "tool", tool_call_id: "toolu_fake01", content: `Found ${toolResult}` },
        ],
      },
      stream,
    );
    expect(second.completion.choices[0]?.message.content).toBe(`Echo: Found ${toolResult}`);
    expect(second.completion.choices[0]?.finish_reason).toBe("stop");
    expect(lastAnthropicBody().messages).toEqual([
      { role: "user", content: [{ type: "text", text: `Look up ${question}` }] },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Let me look that up." },
          { type: "tool_use", id: "toolu_fake01", name: "lookup", input: { query: `Look up ${question}` } },
        ],
      },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_fake01", content: `Found ${toolResult}` }] },
    ]);
  });

  it("an Anthropic client calls a tool on an OpenAI supplier and sends the result back", async () => {
    const question = rig.canary("ao-question");
    const toolDefinition = rig.canary("ao-tooldef");
    const toolResult = rig.canary("ao-toolresult");
    const tools = anthropicTools(`Looks a term up. ${toolDefinition}`);
    const ask: Anthropic.MessageParam = { role: "user", content: `Look up ${question}` };

    rig.openAIFake.enqueue(behaviour.ok({ toolCall: true }));
    const first = await askAnthropic(
      { model: MODELS.gpt, max_tokens: 200, messages: [ask], tools, tool_choice: { type: "tool", name: "lookup" } },
      stream,
    );
    expect(lastOpenAIBody()).toMatchObject({
      tools: [
        {
          type: "function",
          function: {
            name: "lookup",
            description: `Looks a term up. ${toolDefinition}`,
            parameters: { type: "object", properties: { query: { type: "string" } }, required: ["query"] },
          },
        },
      ],
      tool_choice: { type: "function", function: { name: "lookup" } },
    });
    const input = { query: `Look up ${question}` };
    expect(first.message.stop_reason).toBe("tool_use");
    expect(first.message.content).toEqual([{ type: "tool_use", id: "call_fake", name: "lookup", input }]);
    if (stream) {
      expect(first.argumentPieces.length).toBeGreaterThanOrEqual(2);
      expect(first.argumentPieces.join("")).toBe(JSON.stringify(input));
    }

    const second = await askAnthropic(
      {
        model: MODELS.gpt,
        max_tokens: 200,
        tools,
        messages: [
          ask,
          { role: "assistant", content: first.message.content },
          {
            role: "user",
            content: [{ type: "tool_result", tool_use_id: "call_fake", content: [{ type: "text", text: toolResult }] }],
          },
        ],
      },
      stream,
    );
    expect(second.message.stop_reason).toBe("end_turn");
    expect(lastOpenAIBody().messages).toEqual([
      { role: "user", content: `Look up ${question}` },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_fake", type: "function", function: { name: "lookup", arguments: JSON.stringify(input) } },
        ],
      },
      { role: "tool", tool_call_id: "call_fake", content: toolResult },
    ]);
  });

  it("an Anthropic client calls a tool on an Anthropic supplier with thinking, signatures kept", async () => {
    const question = rig.canary("aa-question");
    const toolResult = rig.canary("aa-toolresult");
    const tools = anthropicTools("Looks a term up.");
    const ask: Anthropic.MessageParam = { role: "user", content: `Look up ${question}` };
    const thinking: Anthropic.ThinkingConfigParam = { type: "enabled", budget_tokens: 1024 };

    rig.anthropicFake.enqueue(anthropicBehaviour.ok({ toolCall: true }));
    const first = await askAnthropic(
      { model: MODELS.claude, max_tokens: 2000, thinking, tools, messages: [ask] },
      stream,
    );
    const requestId = rig.lastRequestId();
    expect(first.message.stop_reason).toBe("tool_use");
    expect(first.message.content).toMatchObject([
      { type: "thinking", thinking: `Considering: Look up ${question}`, signature: FAKE_SIGNATURE },
      { type: "text", text: "Let me look that up." },
      { type: "tool_use", id: "toolu_fake01", name: "lookup", input: { query: `Look up ${question}` } },
    ]);
    expect(first.message.usage.output_tokens_details).toEqual({ thinking_tokens: 50 });
    if (stream) expect(first.argumentPieces.join("")).toBe(JSON.stringify({ query: `Look up ${question}` }));
    expect(await rig.recordOf(requestId)).toMatchObject({ reasoning_tokens: 50, output_tokens: 250 });

    const params: Anthropic.MessageCreateParamsNonStreaming = {
      model: MODELS.claude,
      max_tokens: 2000,
      thinking,
      tools,
      messages: [
        ask,
        { role: "assistant", content: first.message.content },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_fake01", content: `Found ${toolResult}` },
            { type: "text", text: "Go on." },
          ],
        },
      ],
    };
    const second = await askAnthropic(params, stream);
    expect(second.message.content.at(-1)).toMatchObject({ type: "text", text: `Echo: Found ${toolResult} Go on.` });
    // native pass-through: the thinking block and its signature go back exactly as received
    expect(lastAnthropicBody()).toEqual({
      ...JSON.parse(JSON.stringify(params)),
      model: "upstream-claude",
      ...(stream && { stream: true }),
    });
  });

  it("an OpenAI client calls a tool on an OpenAI supplier and sends the result back", async () => {
    const toolResult = rig.canary("oo-toolresult");
    const tools = openAITools("Looks a term up.");
    rig.openAIFake.enqueue(behaviour.ok({ toolCall: true }));
    const first = await askOpenAI(
      { model: MODELS.gpt, messages: [{ role: "user", content: "Look up cats" }], tools },
      stream,
    );
    const call = first.completion.choices[0]?.message.tool_calls?.[0];
    expect(call).toMatchObject({ id: "call_fake", function: { name: "lookup" } });
    const second = await askOpenAI(
      {
        model: MODELS.gpt,
        tools,
        messages: [
          { role: "user", content: "Look up cats" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "call_fake", type: "function", function: { name: "lookup", arguments: "{}" } }],
          },
          { role: "tool", tool_call_id: "call_fake", content: toolResult },
        ],
      },
      stream,
    );
    expect(second.completion.choices[0]?.finish_reason).toBe("stop");
    expect(lastOpenAIBody().messages).toContainEqual({ role: "tool", tool_call_id: "call_fake", content: toolResult });
  });

  it("an Anthropic client calls a demo tool and gets the demo's answer to the result", async () => {
    const tools = anthropicTools("Looks a term up.");
    const first = await askAnthropic(
      { model: MODELS.demo, max_tokens: 200, tools, messages: [{ role: "user", content: "Look up owls" }] },
      stream,
    );
    expect(first.message.stop_reason).toBe("tool_use");
    const call = first.message.content[0];
    expect(call).toMatchObject({ type: "tool_use", name: "lookup", input: { echo: "Look up owls" } });
    const second = await askAnthropic(
      {
        model: MODELS.demo,
        max_tokens: 200,
        tools,
        messages: [
          { role: "user", content: "Look up owls" },
          { role: "assistant", content: first.message.content },
          {
            role: "user",
            content: [{ type: "tool_result", tool_use_id: call?.type === "tool_use" ? call.id : "", content: "wise" }],
          },
        ],
      },
      stream,
    );
    expect(second.message.stop_reason).toBe("end_turn");
    expect(second.message.content).toMatchObject([
      { type: "text", text: expect.stringContaining("The tool answered") },
    ]);
  });
});

describe("parallel tool calls", () => {
  it("merges consecutive OpenAI tool messages into one Anthropic user turn (Anthropic rejects them apart)", async () => {
    const resultA = rig.canary("merge-a");
    const resultB = rig.canary("merge-b");
    const completion = await rig.openai.chat.completions.create({
      model: MODELS.claude,
      messages: [
        { role: "user", content: "Compare a and b" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_a", type: "function", function: { name: "lookup", arguments: '{"query":"a"}' } },
            { id: "call_b", type: "function", function: { name: "lookup", arguments: '{"query":"b"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_a", content: `A is ${resultA}` },
        { role: "tool", tool_call_id: "call_b", content: [{ type: "text", text: `B is ${resultB}` }] },
        { role: "user", content: "Which is bigger?" },
      ],
      tools: openAITools("Looks a term up."),
    });
    expect(completion.choices[0]?.message.content).toBe(`Echo: A is ${resultA} B is ${resultB} Which is bigger?`);
    expect(lastAnthropicBody().messages).toEqual([
      { role: "user", content: [{ type: "text", text: "Compare a and b" }] },
      {
        role: "assistant",
        content: [
          { type: "tool_use", id: "call_a", name: "lookup", input: { query: "a" } },
          { type: "tool_use", id: "call_b", name: "lookup", input: { query: "b" } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "call_a", content: `A is ${resultA}` },
          { type: "tool_result", tool_use_id: "call_b", content: [{ type: "text", text: `B is ${resultB}` }] },
          { type: "text", text: "Which is bigger?" },
        ],
      },
    ]);
  });

  it("sends tool_choice none without disable_parallel_tool_use, a field Anthropic's none does not take", async () => {
    const completion = await rig.openai.chat.completions.create({
      model: MODELS.claude,
      messages: [{ role: "user", content: "hi" }],
      tools: openAITools("Looks a term up."),
      tool_choice: "none",
      parallel_tool_calls: false,
    });
    expect(completion.choices[0]?.message.content).toBe("Echo: hi");
    expect(lastAnthropicBody().tool_choice).toEqual({ type: "none" });
  });

  it("splits one Anthropic user turn of tool results into OpenAI tool messages, results first", async () => {
    await rig.anthropic.messages.create({
      model: MODELS.gpt,
      max_tokens: 100,
      messages: [
        { role: "user", content: "Compare a and b" },
        {
          role: "assistant",
          content: [
            { type: "text", text: "Checking both." },
            { type: "tool_use", id: "toolu_a", name: "lookup", input: { query: "a" } },
            { type: "tool_use", id: "toolu_b", name: "lookup", input: { query: "b" } },
          ],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_a", content: "A is 1" },
            { type: "tool_result", tool_use_id: "toolu_b", content: [{ type: "text", text: "B is 2" }] },
            { type: "text", text: "Which is bigger?" },
          ],
        },
      ],
    });
    expect(lastOpenAIBody().messages).toEqual([
      { role: "user", content: "Compare a and b" },
      {
        role: "assistant",
        content: "Checking both.",
        tool_calls: [
          { id: "toolu_a", type: "function", function: { name: "lookup", arguments: '{"query":"a"}' } },
          { id: "toolu_b", type: "function", function: { name: "lookup", arguments: '{"query":"b"}' } },
        ],
      },
      { role: "tool", tool_call_id: "toolu_a", content: "A is 1" },
      { role: "tool", tool_call_id: "toolu_b", content: "B is 2" },
      { role: "user", content: "Which is bigger?" },
    ]);
  });
});

describe("snapshots of the richest request each translation sends upstream", () => {
  it("OpenAI client to Anthropic supplier", async () => {
    await rig.openai.chat.completions.create({
      model: MODELS.claude,
      messages: [
        { role: "system", content: "You are terse." },
        { role: "developer", content: [{ type: "text", text: "Answer in English." }] },
        {
          role: "user",
          content: [
            { type: "text", text: "Describe" },
            { type: "image_url", image_url: { url: "data:image/gif;base64,R0lGODlhAQABAAAAACw=" } },
          ],
        },
        {
          role: "assistant",
          content: "Calling.",
          tool_calls: [{ id: "call_1", type: "function", function: { name: "lookup", arguments: "" } }],
        },
        { role: "tool", tool_call_id: "call_1", content: "nothing" },
      ],
      tools: openAITools("Looks a term up."),
      tool_choice: { type: "function", function: { name: "lookup" } },
      temperature: 1.6,
      top_p: 0.5,
      stop: "END",
      max_tokens: 99,
      user: "user-7",
      seed: 3,
      n: 1,
    });
    expect(lastAnthropicBody()).toEqual({
      model: "upstream-claude",
      system: [
        { type: "text", text: "You are terse." },
        { type: "text", text: "Answer in English." },
      ],
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Describe" },
            { type: "image", source: { type: "base64", media_type: "image/gif", data: "R0lGODlhAQABAAAAACw=" } },
          ],
        },
        {
          role: "assistant",
          content: [
            { type: "text", text: "Calling." },
            { type: "tool_use", id: "call_1", name: "lookup", input: {} },
          ],
        },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "call_1", content: "nothing" }] },
      ],
      max_tokens: 99,
      // Anthropic's temperature stops at 1
      temperature: 1,
      top_p: 0.5,
      stop_sequences: ["END"],
      tools: [
        {
          name: "lookup",
          description: "Looks a term up.",
          input_schema: { type: "object", properties: { query: { type: "string" } }, required: ["query"] },
        },
      ],
      tool_choice: { type: "tool", name: "lookup" },
      metadata: { user_id: "user-7" },
    });
  });

  it("Anthropic client to OpenAI supplier", async () => {
    await rig.anthropic.messages
      .stream({
        model: MODELS.gpt,
        max_tokens: 321,
        system: "You are terse.",
        messages: [
          {
            role: "user",
            content: [
              { type: "image", source: { type: "url", url: "https://example.com/a.png" } },
              { type: "text", text: "Describe" },
            ],
          },
          {
            role: "assistant",
            content: [
              { type: "thinking", thinking: "hidden", signature: "c2ln" },
              { type: "tool_use", id: "toolu_1", name: "lookup", input: { query: "a" } },
            ],
          },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "nothing" }] },
        ],
        tools: anthropicTools("Looks a term up."),
        tool_choice: { type: "any", disable_parallel_tool_use: true },
        stop_sequences: ["END"],
        metadata: { user_id: "user-7" },
        // a field this SDK version no longer types, which clients still send
        ...({ temperature: 0.1 } as object),
      })
      .finalMessage();
    expect(lastOpenAIBody()).toEqual({
      model: "upstream-gpt",
      messages: [
        { role: "system", content: "You are terse." },
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: "https://example.com/a.png" } },
            { type: "text", text: "Describe" },
          ],
        },
        // thinking cannot be carried to an OpenAI-format supplier
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "toolu_1", type: "function", function: { name: "lookup", arguments: '{"query":"a"}' } }],
        },
        { role: "tool", tool_call_id: "toolu_1", content: "nothing" },
      ],
      max_tokens: 321,
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.1,
      stop: ["END"],
      tools: [
        {
          type: "function",
          function: {
            name: "lookup",
            description: "Looks a term up.",
            parameters: { type: "object", properties: { query: { type: "string" } }, required: ["query"] },
          },
        },
      ],
      tool_choice: "required",
      parallel_tool_calls: false,
      user: "user-7",
      store: false,
    });
  });
});
