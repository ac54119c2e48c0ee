import { describe, expect, it } from "vitest";
import type { ModelId, RequestId } from "../src/config/ids.js";
import { LetheError } from "../src/errors/lethe-error.js";
import { anthropicMessagesSurface } from "../src/formats/anthropic/anthropic-surface.js";
import { anthropicToOpenAIRequest } from "../src/formats/translate/anthropic-to-openai-request.js";
import { toAnthropicStopReason, toOpenAIFinishReason } from "../src/formats/translate/map-finish-reason.js";
import {
  DEFAULT_ANTHROPIC_MAX_TOKENS,
  openAIToAnthropicRequest,
} from "../src/formats/translate/openai-to-anthropic-request.js";
import { anthropicToOpenAICompletion, openAIToAnthropicMessage } from "../src/formats/translate/translate-response.js";
import { fromAnthropicUsage, toAnthropicUsage } from "../src/metering/anthropic-usage.js";
import { Exchange } from "../src/metering/exchange.js";
import { fromOpenAIUsage, MAX_PLAUSIBLE_TOKENS, toOpenAIUsage } from "../src/metering/token-usage.js";

/** The translators as pure functions: requests both ways, answers both ways, reasons and usage. */

type Json = Record<string, unknown>;

const MODEL = "unit-model" as ModelId;

/** The error a translator throws, so a test can check it names no input. */
function thrownBy(action: () => unknown): LetheError {
  try {
    action();
  } catch (error) {
    if (error instanceof LetheError) return error;
    throw error;
  }
  throw new Error("expected a LetheError");
}

describe("openAIToAnthropicRequest", () => {
  const toAnthropic = (body: Json) => openAIToAnthropicRequest(body, "upstream");

  it("collects system and developer messages, wherever they stand, into system blocks", () => {
    const out = toAnthropic({
      messages: [
        { role: "system", content: "one" },
        { role: "user", content: "hi" },
        { role: "developer", content: [{ type: "text", text: "two" }] },
      ],
    });
    expect(out.system).toEqual([
      { type: "text", text: "one" },
      { type: "text", text: "two" },
    ]);
    expect(out.messages).toEqual([{ role: "user", content: [{ type: "text", text: "hi" }] }]);
  });

  it("merges consecutive tool results, and the user message after them, into one user turn", () => {
    const out = toAnthropic({
      messages: [
        { role: "user", content: "compare" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "a", type: "function", function: { name: "f", arguments: '{"x":1}' } },
            { id: "b", type: "function", function: { name: "f", arguments: "" } },
          ],
        },
        { role: "tool", tool_call_id: "a", content: "A" },
        { role: "tool", tool_call_id: "b", content: [{ type: "text", text: "B" }] },
        { role: "user", content: "so?" },
      ],
    });
    expect(out.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "compare" }] },
      {
        role: "assistant",
        content: [
          { type: "tool_use", id: "a", name: "f", input: { x: 1 } },
          { type: "tool_use", id: "b", name: "f", input: {} },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "a", content: "A" },
          // parts stay blocks: several are not run together into one string
          { type: "tool_result", tool_use_id: "b", content: [{ type: "text", text: "B" }] },
          { type: "text", text: "so?" },
        ],
      },
    ]);
  });

  it("merges consecutive user messages and drops empty assistant turns, as Anthropic wants alternation", () => {
    const out = toAnthropic({
      messages: [
        { role: "user", content: "one" },
        { role: "assistant", content: "" },
        { role: "user", content: "two" },
      ],
    });
    expect(out.messages).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "one" },
          { type: "text", text: "two" },
        ],
      },
    ]);
  });

  it("drops blank text, which Anthropic refuses, and the turns left empty by it", () => {
    const out = toAnthropic({
      messages: [
        { role: "system", content: " " },
        {
          role: "user",
          content: [
            { type: "text", text: "" },
            { type: "text", text: "hi" },
          ],
        },
        { role: "assistant", content: [{ type: "text", text: "\n" }] },
        { role: "user", content: "" },
      ],
    });
    expect(out.system).toBeUndefined();
    expect(out.messages).toEqual([{ role: "user", content: [{ type: "text", text: "hi" }] }]);
  });

  it("refuses a last user turn left empty by blank text, which would make the turn before it last (a prefill)", () => {
    const refusal = { code: "LETHE_INVALID_REQUEST", param: "messages" };
    const conversation = [
      { role: "user", content: "hi" },
      { role: "assistant", content: "Hello! How can I help? " },
    ];
    expect(() => toAnthropic({ messages: [...conversation, { role: "user", content: "" }] })).toThrow(
      expect.objectContaining(refusal),
    );
    expect(() =>
      toAnthropic({ messages: [...conversation, { role: "user", content: [{ type: "text", text: "  " }] }] }),
    ).toThrow(expect.objectContaining(refusal));
    expect(() => toAnthropic({ messages: [{ role: "user", content: " " }] })).toThrow(expect.objectContaining(refusal));
    // a conversation that ends with the assistant on purpose is a prefill the client asked for
    expect(toAnthropic({ messages: conversation }).messages).toHaveLength(2);
  });

  it("refuses stop sequences Anthropic refuses (empty or only whitespace), naming `stop`", () => {
    const base = { messages: [{ role: "user", content: "hi" }] };
    for (const stop of ["\n", ["END", "\n"], [""]]) {
      expect(() => toAnthropic({ ...base, stop })).toThrow(
        expect.objectContaining({ code: "LETHE_INVALID_REQUEST", param: "stop" }),
      );
    }
    expect(toAnthropic({ ...base, stop: ["\nEND", " x "] }).stop_sequences).toEqual(["\nEND", " x "]);
  });

  it.each([
    [{}, DEFAULT_ANTHROPIC_MAX_TOKENS],
    [{ max_tokens: null }, DEFAULT_ANTHROPIC_MAX_TOKENS],
    [{ max_tokens: 10 }, 10],
    [{ max_tokens: 10, max_completion_tokens: 20 }, 20],
    [{ max_tokens: 10, max_completion_tokens: null }, 10],
  ])("sends max_tokens for %j as %i", (fields, expected) => {
    expect(toAnthropic({ messages: [{ role: "user", content: "hi" }], ...fields }).max_tokens).toBe(expected);
  });

  it("documents its default max_tokens as 4096", () => {
    expect(DEFAULT_ANTHROPIC_MAX_TOKENS).toBe(4096);
  });

  it("clamps temperature to Anthropic's 0-1, passes top_p, and turns stop into stop_sequences", () => {
    const base = { messages: [{ role: "user", content: "hi" }] };
    expect(toAnthropic({ ...base, temperature: 1.7, top_p: 0.4, stop: "END" })).toMatchObject({
      temperature: 1,
      top_p: 0.4,
      stop_sequences: ["END"],
    });
    expect(toAnthropic({ ...base, temperature: 0.2, stop: ["A", "B"] })).toMatchObject({
      temperature: 0.2,
      stop_sequences: ["A", "B"],
    });
    // top_p 1 (every token) beside a temperature says nothing, and newer Anthropic models refuse the pair
    expect(toAnthropic({ ...base, temperature: 0.7, top_p: 1 })).not.toHaveProperty("top_p");
    expect(toAnthropic({ ...base, top_p: 1 })).toMatchObject({ top_p: 1 });
  });

  it.each([
    ["auto", undefined, { type: "auto" }],
    ["none", undefined, { type: "none" }],
    ["required", undefined, { type: "any" }],
    [{ type: "function", function: { name: "f" } }, undefined, { type: "tool", name: "f" }],
    ["required", false, { type: "any", disable_parallel_tool_use: true }],
    ["none", false, { type: "none" }],
    [undefined, false, { type: "auto", disable_parallel_tool_use: true }],
    [undefined, true, undefined],
  ])("maps tool_choice %j with parallel_tool_calls %j to %j", (choice, parallel, expected) => {
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      tools: [{ type: "function", function: { name: "f" } }],
      ...(choice !== undefined && { tool_choice: choice }),
      ...(parallel !== undefined && { parallel_tool_calls: parallel }),
    });
    expect(out.tool_choice).toEqual(expected);
  });

  it("carries a function's strict flag over as Anthropic's strict tool use, both ways", () => {
    const parameters = { type: "object", properties: { x: { type: "number" } }, required: ["x"] };
    const anthropic = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      tools: [
        { type: "function", function: { name: "strict_one", parameters, strict: true } },
        { type: "function", function: { name: "loose_one", parameters, strict: false } },
      ],
    });
    expect(anthropic.tools).toEqual([
      { name: "strict_one", input_schema: parameters, strict: true },
      { name: "loose_one", input_schema: parameters },
    ]);
    const openai = anthropicToOpenAIRequest(
      { max_tokens: 10, messages: [{ role: "user", content: "hi" }], tools: anthropic.tools },
      "upstream",
    );
    expect(openai.tools).toEqual([
      { type: "function", function: { name: "strict_one", parameters, strict: true } },
      { type: "function", function: { name: "loose_one", parameters } },
    ]);
  });

  it("sends no tool_choice without tools (Anthropic refuses one), whatever the client set", () => {
    for (const tools of [undefined, []]) {
      const out = toAnthropic({
        messages: [{ role: "user", content: "hi" }],
        ...(tools !== undefined && { tools }),
        tool_choice: "auto",
        parallel_tool_calls: false,
      });
      expect(out).not.toHaveProperty("tool_choice");
      expect(out).not.toHaveProperty("tools");
    }
  });

  it("narrows the tools to an allowed_tools choice, and maps its mode", () => {
    const tool = (name: string) => ({ type: "function", function: { name, parameters: { type: "object" } } });
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      tools: [tool("read_file"), tool("delete_files")],
      tool_choice: {
        type: "allowed_tools",
        allowed_tools: { mode: "required", tools: [{ type: "function", function: { name: "read_file" } }] },
      },
    });
    expect((out.tools as Json[]).map((each) => each.name)).toEqual(["read_file"]);
    expect(out.tool_choice).toEqual({ type: "any" });
    const auto = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      tools: [tool("read_file")],
      tool_choice: {
        type: "allowed_tools",
        allowed_tools: { mode: "auto", tools: [{ type: "function", function: { name: "read_file" } }] },
      },
    });
    expect(auto.tool_choice).toEqual({ type: "auto" });
  });

  it.each([
    ["frequency_penalty", { frequency_penalty: 0.5 }],
    ["presence_penalty", { presence_penalty: -1 }],
    ["logit_bias", { logit_bias: { "50256": -100 } }],
    ["web_search_options", { web_search_options: {} }],
    ["audio", { modalities: ["text", "audio"], audio: { voice: "alloy", format: "wav" } }],
    ["functions", { functions: [{ name: "f", parameters: {} }], function_call: "auto" }],
    ["tools", { tools: [{ type: "custom", custom: { name: "grep" } }] }],
    [
      "tool_choice",
      {
        tools: [{ type: "function", function: { name: "f" } }],
        tool_choice: { type: "custom", custom: { name: "f" } },
      },
    ],
  ])("refuses %s, which an Anthropic model cannot honour as asked, rather than drop it", (param, fields) => {
    const refused = thrownBy(() => toAnthropic({ messages: [{ role: "user", content: "hi" }], ...fields }));
    expect(refused).toMatchObject({ code: "LETHE_INVALID_REQUEST", param });
  });

  it("leaves defaults and what only tunes the answer behind; safety_identifier is the end user's id", () => {
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      frequency_penalty: 0,
      presence_penalty: 0,
      logit_bias: {},
      web_search_options: null,
      seed: 7,
      reasoning_effort: "low",
      safety_identifier: "user-hash",
    });
    expect(out.metadata).toEqual({ user_id: "user-hash" });
    for (const field of ["frequency_penalty", "presence_penalty", "logit_bias", "seed", "reasoning_effort"])
      expect(out).not.toHaveProperty(field);
  });

  it("refuses a tool message that names no tool call, rather than send Anthropic a null id", () => {
    expect(() =>
      toAnthropic({
        messages: [
          { role: "user", content: "hi" },
          { role: "tool", tool_call_id: null, name: null, content: "result" },
        ],
      }),
    ).toThrow(expect.objectContaining({ code: "LETHE_INVALID_REQUEST", param: "messages" }));
  });

  it("sends function tools with their schema, or an empty object schema when they have none", () => {
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      tools: [
        { type: "function", function: { name: "f", description: "d", parameters: { type: "object", x: 1 } } },
        { type: "function", function: { name: "g" } },
      ],
    });
    expect(out.tools).toEqual([
      { name: "f", description: "d", input_schema: { type: "object", x: 1 } },
      { name: "g", input_schema: { type: "object", properties: {} } },
    ]);
  });

  it("turns base64 data URLs into base64 sources and every other URL into a url source", () => {
    const out = toAnthropic({
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
            { type: "image_url", image_url: "https://example.com/a.png" },
            { type: "image_url", image_url: { url: "https://example.com/b.png", detail: "high" } },
          ],
        },
      ],
    });
    expect((out.messages as Json[])[0]?.content).toEqual([
      { type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } },
      { type: "image", source: { type: "url", url: "https://example.com/a.png" } },
      { type: "image", source: { type: "url", url: "https://example.com/b.png" } },
    ]);
  });

  it("carries a json_schema response_format over as Anthropic's structured output, and refuses json_object", () => {
    const schema = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
    });
    expect(out.output_config).toEqual({ format: { type: "json_schema", schema } });
    expect(() =>
      toAnthropic({ messages: [{ role: "user", content: "hi" }], response_format: { type: "json_object" } }),
    ).toThrow(
      expect.objectContaining({
        code: "LETHE_INVALID_REQUEST",
        param: "response_format",
        // it says what would do instead
        message: expect.stringContaining("a json_schema response_format can"),
      }),
    );
    expect(() =>
      toAnthropic({
        messages: [{ role: "user", content: "hi" }],
        response_format: { type: "json_schema", json_schema: { name: "no-schema" } },
      }),
    ).toThrow(expect.objectContaining({ param: "response_format" }));
  });

  it("reads null tools, tool_choice and user as not given", () => {
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi", name: null, tool_calls: null }],
      tools: null,
      tool_choice: null,
      user: null,
    });
    expect(out).toEqual({
      model: "upstream",
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
      max_tokens: DEFAULT_ANTHROPIC_MAX_TOKENS,
    });
  });

  it("maps user to metadata.user_id and stream to stream, and leaves OpenAI-only fields behind", () => {
    const out = toAnthropic({
      messages: [{ role: "user", content: "hi" }],
      user: "u-1",
      stream: true,
      stream_options: { include_usage: true },
      n: 1,
      seed: 4,
      response_format: { type: "text" },
    });
    expect(out).toEqual({
      model: "upstream",
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
      max_tokens: DEFAULT_ANTHROPIC_MAX_TOKENS,
      stream: true,
      metadata: { user_id: "u-1" },
    });
  });

  it("refuses tool-call arguments that are not JSON, without quoting them", () => {
    const error = thrownBy(() =>
      toAnthropic({
        messages: [
          { role: "user", content: "hi" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "a", function: { name: "f", arguments: "{secret" } }],
          },
        ],
      }),
    );
    expect(error.code).toBe("LETHE_INVALID_REQUEST");
    expect(error.message).not.toContain("secret");
  });

  it("sends an inline PDF file part as a document, titled with its filename", () => {
    const out = toAnthropic({
      messages: [
        {
          role: "user",
          content: [
            { type: "file", file: { filename: "r.pdf", file_data: "data:application/pdf;base64,JVBERi0x" } },
            { type: "file", file: { filename: "bare.PDF", file_data: "JVBERi0y" } },
            { type: "text", text: "Summarise." },
          ],
        },
      ],
    });
    expect(out.messages).toEqual([
      {
        role: "user",
        content: [
          {
            type: "document",
            source: { type: "base64", media_type: "application/pdf", data: "JVBERi0x" },
            title: "r.pdf",
          },
          {
            type: "document",
            source: { type: "base64", media_type: "application/pdf", data: "JVBERi0y" },
            title: "bare.PDF",
          },
          { type: "text", text: "Summarise." },
        ],
      },
    ]);
  });

  it("reads data URLs with parameters and any letter case, for files and images alike", () => {
    const out = toAnthropic({
      messages: [
        {
          role: "user",
          content: [
            { type: "file", file: { file_data: "data:Application/PDF;name=a.pdf;base64,JVBERi0x" } },
            { type: "image_url", image_url: { url: "data:image/PNG;name=x.png;base64,iVBORw0K" } },
          ],
        },
      ],
    });
    expect((out.messages as Json[])[0]?.content).toEqual([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: "JVBERi0x" } },
      { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0K" } },
    ]);
    const jpg = toAnthropic({
      messages: [
        { role: "user", content: [{ type: "image_url", image_url: { url: "data:image/jpg;base64,/9j/4AAQ" } }] },
      ],
    });
    expect((jpg.messages as Json[])[0]?.content).toEqual([
      { type: "image", source: { type: "base64", media_type: "image/jpeg", data: "/9j/4AAQ" } },
    ]);
    const svg = { type: "image_url", image_url: { url: "data:image/svg+xml,%3Csvg%3E" } };
    expect(thrownBy(() => toAnthropic({ messages: [{ role: "user", content: [svg] }] }))).toMatchObject({
      code: "LETHE_INVALID_REQUEST",
      param: "messages",
    });
  });

  it("refuses a system or developer message holding a file or an image, rather than drop it", () => {
    const file = { type: "file", file: { filename: "a.pdf", file_data: "data:application/pdf;base64,JVBERi0x" } };
    for (const role of ["system", "developer"]) {
      expect(
        thrownBy(() =>
          toAnthropic({
            messages: [
              { role, content: [file] },
              { role: "user", content: "hi" },
            ],
          }),
        ),
      ).toMatchObject({ code: "LETHE_INVALID_REQUEST", param: "messages" });
    }
  });

  it("refuses a file part by file_id or of another type than PDF", () => {
    for (const file of [
      { file_id: "file-abc" },
      { filename: "a.txt", file_data: "data:text/plain;base64,aGk=" },
      { filename: "noext", file_data: "aGk=" },
    ]) {
      expect(
        thrownBy(() => toAnthropic({ messages: [{ role: "user", content: [{ type: "file", file }] }] })),
      ).toMatchObject({
        code: "LETHE_INVALID_REQUEST",
        param: "messages",
      });
    }
  });

  it("refuses content parts with no Anthropic counterpart, and image parts without a url, naming messages", () => {
    const image = (url: string) => [{ role: "user", content: [{ type: "image_url", image_url: { url } }] }];
    const refusals = [
      thrownBy(() => toAnthropic({ messages: [{ role: "user", content: [{ type: "input_audio" }] }] })),
      thrownBy(() => toAnthropic({ messages: [{ role: "system", content: [{ type: "input_audio" }] }] })),
      thrownBy(() => toAnthropic({ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] })),
      // an image type Anthropic does not take, and a URL it cannot fetch
      thrownBy(() => toAnthropic({ messages: image("data:text/plain;base64,aGVsbG8=") })),
      thrownBy(() => toAnthropic({ messages: image("ftp://files.example/cat.png") })),
      // a conversation of a system prompt alone, which OpenAI answers and Anthropic refuses
      thrownBy(() => toAnthropic({ messages: [{ role: "system", content: "You are terse." }] })),
      // the legacy role `function` answers a call by name; Anthropic's tool results need its id
      thrownBy(() =>
        toAnthropic({
          messages: [
            { role: "user", content: "hi" },
            { role: "function", name: "f", content: "42" },
          ],
        }),
      ),
    ];
    for (const error of refusals) expect([error.code, error.param]).toEqual(["LETHE_INVALID_REQUEST", "messages"]);
    expect(toAnthropic({ messages: image("data:image/jpg;base64,AAAA") }).messages).toMatchObject([
      { content: [{ source: { media_type: "image/jpeg" } }] },
    ]);
  });

  it("refuses a function tool without a name, naming tools", () => {
    for (const tool of [{ type: "function" }, { type: "function", function: { parameters: {} } }]) {
      const error = thrownBy(() => toAnthropic({ messages: [{ role: "user", content: "hi" }], tools: [tool] }));
      expect([error.code, error.param]).toEqual(["LETHE_INVALID_REQUEST", "tools"]);
    }
  });

  it("keeps an assistant turn that is an OpenAI refusal, as its text (not dropped, merging the user turns around it)", () => {
    const out = toAnthropic({
      messages: [
        { role: "user", content: "x" },
        { role: "assistant", content: null, refusal: "I can't help with that." },
        { role: "user", content: "y" },
      ],
    });
    expect(out.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "x" }] },
      { role: "assistant", content: [{ type: "text", text: "I can't help with that." }] },
      { role: "user", content: [{ type: "text", text: "y" }] },
    ]);
  });
});

describe("anthropicToOpenAIRequest", () => {
  const toOpenAI = (body: Json) => anthropicToOpenAIRequest({ max_tokens: 100, ...body }, "upstream");

  it("puts max_tokens where the supplier reads it: max_tokens, or max_completion_tokens for OpenAI itself", () => {
    const messages = [{ role: "user", content: "hi" }];
    expect(toOpenAI({ messages })).toMatchObject({ max_tokens: 100 });
    const forOpenAI = anthropicToOpenAIRequest({ max_tokens: 100, messages }, "o3", "max_completion_tokens");
    expect(forOpenAI.max_completion_tokens).toBe(100);
    expect("max_tokens" in forOpenAI).toBe(false);
  });

  it("puts the system prompt, string or blocks, first as one system message", () => {
    expect(toOpenAI({ system: "be brief", messages: [{ role: "user", content: "hi" }] }).messages).toEqual([
      { role: "system", content: "be brief" },
      { role: "user", content: "hi" },
    ]);
    const blocks = toOpenAI({
      system: [
        { type: "text", text: "one", cache_control: { type: "ephemeral" } },
        { type: "text", text: "two" },
      ],
      messages: [{ role: "user", content: "hi" }],
    });
    // separate passages, not run together word to word
    expect((blocks.messages as Json[])[0]).toEqual({ role: "system", content: "one\n\ntwo" });
  });

  it("joins a tool result's text blocks as passages, and refuses one holding an image rather than drop it", () => {
    const result = (content: unknown) =>
      toOpenAI({
        messages: [
          { role: "user", content: "q" },
          { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "f", input: {} }] },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content }] },
        ],
      });
    const texts = result([
      { type: "text", text: "first" },
      { type: "text", text: "second" },
    ]);
    expect((texts.messages as Json[])[2]).toEqual({ role: "tool", tool_call_id: "t1", content: "first\n\nsecond" });
    expect(() =>
      result([
        { type: "text", text: "here" },
        { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
      ]),
    ).toThrow(expect.objectContaining({ code: "LETHE_INVALID_REQUEST", param: "messages" }));
  });

  it("splits tool results out of a user turn into tool messages, ahead of the rest of the turn", () => {
    const out = toOpenAI({
      messages: [
        { role: "user", content: "q" },
        {
          role: "assistant",
          content: [
            { type: "thinking", thinking: "hidden", signature: "sig" },
            { type: "text", text: "calling" },
            { type: "tool_use", id: "t1", name: "f", input: { x: 1 } },
          ],
        },
        {
          role: "user",
          content: [
            { type: "text", text: "and?" },
            { type: "tool_result", tool_use_id: "t1", content: [{ type: "text", text: "R1" }] },
            { type: "tool_result", tool_use_id: "t2", content: "R2", is_error: true },
          ],
        },
      ],
    });
    expect(out.messages).toEqual([
      { role: "user", content: "q" },
      {
        role: "assistant",
        content: "calling",
        tool_calls: [{ id: "t1", type: "function", function: { name: "f", arguments: '{"x":1}' } }],
      },
      { role: "tool", tool_call_id: "t1", content: "R1" },
      { role: "tool", tool_call_id: "t2", content: "R2" },
      { role: "user", content: "and?" },
    ]);
  });

  it("gives an assistant turn of tool calls only a null content", () => {
    const out = toOpenAI({
      messages: [
        { role: "user", content: "q" },
        { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "f", input: {} }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: "r" }] },
      ],
    });
    expect((out.messages as Json[])[1]).toEqual({
      role: "assistant",
      content: null,
      tool_calls: [{ id: "t1", type: "function", function: { name: "f", arguments: "{}" } }],
    });
  });

  it("keeps several user parts as parts, with images as image_url", () => {
    const out = toOpenAI({
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "look" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } },
            { type: "image", source: { type: "url", url: "https://example.com/a.png" } },
          ],
        },
      ],
    });
    expect((out.messages as Json[])[0]).toEqual({
      role: "user",
      content: [
        { type: "text", text: "look" },
        { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } },
        { type: "image_url", image_url: { url: "https://example.com/a.png" } },
      ],
    });
  });

  it.each([
    [{ type: "auto" }, "auto", undefined],
    [{ type: "any" }, "required", undefined],
    [{ type: "none" }, "none", undefined],
    [{ type: "tool", name: "f" }, { type: "function", function: { name: "f" } }, undefined],
    [{ type: "auto", disable_parallel_tool_use: true }, "auto", false],
  ])("maps tool_choice %j", (choice, expected, parallel) => {
    const out = toOpenAI({
      messages: [{ role: "user", content: "hi" }],
      tools: [{ name: "f", input_schema: { type: "object" } }],
      tool_choice: choice,
    });
    expect(out.tool_choice).toEqual(expected);
    expect(out.parallel_tool_calls).toBe(parallel);
  });

  it("sends neither tools, tool_choice nor parallel_tool_calls without tools (OpenAI refuses them, and an empty list)", () => {
    for (const tools of [undefined, []]) {
      const out = toOpenAI({
        messages: [{ role: "user", content: "hi" }],
        ...(tools !== undefined && { tools }),
        tool_choice: { type: "auto", disable_parallel_tool_use: true },
      });
      expect(out).not.toHaveProperty("tools");
      expect(out).not.toHaveProperty("tool_choice");
      expect(out).not.toHaveProperty("parallel_tool_calls");
    }
  });

  it("maps stop_sequences, metadata.user_id and stream, asking for stream usage, and leaves top_k behind", () => {
    expect(
      toOpenAI({
        messages: [{ role: "user", content: "hi" }],
        stop_sequences: ["END"],
        metadata: { user_id: "u-1" },
        stream: true,
        top_k: 4,
        temperature: 0.3,
      }),
    ).toEqual({
      model: "upstream",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 100,
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.3,
      stop: ["END"],
      user: "u-1",
    });
  });

  it("maps Anthropic's structured output (output_config.format) to a strict json_schema response_format", () => {
    const schema = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
    const messages = [{ role: "user", content: "hi" }];
    expect(toOpenAI({ messages, output_config: { format: { type: "json_schema", schema } } }).response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "output", schema, strict: true },
    });
    // effort alone, or a null format, asks for no format
    expect(toOpenAI({ messages, output_config: { effort: "low" } })).not.toHaveProperty("response_format");
    expect(toOpenAI({ messages, output_config: { format: null } })).not.toHaveProperty("response_format");
    const refused = thrownBy(() => toOpenAI({ messages, output_config: { format: { type: "xml" } } }));
    expect(refused).toMatchObject({ code: "LETHE_INVALID_REQUEST", param: "output_config.format" });
  });

  it("sends a PDF document as a file part, a text or content document as text", () => {
    const pdf = { type: "document", source: { type: "base64", media_type: "application/pdf", data: "JVBERi0x" } };
    const text = { type: "document", source: { type: "text", media_type: "text/plain", data: "plain words" } };
    const content = { type: "document", source: { type: "content", content: [{ type: "text", text: "block words" }] } };
    const out = toOpenAI({
      messages: [
        { role: "user", content: [{ ...pdf, title: "report.pdf" }, pdf, text, content, { type: "text", text: "?" }] },
      ],
    });
    expect(out.messages).toEqual([
      {
        role: "user",
        content: [
          { type: "file", file: { filename: "report.pdf", file_data: "data:application/pdf;base64,JVBERi0x" } },
          { type: "file", file: { filename: "document.pdf", file_data: "data:application/pdf;base64,JVBERi0x" } },
          { type: "text", text: "plain words" },
          { type: "text", text: "block words" },
          { type: "text", text: "?" },
        ],
      },
    ]);
  });

  it("keeps a document's title and context: the PDF's filename, the text's heading, the context as text after it", () => {
    const pdf = { type: "document", source: { type: "base64", media_type: "application/pdf", data: "JVBERi0x" } };
    const text = { type: "document", source: { type: "text", media_type: "text/plain", data: "words" } };
    const out = toOpenAI({
      messages: [
        {
          role: "user",
          content: [
            { ...pdf, title: "Q3 report", context: "From the finance team." },
            { ...text, title: "Notes" },
          ],
        },
      ],
    });
    expect((out.messages as Json[])[0]?.content).toEqual([
      { type: "file", file: { filename: "Q3 report.pdf", file_data: "data:application/pdf;base64,JVBERi0x" } },
      { type: "text", text: "From the finance team." },
      { type: "text", text: "Notes\n\nwords" },
    ]);
  });

  it("refuses a system prompt holding anything but text, rather than drop it", () => {
    const document = { type: "document", source: { type: "text", media_type: "text/plain", data: "d" } };
    for (const body of [
      { system: [{ type: "text", text: "Be brief." }, document], messages: [{ role: "user", content: "hi" }] },
      {
        messages: [
          { role: "system", content: [document] },
          { role: "user", content: "hi" },
        ],
      },
    ]) {
      expect(thrownBy(() => toOpenAI(body))).toMatchObject({ code: "LETHE_INVALID_REQUEST", param: "messages" });
    }
  });

  it("refuses what an OpenAI-format supplier cannot take: documents by reference or with citations, server tools, file images", () => {
    for (const document of [
      { type: "document", source: { type: "url", url: "https://example.test/a.pdf" } },
      { type: "document", source: { type: "file", file_id: "file_1" } },
      { type: "document", source: { type: "text", media_type: "text/plain", data: "d" }, citations: { enabled: true } },
      {
        type: "document",
        source: { type: "content", content: [{ type: "image", source: { type: "url", url: "u" } }] },
      },
    ]) {
      expect(thrownBy(() => toOpenAI({ messages: [{ role: "user", content: [document] }] }))).toMatchObject({
        code: "LETHE_INVALID_REQUEST",
        param: "messages",
      });
    }
    expect(
      thrownBy(() =>
        toOpenAI({ messages: [{ role: "user", content: "hi" }], tools: [{ type: "web_search_20250305", name: "w" }] }),
      ).code,
    ).toBe("LETHE_INVALID_REQUEST");
    const fileImage = { type: "image", source: { type: "file", file_id: "file_1" } };
    expect(thrownBy(() => toOpenAI({ messages: [{ role: "user", content: [fileImage] }] })).code).toBe(
      "LETHE_INVALID_REQUEST",
    );
    // a block OpenAI has no part for is refused, not left out of the prompt
    const searchResult = {
      type: "search_result",
      source: "https://example.test",
      title: "t",
      content: [{ type: "text", text: "the answer" }],
    };
    expect(
      thrownBy(() => toOpenAI({ messages: [{ role: "user", content: [searchResult, { type: "text", text: "q" }] }] })),
    ).toMatchObject({ code: "LETHE_INVALID_REQUEST", param: "messages" });
  });

  it.each([
    ["mcp_servers", [{ type: "url", url: "https://mcp.example.test", name: "m" }]],
    ["container", "container_1"],
    ["context_management", { edits: [{ type: "clear_tool_uses_20250919" }] }],
    ["inference_geo", "us"],
  ])("refuses %s, which OpenAI's format cannot ask for, rather than dropping it", (field, value) => {
    const refused = thrownBy(() => toOpenAI({ messages: [{ role: "user", content: "hi" }], [field]: value }));
    expect(refused).toMatchObject({ code: "LETHE_INVALID_REQUEST", param: field });
  });

  it("leaves service_tier behind: it tunes how the answer comes, not what it is", () => {
    const out = toOpenAI({ messages: [{ role: "user", content: "hi" }], service_tier: "auto" });
    expect(out).not.toHaveProperty("service_tier");
  });
});

describe("stop and finish reasons", () => {
  it.each([
    ["stop", "end_turn"],
    ["length", "max_tokens"],
    ["tool_calls", "tool_use"],
    ["function_call", "tool_use"],
    ["content_filter", "refusal"],
    [null, "end_turn"],
  ])("OpenAI %s is Anthropic %s", (finishReason, stopReason) => {
    expect(toAnthropicStopReason(finishReason)).toBe(stopReason);
  });

  it.each([
    ["end_turn", "stop"],
    ["stop_sequence", "stop"],
    ["max_tokens", "length"],
    ["model_context_window_exceeded", "length"],
    ["tool_use", "tool_calls"],
    ["refusal", "content_filter"],
    ["pause_turn", "stop"],
  ])("Anthropic %s is OpenAI %s", (stopReason, finishReason) => {
    expect(toOpenAIFinishReason(stopReason)).toBe(finishReason);
  });
});

describe("usage semantics", () => {
  it("marks a record cache_hit when the supplier read part of the prompt from its cache", () => {
    const exchange = new Exchange("req_cache" as RequestId, "/v1/chat/completions", "openai");
    exchange.usage = { input: 100, output: 5, cachedInput: 0, cacheWrite: 40, reasoning: 0 };
    expect(exchange.toRecord(200, null).cache_hit).toBe(false);
    exchange.usage = { input: 100, output: 5, cachedInput: 60, cacheWrite: 0, reasoning: 0 };
    expect(exchange.toRecord(200, null).cache_hit).toBe(true);
  });

  const anthropicUsage = {
    input_tokens: 500,
    cache_read_input_tokens: 400,
    cache_creation_input_tokens: 100,
    output_tokens: 250,
    output_tokens_details: { thinking_tokens: 50 },
  };

  it("counts Anthropic's cache reads and writes into Lethe's input, and keeps each part apart", () => {
    expect(fromAnthropicUsage(anthropicUsage)).toEqual({
      input: 1000,
      output: 250,
      cachedInput: 400,
      cacheWrite: 100,
      reasoning: 50,
    });
    expect(fromAnthropicUsage({ input_tokens: 7, output_tokens: 2 })).toEqual({
      input: 7,
      output: 2,
      cachedInput: 0,
      cacheWrite: 0,
      reasoning: 0,
    });
    expect(fromAnthropicUsage(null)).toBeNull();
  });

  it("reads OpenAI's usage, whose prompt_tokens already include the cached ones", () => {
    expect(
      fromOpenAIUsage({
        prompt_tokens: 1000,
        completion_tokens: 250,
        prompt_tokens_details: { cached_tokens: 400 },
        completion_tokens_details: { reasoning_tokens: 50 },
      }),
    ).toEqual({ input: 1000, output: 250, cachedInput: 400, cacheWrite: 0, reasoning: 50 });
  });

  it("reads counts past what any model could reach as no usage at all, in both formats", () => {
    expect(fromOpenAIUsage({ prompt_tokens: MAX_PLAUSIBLE_TOKENS, completion_tokens: 1 })?.input).toBe(
      MAX_PLAUSIBLE_TOKENS,
    );
    expect(fromOpenAIUsage({ prompt_tokens: 4294967295, completion_tokens: 1 })).toBeNull();
    expect(fromOpenAIUsage({ prompt_tokens: 1, completion_tokens: 1e300 })).toBeNull();
    expect(fromOpenAIUsage({ prompt_tokens: 1, completion_tokens_details: { reasoning_tokens: 2 ** 53 } })).toBeNull();
    // Anthropic's input is the sum of three counts: the sum is what must be plausible
    const half = MAX_PLAUSIBLE_TOKENS / 2 + 1;
    expect(fromAnthropicUsage({ input_tokens: half, cache_read_input_tokens: half, output_tokens: 1 })).toBeNull();
    expect(fromAnthropicUsage({ input_tokens: 10, output_tokens: 4294967295 })).toBeNull();
  });

  it("writes each format's usage back from Lethe's counters", () => {
    const usage = { input: 1000, output: 250, cachedInput: 400, cacheWrite: 100, reasoning: 50 };
    expect(toAnthropicUsage(usage)).toEqual({
      input_tokens: 500,
      output_tokens: 250,
      cache_read_input_tokens: 400,
      cache_creation_input_tokens: 100,
      output_tokens_details: { thinking_tokens: 50 },
    });
    expect(toAnthropicUsage({ ...usage, reasoning: 0 })).not.toHaveProperty("output_tokens_details");
    expect(toOpenAIUsage(usage)).toEqual({
      prompt_tokens: 1000,
      completion_tokens: 250,
      total_tokens: 1250,
      prompt_tokens_details: { cached_tokens: 400 },
      completion_tokens_details: { reasoning_tokens: 50 },
    });
    expect(fromAnthropicUsage(toAnthropicUsage(usage))).toMatchObject({
      input: 1000,
      cachedInput: 400,
      cacheWrite: 100,
    });
  });
});

describe("openAIToAnthropicMessage", () => {
  const usage = { input: 1000, output: 250, cachedInput: 400, cacheWrite: 0, reasoning: 0 };

  it("turns reasoning, text and tool calls into thinking, text and tool_use blocks", () => {
    const message = openAIToAnthropicMessage(
      {
        id: "chatcmpl-abc",
        choices: [
          {
            message: {
              role: "assistant",
              reasoning_content: "hmm",
              content: "calling",
              tool_calls: [
                { id: "c1", type: "function", function: { name: "f", arguments: '{"x":1}' } },
                { id: "c2", type: "function", function: { name: "g", arguments: "{broken" } },
              ],
            },
            finish_reason: "tool_calls",
          },
        ],
      },
      MODEL,
      usage,
    );
    expect(message).toEqual({
      id: "msg_abc",
      type: "message",
      role: "assistant",
      model: MODEL,
      content: [
        { type: "thinking", thinking: "hmm", signature: "" },
        { type: "text", text: "calling" },
        { type: "tool_use", id: "c1", name: "f", input: { x: 1 } },
        // broken JSON from the model is handed over rather than lost
        { type: "tool_use", id: "c2", name: "g", input: { _raw: "{broken" } },
      ],
      stop_reason: "tool_use",
      stop_sequence: null,
      usage: { input_tokens: 600, output_tokens: 250, cache_read_input_tokens: 400, cache_creation_input_tokens: 0 },
    });
  });

  it("maps a length finish to max_tokens and copes with no choices", () => {
    const cut = openAIToAnthropicMessage(
      { id: "x", choices: [{ message: { content: "a" }, finish_reason: "length" }] },
      MODEL,
      usage,
    );
    expect(cut.stop_reason).toBe("max_tokens");
    expect(openAIToAnthropicMessage({ choices: [] }, MODEL, usage)).toMatchObject({
      content: [],
      stop_reason: "end_turn",
    });
  });
});

describe("anthropicToOpenAICompletion", () => {
  it("turns text, thinking and tool_use blocks into content, reasoning_content and tool_calls", () => {
    const completion = anthropicToOpenAICompletion(
      {
        id: "msg_abc",
        content: [
          { type: "thinking", thinking: "hmm", signature: "sig" },
          { type: "text", text: "a" },
          { type: "text", text: "b" },
          { type: "tool_use", id: "t1", name: "f", input: { x: 1 } },
        ],
        stop_reason: "tool_use",
      },
      MODEL,
      { input: 1000, output: 250, cachedInput: 400, cacheWrite: 0, reasoning: 50 },
    );
    expect(completion).toMatchObject({
      id: "chatcmpl-abc",
      object: "chat.completion",
      model: MODEL,
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: "ab",
            reasoning_content: "hmm",
            tool_calls: [{ id: "t1", type: "function", function: { name: "f", arguments: '{"x":1}' } }],
          },
          finish_reason: "tool_calls",
        },
      ],
      usage: { prompt_tokens: 1000, completion_tokens: 250, prompt_tokens_details: { cached_tokens: 400 } },
    });
  });

  it("gives a tool-calls-only answer a null content", () => {
    const completion = anthropicToOpenAICompletion(
      { id: "msg_1", content: [{ type: "tool_use", id: "t1", name: "f", input: {} }], stop_reason: "tool_use" },
      MODEL,
      { input: 1, output: 1, cachedInput: 0, cacheWrite: 0, reasoning: 0 },
    );
    expect((completion.choices as Json[])[0]).toMatchObject({ message: { content: null } });
  });

  it("writes refusal: null, as OpenAI does on every message", () => {
    const completion = anthropicToOpenAICompletion(
      { id: "msg_1", content: [{ type: "text", text: "hi" }], stop_reason: "end_turn" },
      MODEL,
      { input: 1, output: 1, cachedInput: 0, cacheWrite: 0, reasoning: 0 },
    );
    expect((completion.choices as Json[])[0]).toHaveProperty("message.refusal", null);
  });
});

describe("the Anthropic surface's JSON answers", () => {
  const request = {
    model: "unit-model",
    stream: false,
    wantsStreamUsage: true,
    body: { model: "unit-model", max_tokens: 10, messages: [{ role: "user", content: "tell me a story" }] },
  };

  function exchange(): Exchange {
    const created = new Exchange("req_unit" as RequestId, "/v1/messages", "anthropic");
    created.model = MODEL;
    return created;
  }

  const noUsage = {
    openai: {
      id: "chatcmpl-1",
      model: "upstream-name",
      choices: [{ message: { content: "once upon a time" }, finish_reason: "stop" }],
    },
    anthropic: {
      id: "msg_1",
      type: "message",
      model: "upstream-name",
      content: [{ type: "text", text: "once upon a time" }],
    },
  } as const;

  it.each([
    ["openai", "parsed"],
    ["openai", "with its text"],
    ["anthropic", "parsed"],
    ["anthropic", "with its text"],
  ] as const)("counts tokens itself, and says so, when a %s supplier reports no usage (answer %s)", (format, form) => {
    const metered = exchange();
    const body = noUsage[format];
    const given = { body: structuredClone(body), text: form === "parsed" ? undefined : JSON.stringify(body) };
    const answer = JSON.parse(anthropicMessagesSurface.jsonResponse(request, given, format, metered));
    expect(metered.tokensEstimated).toBe(true);
    expect(metered.usage?.input).toBeGreaterThan(0);
    expect(metered.usage?.output).toBe(4);
    expect(answer.model).toBe(MODEL);
    if (format === "openai") expect(answer.usage).toMatchObject({ output_tokens: 4 });
  });

  it("keeps the supplier's own usage when it reports one", () => {
    const metered = exchange();
    anthropicMessagesSurface.jsonResponse(
      request,
      {
        body: {
          type: "message",
          content: [],
          usage: { input_tokens: 3, cache_read_input_tokens: 2, output_tokens: 1 },
        },
      },
      "anthropic",
      metered,
    );
    expect(metered.usage).toEqual({ input: 5, output: 1, cachedInput: 2, cacheWrite: 0, reasoning: 0 });
    expect(metered.tokensEstimated).toBe(false);
  });
});
