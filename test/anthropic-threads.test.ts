import Anthropic, { APIError } from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { anthropicBehaviour } from "./support/fake-anthropic-supplier.js";
import { behaviour } from "./support/fake-openai-supplier.js";
import { keyOfAccountWithoutZdr } from "./support/routing-rig.js";
import { MODELS, useTranslationRig } from "./support/translation-rig.js";

/**
 * Anthropic's message threads ask the supplier to keep the conversation: refused wherever
 * ZDR applies, in Anthropic's own shape so that the SDK's threads fall back to sending the
 * whole conversation. And what a supplier says when it rejects a request (its `details`,
 * its `param`) reaches the caller, whose data it is.
 */

const rig = useTranslationRig();

/** What an SDK call throws (either SDK's APIError), so a test can look at it. */
async function thrownBy(promise: Promise<unknown>): Promise<APIError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof APIError || error instanceof OpenAI.APIError) return error as APIError;
    throw error;
  }
  throw new Error("expected the call to fail");
}

/** A create call with `thread`, which the SDK's types leave to its thread helper. */
function createWithThread(client: Anthropic, model: string, content: string) {
  return client.beta.messages.create({
    model,
    max_tokens: 64,
    messages: [{ role: "user", content }],
    thread: { type: "create" },
  } as Parameters<typeof client.beta.messages.create>[0] & { stream?: false });
}

describe("message threads", () => {
  it.each([
    ["a ZDR-qualified Anthropic supplier", MODELS.claude, "zdr"],
    ["an OpenAI-format supplier", MODELS.gpt, "zdr"],
  ])("are refused for %s with thread_unsupported_request, and nothing is sent", async (_, model, unsupported) => {
    const before = rig.anthropicFake.requests.length + rig.openAIFake.requests.length;
    const error = await thrownBy(createWithThread(rig.anthropic, model, rig.canary("thread-refused")));
    expect(error.status).toBe(400);
    expect(error.errorCode).toBe("thread_unsupported_request");
    expect(error.constructor.name).toBe("ThreadUnsupportedRequestError");
    expect(error.error).toMatchObject({
      error: {
        type: "invalid_request_error",
        code: "LETHE_INVALID_REQUEST",
        details: { error_code: "thread_unsupported_request", unsupported: [unsupported] },
      },
    });
    expect(rig.anthropicFake.requests.length + rig.openAIFake.requests.length).toBe(before);
  });

  it("fall back, in the SDK's own threads, to the whole conversation sent without `thread`", async () => {
    const first = rig.canary("thread-first-turn");
    const second = rig.canary("thread-second-turn");
    const thread = rig.anthropic.beta.messages.thread({
      model: MODELS.claude,
      max_tokens: 64,
      system: "Be brief.",
      unsupportedRequestBehavior: "continue_unthreaded",
    });
    const sent = rig.anthropicFake.requests.length;
    await thread.send({ role: "user", content: first });
    await thread.send({ role: "user", content: second });
    const upstream = rig.anthropicFake.requests.slice(sent).map((request) => request.body as Record<string, unknown>);
    expect(upstream).toHaveLength(2);
    for (const body of upstream) expect(body).not.toHaveProperty("thread");
    const last = upstream[1] as { system: unknown; messages: { role: string; content: unknown }[] };
    // the second turn carries the first one and the system prompt: nothing was left with the supplier
    expect(last.system).toBe("Be brief.");
    expect(last.messages.map((message) => message.role)).toEqual(["user", "assistant", "user"]);
    expect(JSON.stringify(last.messages)).toContain(first);
  });

  it("reach an Anthropic supplier that is not ZDR-qualified, for an account that does not require ZDR", async () => {
    const key = await keyOfAccountWithoutZdr(rig.gateway, "threads-without-zdr");
    const client = new Anthropic({ apiKey: key, baseURL: rig.gateway.url, maxRetries: 0 });
    await createWithThread(client, MODELS.retaining, rig.canary("thread-retained"));
    expect(rig.anthropicFake.lastRequest().body).toMatchObject({ thread: { type: "create" } });
  });

  it("are refused on a mixed model, whose Anthropic route is ZDR-qualified and whose OpenAI route cannot keep them", async () => {
    const error = await thrownBy(createWithThread(rig.anthropic, MODELS.mixed, rig.canary("thread-mixed")));
    expect(error.errorCode).toBe("thread_unsupported_request");
  });
});

describe("a supplier's rejection", () => {
  it("keeps Anthropic's error.details, which the SDK reads error_code from", async () => {
    rig.anthropicFake.enqueue(
      anthropicBehaviour.status(400, {
        type: "error",
        error: {
          type: "invalid_request_error",
          message: "The request names a thread that is gone.",
          details: { error_code: "thread_not_found" },
        },
      }),
    );
    const error = await thrownBy(
      rig.anthropic.messages.create({
        model: MODELS.claude,
        max_tokens: 64,
        messages: [{ role: "user", content: rig.canary("details-relayed") }],
      }),
    );
    expect(error.status).toBe(400);
    expect(error.errorCode).toBe("thread_not_found");
    expect(error.message).toContain("Supplier said: The request names a thread that is gone.");
  });

  it("leaves out details nested past the JSON depth limit, and still answers in Anthropic's shape", async () => {
    // 20,000 levels: JSON.stringify overflows the stack on it, so it is written out as text
    const deep = `${"[".repeat(20_000)}"bottom"${"]".repeat(20_000)}`;
    rig.anthropicFake.enqueue(
      anthropicBehaviour.status(
        400,
        `{"type":"error","error":{"type":"invalid_request_error","message":"Too deep.","details":{"nested":${deep}}}}`,
      ),
    );
    const error = await thrownBy(
      rig.anthropic.messages.create({
        model: MODELS.claude,
        max_tokens: 64,
        messages: [{ role: "user", content: rig.canary("details-too-deep") }],
      }),
    );
    expect(error.status).toBe(400);
    expect(error.error).toMatchObject({ error: { code: "LETHE_UPSTREAM_REJECTED" } });
    expect((error.error as { error: Record<string, unknown> }).error).not.toHaveProperty("details");
  });

  it("keeps the field an OpenAI supplier named (param) for an OpenAI client", async () => {
    rig.openAIFake.enqueue(
      behaviour.status(400, {
        error: {
          message: "This model's maximum context length is 8192 tokens.",
          type: "invalid_request_error",
          param: "messages",
          code: "context_length_exceeded",
        },
      }),
    );
    const error = await thrownBy(
      rig.openai.chat.completions.create({
        model: MODELS.gpt,
        messages: [{ role: "user", content: rig.canary("param-relayed") }],
      }),
    );
    expect(error.status).toBe(400);
    expect(error).toMatchObject({ param: "messages", code: "LETHE_UPSTREAM_REJECTED" });
    expect(error.message).toContain("maximum context length");
  });
});
