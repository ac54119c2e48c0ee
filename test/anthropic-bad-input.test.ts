import type Anthropic from "@anthropic-ai/sdk";
import { AuthenticationError, BadRequestError, NotFoundError } from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  closeTranslationRig,
  MODELS,
  postRaw,
  type RawResponse,
  startTranslationRig,
  type TranslationRig,
} from "./support/translation-rig.js";

/**
 * Bad input on the Anthropic surface: each case gets Anthropic's error envelope with
 * the documented type and status, a request id, a message Lethe wrote (never the
 * input), no supplier call, and leaves nothing of itself behind.
 */

interface AnthropicErrorBody {
  type: string;
  error: { type: string; message: string; code: string };
}

const MAX_BODY_BYTES = 16 * 1024;
const MAX_JSON_VALUES = 500;

let rig: TranslationRig;

beforeAll(async () => {
  rig = await startTranslationRig({ maxBodyBytes: MAX_BODY_BYTES, maxJsonValues: MAX_JSON_VALUES });
});

afterAll(async () => {
  // no bad request may reach a supplier
  expect(rig.openAIFake.requests.length + rig.anthropicFake.requests.length).toBe(0);
  expect(await closeTranslationRig(rig)).toEqual([]);
});

const HEADERS = { "anthropic-version": "2023-06-01" };

/** POSTs to the Anthropic surface and checks the answer is an Anthropic-shaped error that echoes nothing. */
async function expectRejected(
  path: string,
  body: unknown,
  expected: { status: number; type: string; code: string },
  headers: Record<string, string> = HEADERS,
): Promise<{ body: AnthropicErrorBody; response: RawResponse }> {
  const response = await postRaw(rig, path, body, headers);
  expect(response.status).toBe(expected.status);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  const requestId = response.headers.get("request-id");
  expect(requestId).toMatch(/^req_/);
  expect(response.headers.get("x-request-id")).toBe(requestId);
  const parsed = JSON.parse(response.text) as AnthropicErrorBody;
  expect(parsed).toMatchObject({ type: "error", error: { type: expected.type, code: expected.code } });
  expect(parsed.error.message.length).toBeGreaterThan(10);
  for (const canary of rig.canaries) expect(response.text).not.toContain(canary);
  return { body: parsed, response };
}

function messagesBody(overrides: Record<string, unknown>): Record<string, unknown> {
  const secret = rig.canary("badinput");
  return {
    model: MODELS.claude,
    max_tokens: 100,
    system: `sys ${secret}`,
    messages: [{ role: "user", content: `hello ${secret}` }],
    ...overrides,
  };
}

const INVALID = { status: 400, type: "invalid_request_error", code: "LETHE_INVALID_REQUEST" };

describe("invalid Messages requests", () => {
  it("requires max_tokens", async () => {
    const { max_tokens: _dropped, ...body } = messagesBody({});
    const { body: error } = await expectRejected("/v1/messages", body, INVALID);
    expect(error.error.message).toBe("'max_tokens' is required.");
  });

  it.each([[0], [-5], [1.5], ["100"]])("refuses max_tokens %j", async (maxTokens) => {
    await expectRejected("/v1/messages", messagesBody({ max_tokens: maxTokens }), INVALID);
  });

  it("refuses an empty messages list", async () => {
    const { body } = await expectRejected("/v1/messages", messagesBody({ messages: [] }), INVALID);
    expect(body.error.message).toContain("'messages'");
  });

  it("refuses a conversation that starts with the assistant", async () => {
    const secret = rig.canary("roleorder");
    const { body } = await expectRejected(
      "/v1/messages",
      messagesBody({
        messages: [
          { role: "assistant", content: `I begin ${secret}` },
          { role: "user", content: "hi" },
        ],
      }),
      INVALID,
    );
    expect(body.error.message).toContain("'user'");
  });

  it("refuses a conversation of system messages only", async () => {
    await expectRejected("/v1/messages", messagesBody({ messages: [{ role: "system", content: "only" }] }), INVALID);
  });

  it.each([
    ["an unknown role", { messages: [{ role: "tool", content: "x" }] }],
    ["content that is a number", { messages: [{ role: "user", content: 42 }] }],
    ["a content block without a type", { messages: [{ role: "user", content: [{ text: "x" }] }] }],
    ["a temperature above Anthropic's 1", { temperature: 1.5 }],
    ["a non-boolean stream", { stream: "yes" }],
    ["stop_sequences that are not strings", { stop_sequences: [1, 2] }],
    ["an unknown tool_choice type", { tool_choice: { type: "sometimes" } }],
    ["a system prompt that is a number", { system: 7 }],
  ])("refuses %s", async (_label, overrides) => {
    await expectRejected("/v1/messages", messagesBody(overrides), INVALID);
  });

  it("refuses malformed JSON without quoting it", async () => {
    const secret = rig.canary("malformed");
    const { body } = await expectRejected(
      "/v1/messages",
      `{"model":"${MODELS.claude}","max_tokens":10,"messages":[{"role":"user","content":"${secret}"}`,
      { status: 400, type: "invalid_request_error", code: "LETHE_INVALID_JSON" },
    );
    expect(body.error.message).toBe("The request body is not valid JSON.");
  });

  it.each([[""], ["[]"], ["null"], ['"text"']])("refuses the body %j", async (text) => {
    const response = await postRaw(rig, "/v1/messages", text, HEADERS);
    expect(response.status).toBe(400);
    expect(JSON.parse(response.text)).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
  });

  it("refuses an unknown model with 404 not_found_error, without naming it back, and records the constant `unknown`", async () => {
    const secret = rig.canary("modelname");
    const { response } = await expectRejected("/v1/messages", messagesBody({ model: `model-${secret}` }), {
      status: 404,
      type: "not_found_error",
      code: "LETHE_UNKNOWN_MODEL",
    });
    expect(await rig.recordOf(response.headers.get("request-id"))).toMatchObject({
      model: "unknown",
      status: 404,
      error_code: "LETHE_UNKNOWN_MODEL",
      client_format: "anthropic",
      endpoint: "/v1/messages",
      supplier: null,
    });
  });

  it("refuses a body over the size limit with 413 request_too_large", async () => {
    const secret = rig.canary("oversized");
    await expectRejected(
      "/v1/messages",
      messagesBody({ messages: [{ role: "user", content: `${secret} ${"x".repeat(MAX_BODY_BYTES)}` }] }),
      { status: 413, type: "request_too_large", code: "LETHE_BODY_TOO_LARGE" },
    );
  });

  it("refuses a body of more JSON values than limits.max_json_values with 413 request_too_large", async () => {
    const secret = rig.canary("many-values");
    const { body } = await expectRejected(
      "/v1/messages",
      messagesBody({
        messages: [{ role: "user", content: secret }],
        metadata: { user_id: "u" },
        stop_sequences: Array.from({ length: MAX_JSON_VALUES }, () => "s"),
      }),
      { status: 413, type: "request_too_large", code: "LETHE_BODY_TOO_LARGE" },
    );
    expect(body.error.message).toContain(`${MAX_JSON_VALUES} JSON values`);
  });

  it("refuses a compressed body with 415 in Anthropic's shape", async () => {
    const { response } = await expectRejected(
      "/v1/messages",
      messagesBody({}),
      { status: 415, type: "invalid_request_error", code: "LETHE_UNSUPPORTED_ENCODING" },
      { ...HEADERS, "content-encoding": "gzip" },
    );
    expect(response.headers.get("connection")).toBe("close");
  });

  it("answers GET on /v1/messages with an Anthropic 405 naming POST", async () => {
    const response = await fetch(`${rig.gateway.url}/v1/messages`, { headers: HEADERS });
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("POST");
    expect(await response.json()).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error", code: "LETHE_METHOD_NOT_ALLOWED" },
    });
  });

  it("answers an unknown path under /v1/messages with an Anthropic 404", async () => {
    await expectRejected("/v1/messages/batches", messagesBody({}), {
      status: 404,
      type: "not_found_error",
      code: "LETHE_NOT_FOUND",
    });
  });

  it("gives the Anthropic SDK its typed errors", async () => {
    const missingMaxTokens = { model: MODELS.claude, messages: [{ role: "user", content: "hi" }] };
    const badRequest = await rig.anthropic.messages
      .create(missingMaxTokens as unknown as Anthropic.MessageCreateParamsNonStreaming)
      .catch((error: unknown) => error);
    expect(badRequest).toBeInstanceOf(BadRequestError);
    expect((badRequest as BadRequestError).type).toBe("invalid_request_error");
    expect((badRequest as BadRequestError).requestID).toMatch(/^req_/);

    const notFound = await rig.anthropic.messages
      .create({ model: "no-such-model", max_tokens: 10, messages: [{ role: "user", content: "hi" }] })
      .catch((error: unknown) => error);
    expect(notFound).toBeInstanceOf(NotFoundError);
  });
});

describe("authentication on /v1/messages", () => {
  it("refuses a missing key with 401 authentication_error", async () => {
    const response = await fetch(`${rig.gateway.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", ...HEADERS },
      body: JSON.stringify(messagesBody({})),
    });
    expect(response.status).toBe(401);
    expect(response.headers.get("request-id")).toMatch(/^req_/);
    expect(await response.json()).toMatchObject({
      type: "error",
      error: { type: "authentication_error", code: "LETHE_MISSING_API_KEY" },
    });
  });

  it.each([
    ["an unknown x-api-key", { "x-api-key": "lethe_unknown_0123456789abcdef" }],
    // an Authorization of another scheme is refused only when no x-api-key stands beside it
    ["a malformed Authorization header", { authorization: "Basic abc", "x-api-key": "" }],
  ])("refuses %s with 401 authentication_error", async (_label, headers) => {
    await expectRejected(
      "/v1/messages",
      messagesBody({}),
      { status: 401, type: "authentication_error", code: "LETHE_INVALID_API_KEY" },
      { ...HEADERS, ...headers },
    );
  });

  it("raises the SDK's AuthenticationError for a wrong key, before reading the body", async () => {
    const { default: AnthropicClient } = await import("@anthropic-ai/sdk");
    const client = new AnthropicClient({ apiKey: "lethe_wrong", baseURL: rig.gateway.url, maxRetries: 0 });
    const error = await client.messages
      .create({ model: MODELS.claude, max_tokens: 10, messages: [{ role: "user", content: rig.canary("wrongkey") }] })
      .catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as AuthenticationError).status).toBe(401);
  });
});

describe("invalid count_tokens requests", () => {
  it("refuses a missing messages list", async () => {
    await expectRejected("/v1/messages/count_tokens", { model: MODELS.claude }, INVALID);
  });

  it("refuses malformed JSON", async () => {
    await expectRejected("/v1/messages/count_tokens", `{"model":"${rig.canary("count-malformed")}"`, {
      status: 400,
      type: "invalid_request_error",
      code: "LETHE_INVALID_JSON",
    });
  });

  it("refuses an unknown model", async () => {
    await expectRejected(
      "/v1/messages/count_tokens",
      { model: "nope", messages: [{ role: "user", content: "hi" }] },
      { status: 404, type: "not_found_error", code: "LETHE_UNKNOWN_MODEL" },
    );
  });
});

describe("content an OpenAI-format supplier cannot take", () => {
  it.each([
    [
      "a document by URL",
      {
        messages: [
          { role: "user", content: [{ type: "document", source: { type: "url", url: "https://e.test/a.pdf" } }] },
        ],
      },
    ],
    [
      "a document with citations",
      {
        messages: [
          {
            role: "user",
            content: [
              {
                type: "document",
                source: { type: "text", media_type: "text/plain", data: "doc" },
                citations: { enabled: true },
              },
            ],
          },
        ],
      },
    ],
    [
      "an image given by file id",
      { messages: [{ role: "user", content: [{ type: "image", source: { type: "file", file_id: "file_1" } }] }] },
    ],
    ["a server tool", { tools: [{ type: "web_search_20250305", name: "web_search" }] }],
  ])("refuses %s with a 400 in Anthropic's shape", async (_label, overrides) => {
    await expectRejected("/v1/messages", messagesBody({ model: MODELS.gpt, ...overrides }), INVALID);
  });
});

describe("content an Anthropic supplier cannot take, from an OpenAI client", () => {
  async function postChat(body: unknown) {
    const response = await postRaw(rig, "/v1/chat/completions", body);
    return { status: response.status, body: JSON.parse(response.text) as { error: { type: string; code: string } } };
  }

  it("refuses tool-call arguments that are not JSON, in OpenAI's shape", async () => {
    const secret = rig.canary("badargs");
    const result = await postChat({
      model: MODELS.claude,
      messages: [
        { role: "user", content: "hi" },
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: `{${secret}` } }],
        },
        { role: "tool", tool_call_id: "call_1", content: "x" },
      ],
    });
    expect(result.status).toBe(400);
    expect(result.body.error).toMatchObject({ type: "invalid_request_error", code: "LETHE_INVALID_REQUEST" });
    expect(JSON.stringify(result.body)).not.toContain(secret);
  });

  it.each([
    ["a file by file_id", { type: "file", file: { file_id: "file-abc" } }],
    ["a file that is no PDF", { type: "file", file: { filename: "a.txt", file_data: "data:text/plain;base64,aGk=" } }],
  ])("refuses %s, which Anthropic cannot read, in OpenAI's shape", async (_label, part) => {
    const result = await postChat({ model: MODELS.claude, messages: [{ role: "user", content: [part] }] });
    expect(result.status).toBe(400);
    expect(result.body.error).toMatchObject({ type: "invalid_request_error", code: "LETHE_INVALID_REQUEST" });
  });

  it("refuses a content part type with no Anthropic counterpart", async () => {
    const result = await postChat({
      model: MODELS.claude,
      messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] }],
    });
    expect(result.status).toBe(400);
    expect(result.body.error.type).toBe("invalid_request_error");
  });
});
