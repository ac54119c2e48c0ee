import type Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_ANTHROPIC_MAX_TOKENS } from "../src/formats/translate/openai-to-anthropic-request.js";
import type { MetadataRecord } from "../src/metering/metadata-record.js";
import { DEFAULT_ANTHROPIC_VERSION } from "../src/suppliers/anthropic/anthropic-supplier.js";
import { behaviour } from "./support/fake-openai-supplier.js";
import {
  ANTHROPIC_SUPPLIER_KEY,
  closeTranslationRig,
  MODELS,
  OPENAI_SUPPLIER_KEY,
  startTranslationRig,
  type TranslationRig,
} from "./support/translation-rig.js";

/**
 * Every client format against every supplier format, streaming and not, with the
 * official SDKs and their stream helpers: plain text, an image, a stop sequence and a
 * max-tokens cut-off. The tool-call round trips are in translation-tools.test.ts.
 */

let rig: TranslationRig;

beforeAll(async () => {
  rig = await startTranslationRig();
});

afterAll(async () => {
  expect(await closeTranslationRig(rig)).toEqual([]);
});

afterEach(() => {
  // a behaviour left in a queue means the gateway sent fewer requests than the test expected
  expect(rig.openAIFake.clearQueue()).toBe(0);
  expect(rig.anthropicFake.clearQueue()).toBe(0);
});

/** Sampling fields that clients still send and this SDK version no longer types. */
const UNTYPED_SAMPLING: object = { temperature: 0.5, top_p: 0.9, top_k: 3 };

/** Asks with the Anthropic SDK: `messages.create`, or `messages.stream(...).finalMessage()`. */
async function askAnthropic(params: Anthropic.MessageCreateParamsNonStreaming, stream: boolean) {
  const message = stream
    ? await rig.anthropic.messages.stream(params).finalMessage()
    : await rig.anthropic.messages.create(params);
  return { message, requestId: rig.lastRequestId() };
}

/** Asks with the openai SDK: `chat.completions.create`, or `chat.completions.stream(...).finalChatCompletion()`. */
async function askOpenAI(params: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, stream: boolean) {
  const completion = stream
    ? await rig.openai.chat.completions
        .stream({ ...params, stream: true, stream_options: { include_usage: true } })
        .finalChatCompletion()
    : await rig.openai.chat.completions.create(params);
  return { completion, requestId: rig.lastRequestId() };
}

function lastAnthropicUpstream() {
  return rig.anthropicFake.lastRequest();
}

function lastOpenAIUpstream() {
  const upstream = rig.openAIFake.requests.at(-1);
  if (upstream === undefined) throw new Error("the fake OpenAI supplier received nothing");
  return upstream;
}

/** The metering every successful request through a fake must leave, whatever the formats. */
function expectMetered(record: MetadataRecord, expected: Record<string, unknown>, stream: boolean): void {
  expect(record).toMatchObject({
    status: 200,
    error_code: null,
    streamed: stream,
    tokens_estimated: false,
    ...expected,
  });
  if (stream) expect(record.ttft_ms).toBeGreaterThan(0);
  else expect(record.ttft_ms).toBeNull();
  expect(record.latency_ms).toBeGreaterThanOrEqual(record.ttft_ms ?? 0);
}

describe.each([false, true])("stream: %s", (stream) => {
  describe("an OpenAI client reaching an Anthropic supplier", () => {
    it("sends system apart, defaults max_tokens, maps user to metadata, and reads usage with cache reads included", async () => {
      const system = rig.canary("oa-system");
      const user = rig.canary("oa-user");
      const userField = rig.canary("oa-userfield");
      const { completion, requestId } = await askOpenAI(
        {
          model: MODELS.claude,
          messages: [
            { role: "system", content: `Be brief. ${system}` },
            { role: "user", content: `Say ${user}` },
          ],
          user: userField,
        },
        stream,
      );
      expect(completion.model).toBe(MODELS.claude);
      expect(completion.choices[0]?.message.content).toBe(`Echo: Say ${user}`);
      expect(completion.choices[0]?.finish_reason).toBe("stop");
      // Anthropic's 500 uncached + 400 cache reads + 100 cache writes, in OpenAI's inclusive terms
      expect(completion.usage).toMatchObject({
        prompt_tokens: 1000,
        completion_tokens: 250,
        total_tokens: 1250,
        prompt_tokens_details: { cached_tokens: 400 },
      });

      const upstream = lastAnthropicUpstream();
      expect(upstream.path).toBe("/v1/messages");
      expect(upstream.headers["x-api-key"]).toBe(ANTHROPIC_SUPPLIER_KEY);
      // an OpenAI client names no version: the gateway's default is sent
      expect(upstream.headers["anthropic-version"]).toBe(DEFAULT_ANTHROPIC_VERSION);
      expect(upstream.headers.authorization).toBeUndefined();
      expect(upstream.body).toEqual({
        model: "upstream-claude",
        system: [{ type: "text", text: `Be brief. ${system}` }],
        messages: [{ role: "user", content: [{ type: "text", text: `Say ${user}` }] }],
        max_tokens: DEFAULT_ANTHROPIC_MAX_TOKENS,
        metadata: { user_id: userField },
        ...(stream && { stream: true }),
      });

      expectMetered(
        await rig.recordOf(requestId),
        {
          client_format: "openai",
          endpoint: "/v1/chat/completions",
          model: MODELS.claude,
          supplier: "fake-anthropic",
          input_tokens: 1000,
          cached_input_tokens: 400,
          output_tokens: 250,
          reasoning_tokens: 0,
        },
        stream,
      );
    });

    it("leaves out the blank text parts Anthropic refuses, merging the user turns they separated", async () => {
      const { completion } = await askOpenAI(
        {
          model: MODELS.claude,
          messages: [
            { role: "system", content: [{ type: "text", text: "" }] },
            {
              role: "user",
              content: [
                { type: "text", text: "" },
                { type: "text", text: "hi" },
                { type: "text", text: "  " },
              ],
            },
            { role: "assistant", content: [{ type: "text", text: "" }] },
            { role: "user", content: "again" },
          ],
        },
        stream,
      );
      expect(completion.choices[0]?.message.content).toBe("Echo: hi again");
      const body = lastAnthropicUpstream().body as Record<string, unknown>;
      expect(body.system).toBeUndefined();
      expect(body.messages).toEqual([
        {
          role: "user",
          content: [
            { type: "text", text: "hi" },
            { type: "text", text: "again" },
          ],
        },
      ]);
    });

    it("turns an inline PDF file part into an Anthropic document", async () => {
      const pdf = Buffer.from(`%PDF-1.4 ${rig.canary("oa-pdfdata")}`).toString("base64");
      await askOpenAI(
        {
          model: MODELS.claude,
          max_tokens: 100,
          messages: [
            {
              role: "user",
              content: [
                { type: "file", file: { filename: "q3.pdf", file_data: `data:application/pdf;base64,${pdf}` } },
                { type: "text", text: "Summarise it." },
              ],
            },
          ],
        },
        stream,
      );
      expect((lastAnthropicUpstream().body as { messages: unknown }).messages).toEqual([
        {
          role: "user",
          content: [
            { type: "document", source: { type: "base64", media_type: "application/pdf", data: pdf }, title: "q3.pdf" },
            { type: "text", text: "Summarise it." },
          ],
        },
      ]);
    });

    it("turns base64 data URLs and plain URLs into Anthropic image blocks", async () => {
      const image = rig.canary("oa-imagedata");
      const { completion } = await askOpenAI(
        {
          model: MODELS.claude,
          max_tokens: 100,
          messages: [
            {
              role: "user",
              content: [
                { type: "text", text: "What are these?" },
                { type: "image_url", image_url: { url: `data:image/png;base64,${image}` } },
                { type: "image_url", image_url: { url: "https://example.com/cat.png", detail: "low" } },
              ],
            },
          ],
        },
        stream,
      );
      expect(completion.choices[0]?.message.content).toBe("Echo: What are these?");
      expect((lastAnthropicUpstream().body as { messages: unknown }).messages).toEqual([
        {
          role: "user",
          content: [
            { type: "text", text: "What are these?" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: image } },
            { type: "image", source: { type: "url", url: "https://example.com/cat.png" } },
          ],
        },
      ]);
    });

    it("passes stop as stop_sequences and reports a stop sequence as finish_reason stop", async () => {
      const { completion } = await askOpenAI(
        { model: MODELS.claude, stop: ["HALT"], messages: [{ role: "user", content: "alpha beta HALT gamma" }] },
        stream,
      );
      expect(completion.choices[0]?.message.content).toBe("Echo: alpha beta ");
      expect(completion.choices[0]?.finish_reason).toBe("stop");
      expect(lastAnthropicUpstream().body).toMatchObject({ stop_sequences: ["HALT"] });
    });

    it("reports Anthropic's max_tokens stop as finish_reason length", async () => {
      const { completion } = await askOpenAI(
        { model: MODELS.claude, max_tokens: 2, messages: [{ role: "user", content: "alpha beta gamma delta" }] },
        stream,
      );
      expect(completion.choices[0]?.message.content).toBe("Echo: alpha ");
      expect(completion.choices[0]?.finish_reason).toBe("length");
      expect(completion.usage?.completion_tokens).toBe(2);
      expect(lastAnthropicUpstream().body).toMatchObject({ max_tokens: 2 });
    });

    it("sends a json_schema response_format (chat.completions.parse's) as Anthropic's output_config.format", async () => {
      const schema = {
        type: "object",
        properties: { name: { type: "string" } },
        required: ["name"],
        additionalProperties: false,
      };
      const { completion } = await askOpenAI(
        {
          model: MODELS.claude,
          messages: [{ role: "user", content: "alpha" }],
          response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
        },
        stream,
      );
      expect(completion.choices[0]?.message.content).toContain("alpha");
      expect(lastAnthropicUpstream().body).toMatchObject({
        output_config: { format: { type: "json_schema", schema } },
      });
      expect(lastAnthropicUpstream().body).not.toHaveProperty("response_format");
    });

    it("refuses what Anthropic cannot do as asked (n, logprobs, JSON of no set shape) with 400, sending nothing", async () => {
      const before = rig.anthropicFake.requests.length;
      const asks: [string, object][] = [
        ["n", { n: 3 }],
        ["logprobs", { logprobs: true }],
        ["top_logprobs", { top_logprobs: 2 }],
        ["response_format", { response_format: { type: "json_object" } }],
      ];
      for (const [param, extra] of asks) {
        const thrown = await askOpenAI(
          { model: MODELS.claude, messages: [{ role: "user", content: "alpha" }], ...extra },
          stream,
        ).catch((error: unknown) => error);
        expect(thrown).toBeInstanceOf(OpenAI.BadRequestError);
        expect(thrown).toMatchObject({ param, code: "LETHE_INVALID_REQUEST" });
      }
      expect(rig.anthropicFake.requests.length).toBe(before);
      // what it can do as asked still goes: one choice, plain text
      await askOpenAI(
        {
          model: MODELS.claude,
          n: 1,
          response_format: { type: "text" },
          messages: [{ role: "user", content: "alpha" }],
        },
        stream,
      );
      expect(rig.anthropicFake.requests.length).toBe(before + 1);
      // a model with a route that can carry it passes the other over, without an attempt
      const openAIBefore = rig.openAIFake.requests.length;
      const { requestId } = await askOpenAI(
        { model: MODELS.mixed, logprobs: true, messages: [{ role: "user", content: "alpha" }] },
        stream,
      );
      expect(rig.anthropicFake.requests.length).toBe(before + 1);
      expect(rig.openAIFake.requests.length).toBe(openAIBefore + 1);
      expect(await rig.recordOf(requestId)).toMatchObject({ supplier: "fake-openai", attempts: 1, status: 200 });
    });

    it("prefers max_completion_tokens over max_tokens", async () => {
      await askOpenAI(
        {
          model: MODELS.claude,
          max_tokens: 2,
          max_completion_tokens: 3,
          messages: [{ role: "user", content: "alpha beta gamma delta" }],
        },
        stream,
      );
      expect(lastAnthropicUpstream().body).toMatchObject({ max_tokens: 3 });
    });
  });

  describe("an Anthropic client reaching an Anthropic supplier", () => {
    it("passes the body through unchanged but for the model, and the usage as the supplier wrote it", async () => {
      const system = rig.canary("aa-system");
      const user = rig.canary("aa-user");
      const params: Anthropic.MessageCreateParamsNonStreaming = {
        model: MODELS.claude,
        max_tokens: 300,
        system: [
          { type: "text", text: `Long shared context. ${system}`, cache_control: { type: "ephemeral" } },
          { type: "text", text: "Be brief." },
        ],
        messages: [
          { role: "user", content: [{ type: "text", text: `Say ${user}`, cache_control: { type: "ephemeral" } }] },
        ],
        metadata: { user_id: "user-1234" },
        ...UNTYPED_SAMPLING,
      };
      const { message, requestId } = await askAnthropic(params, stream);
      expect(message).toMatchObject({
        type: "message",
        role: "assistant",
        model: MODELS.claude,
        content: [{ type: "text", text: `Echo: Say ${user}` }],
        stop_reason: "end_turn",
        stop_sequence: null,
        usage: {
          input_tokens: 500,
          cache_creation_input_tokens: 100,
          cache_read_input_tokens: 400,
          output_tokens: 250,
        },
      });

      const upstream = lastAnthropicUpstream();
      expect(upstream.body).toEqual({ ...params, model: "upstream-claude", ...(stream && { stream: true }) });
      expect(upstream.headers["x-api-key"]).toBe(ANTHROPIC_SUPPLIER_KEY);
      expect(JSON.stringify(upstream.headers)).not.toContain(rig.gateway.key);

      expectMetered(
        await rig.recordOf(requestId),
        {
          client_format: "anthropic",
          endpoint: "/v1/messages",
          model: MODELS.claude,
          supplier: "fake-anthropic",
          input_tokens: 1000,
          cached_input_tokens: 400,
          output_tokens: 250,
          reasoning_tokens: 0,
        },
        stream,
      );
    });

    it("passes base64 and URL images through as they are", async () => {
      const image = rig.canary("aa-imagedata");
      const content: Anthropic.ContentBlockParam[] = [
        { type: "image", source: { type: "base64", media_type: "image/jpeg", data: image } },
        { type: "image", source: { type: "url", url: "https://example.com/dog.jpg" } },
        { type: "text", text: "Compare them." },
      ];
      const { message } = await askAnthropic(
        { model: MODELS.claude, max_tokens: 50, messages: [{ role: "user", content }] },
        stream,
      );
      expect(message.content).toMatchObject([{ type: "text", text: "Echo: Compare them." }]);
      expect((lastAnthropicUpstream().body as { messages: unknown }).messages).toEqual([{ role: "user", content }]);
    });

    it("reports the stop sequence that ended the answer", async () => {
      const { message } = await askAnthropic(
        {
          model: MODELS.claude,
          max_tokens: 50,
          stop_sequences: ["NEVER", "HALT"],
          messages: [{ role: "user", content: "alpha beta HALT gamma" }],
        },
        stream,
      );
      expect(message.content).toMatchObject([{ type: "text", text: "Echo: alpha beta " }]);
      expect(message.stop_reason).toBe("stop_sequence");
      expect(message.stop_sequence).toBe("HALT");
    });

    it("reports a max-tokens cut-off", async () => {
      const { message } = await askAnthropic(
        { model: MODELS.claude, max_tokens: 2, messages: [{ role: "user", content: "alpha beta gamma delta" }] },
        stream,
      );
      expect(message.content).toMatchObject([{ type: "text", text: "Echo: alpha " }]);
      expect(message.stop_reason).toBe("max_tokens");
      expect(message.usage.output_tokens).toBe(2);
    });
  });

  describe("an Anthropic client reaching an OpenAI-compatible supplier", () => {
    it("puts system first, maps metadata.user_id to user, asks for stream usage, and reads usage without cache reads", async () => {
      const system = rig.canary("ao-system");
      const user = rig.canary("ao-user");
      const userId = rig.canary("ao-userid");
      const { message, requestId } = await askAnthropic(
        {
          model: MODELS.gpt,
          max_tokens: 1024,
          system: [
            { type: "text", text: `Context. ${system}`, cache_control: { type: "ephemeral" } },
            { type: "text", text: "Be brief." },
          ],
          messages: [{ role: "user", content: `Say ${user}` }],
          metadata: { user_id: userId },
          ...UNTYPED_SAMPLING,
        },
        stream,
      );
      expect(message).toMatchObject({
        type: "message",
        role: "assistant",
        model: MODELS.gpt,
        content: [{ type: "text", text: `Echo: Say ${user}` }],
        stop_reason: "end_turn",
        // OpenAI's 1000 prompt tokens include the 400 cached; Anthropic's input_tokens do not
        usage: { input_tokens: 600, cache_read_input_tokens: 400, output_tokens: 250 },
      });
      expect(message.id).toMatch(/^msg_/);

      const upstream = lastOpenAIUpstream();
      expect(upstream.path).toBe("/v1/chat/completions");
      expect(upstream.headers.authorization).toBe(`Bearer ${OPENAI_SUPPLIER_KEY}`);
      expect(upstream.headers["x-api-key"]).toBeUndefined();
      expect(upstream.headers["anthropic-version"]).toBeUndefined();
      expect(upstream.body).toEqual({
        model: "upstream-gpt",
        messages: [
          { role: "system", content: `Context. ${system}\n\nBe brief.` },
          { role: "user", content: `Say ${user}` },
        ],
        max_tokens: 1024,
        // top_k has no OpenAI counterpart
        temperature: 0.5,
        top_p: 0.9,
        user: userId,
        store: false,
        ...(stream && { stream: true, stream_options: { include_usage: true } }),
      });

      expectMetered(
        await rig.recordOf(requestId),
        {
          client_format: "anthropic",
          endpoint: "/v1/messages",
          model: MODELS.gpt,
          supplier: "fake-openai",
          input_tokens: 1000,
          cached_input_tokens: 400,
          output_tokens: 250,
          reasoning_tokens: 50,
        },
        stream,
      );
    });

    it("turns a PDF document into a file part and a text document into text", async () => {
      const pdf = Buffer.from(`%PDF-1.4 ${rig.canary("ao-pdfdata")}`).toString("base64");
      const words = rig.canary("ao-docwords");
      await askAnthropic(
        {
          model: MODELS.gpt,
          max_tokens: 50,
          messages: [
            {
              role: "user",
              content: [
                {
                  type: "document",
                  source: { type: "base64", media_type: "application/pdf", data: pdf },
                  title: "q3.pdf",
                },
                { type: "document", source: { type: "text", media_type: "text/plain", data: words } },
                { type: "text", text: "Compare them." },
              ],
            },
          ],
        },
        stream,
      );
      expect((lastOpenAIUpstream().body as { messages: unknown }).messages).toEqual([
        {
          role: "user",
          content: [
            { type: "file", file: { filename: "q3.pdf", file_data: `data:application/pdf;base64,${pdf}` } },
            { type: "text", text: words },
            { type: "text", text: "Compare them." },
          ],
        },
      ]);
    });

    it("turns base64 and URL image blocks into image_url parts", async () => {
      const image = rig.canary("ao-imagedata");
      const { message } = await askAnthropic(
        {
          model: MODELS.gpt,
          max_tokens: 50,
          messages: [
            {
              role: "user",
              content: [
                { type: "text", text: "Compare them." },
                { type: "image", source: { type: "base64", media_type: "image/webp", data: image } },
                { type: "image", source: { type: "url", url: "https://example.com/dog.jpg" } },
              ],
            },
          ],
        },
        stream,
      );
      // the OpenAI fake joins a message's text parts with spaces, images giving empty ones
      expect(message.content).toMatchObject([
        { type: "text", text: expect.stringMatching(/^Echo: Compare them\. *$/) },
      ]);
      expect((lastOpenAIUpstream().body as { messages: unknown }).messages).toEqual([
        {
          role: "user",
          content: [
            { type: "text", text: "Compare them." },
            { type: "image_url", image_url: { url: `data:image/webp;base64,${image}` } },
            { type: "image_url", image_url: { url: "https://example.com/dog.jpg" } },
          ],
        },
      ]);
    });

    it("counts the tokens itself, and says so, when the supplier reports no usage", async () => {
      const user = rig.canary("ao-nousage");
      rig.openAIFake.enqueue(behaviour.noUsage());
      const { message, requestId } = await askAnthropic(
        { model: MODELS.gpt, max_tokens: 50, messages: [{ role: "user", content: `Say ${user} and more` }] },
        stream,
      );
      const record = await rig.recordOf(requestId);
      expect(record.tokens_estimated).toBe(true);
      expect(record.input_tokens).toBeGreaterThan(0);
      // "Echo: Say CANARY... and more" is well over five tokens
      expect(record.output_tokens).toBeGreaterThan(5);
      expect(message.usage).toMatchObject({ input_tokens: record.input_tokens, output_tokens: record.output_tokens });
    });

    it("passes stop_sequences as stop and max_tokens as max_tokens", async () => {
      const { message } = await askAnthropic(
        {
          model: MODELS.gpt,
          max_tokens: 7,
          stop_sequences: ["HALT", "END"],
          messages: [{ role: "user", content: "alpha" }],
        },
        stream,
      );
      expect(message.stop_reason).toBe("end_turn");
      expect(lastOpenAIUpstream().body).toMatchObject({ max_tokens: 7, stop: ["HALT", "END"] });
    });
  });

  describe("an Anthropic client reaching the demo supplier", () => {
    it("answers in Anthropic's shape", async () => {
      const user = rig.canary("ad-user");
      const { message, requestId } = await askAnthropic(
        { model: MODELS.demo, max_tokens: 200, messages: [{ role: "user", content: `hello ${user}` }] },
        stream,
      );
      expect(message.model).toBe(MODELS.demo);
      expect(message.stop_reason).toBe("end_turn");
      const text = message.content.map((block) => (block.type === "text" ? block.text : "")).join("");
      expect(text).toContain("Lethe demo model");
      expect(text).toContain(user);
      expect(message.usage.input_tokens).toBeGreaterThan(0);
      expect(message.usage.output_tokens).toBeGreaterThan(0);
      expectMetered(
        await rig.recordOf(requestId),
        {
          client_format: "anthropic",
          model: MODELS.demo,
          supplier: "demo",
          output_tokens: message.usage.output_tokens,
        },
        stream,
      );
    });

    it("maps finish_reason length to stop_reason max_tokens", async () => {
      const { message } = await askAnthropic(
        {
          model: MODELS.demo,
          max_tokens: 3,
          messages: [{ role: "user", content: "a long question that makes a long answer" }],
        },
        stream,
      );
      expect(message.stop_reason).toBe("max_tokens");
      expect(message.usage.output_tokens).toBe(3);
    });

    it("honours a stop sequence, and names it (the demo says which matched, as vLLM does)", async () => {
      const { message } = await askAnthropic(
        {
          model: MODELS.demo,
          max_tokens: 100,
          stop_sequences: ["supplier"],
          messages: [{ role: "user", content: "hi" }],
        },
        stream,
      );
      expect(message.content).toMatchObject([{ type: "text", text: "Lethe demo model, no " }]);
      expect(message).toMatchObject({ stop_reason: "stop_sequence", stop_sequence: "supplier" });
    });
  });

  describe("an OpenAI client reaching an OpenAI-compatible supplier", () => {
    it("passes the body through with the upstream model name", async () => {
      const user = rig.canary("oo-user");
      const { completion, requestId } = await askOpenAI(
        { model: MODELS.gpt, max_tokens: 20, messages: [{ role: "user", content: `Say ${user}` }] },
        stream,
      );
      expect(completion.model).toBe(MODELS.gpt);
      expect(completion.choices[0]?.message.content).toBe(`Echo: Say ${user}`);
      expect(lastOpenAIUpstream().body).toEqual({
        model: "upstream-gpt",
        max_tokens: 20,
        messages: [{ role: "user", content: `Say ${user}` }],
        store: false,
        ...(stream && { stream: true, stream_options: { include_usage: true } }),
      });
      expectMetered(
        await rig.recordOf(requestId),
        { client_format: "openai", input_tokens: 1000, cached_input_tokens: 400, reasoning_tokens: 50 },
        stream,
      );
    });
  });
});
