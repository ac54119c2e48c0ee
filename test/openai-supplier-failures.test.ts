import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { MetadataRecord } from "../src/metering/metadata-record.js";
import { behaviour, type FakeBehaviour } from "./support/fake-openai-supplier.js";
import {
  canaryChat,
  closeRigAndFindCanaries,
  type OpenAISupplierRig,
  postChat,
  recordOf,
  sseData,
  startOpenAISupplierRig,
} from "./support/openai-supplier-rig.js";

interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

const NOTHING_METERED = {
  input_tokens: 0,
  output_tokens: 0,
  cached_input_tokens: 0,
  reasoning_tokens: 0,
  cost_micros: 0,
};

describe("supplier failures on the OpenAI-compatible path", () => {
  let rig: OpenAISupplierRig;

  beforeAll(async () => {
    rig = await startOpenAISupplierRig();
  });

  // the canaries of every failure below, echoed back by the supplier too, must be nowhere
  afterAll(async () => {
    expect(await closeRigAndFindCanaries(rig)).toEqual([]);
  });

  // a behaviour left in the queue means the gateway sent fewer requests than the test expected
  afterEach(() => {
    // a supplier's retry-after rests its route for the requests that follow (router.ts)
    rig.gateway.passRouteRests();
    expect(rig.fake.clearQueue()).toBe(0);
  });

  /** The supplier's echo of the prompt, as its error bodies word it. */
  function supplierEcho(userCanary: string): string {
    return `Fake supplier could not handle: Now repeat ${userCanary} please`;
  }

  /** Waits for the record of a request that had no response to read an id from (the client gave up). */
  async function waitForRecord(match: (record: MetadataRecord) => boolean): Promise<MetadataRecord> {
    return vi.waitFor(
      async () => {
        const record = (await rig.gateway.records()).find(match);
        if (record === undefined) throw new Error("no such record yet");
        return record;
      },
      { timeout: 5000, interval: 20 },
    );
  }

  describe("before the answer starts: an OpenAI error JSON with the right status", () => {
    it.each<[string, FakeBehaviour, number, string, string, string, boolean]>([
      [
        "a 500",
        behaviour.status(500),
        502,
        "server_error",
        "LETHE_UPSTREAM_ERROR",
        "The supplier failed to answer.",
        false,
      ],
      [
        "a 400 that echoes the prompt",
        behaviour.status(400),
        400,
        "invalid_request_error",
        "LETHE_UPSTREAM_REJECTED",
        "The supplier rejected the request.",
        true,
      ],
      [
        "a 422 that echoes the prompt",
        behaviour.status(422),
        422,
        "invalid_request_error",
        "LETHE_UPSTREAM_REJECTED",
        "The supplier rejected the request.",
        true,
      ],
      [
        "a 200 larger than max_response_bytes, echoing the prompt",
        behaviour.oversized(),
        502,
        "server_error",
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "The supplier's answer was too large.",
        false,
      ],
      [
        "a 200 that is not JSON",
        behaviour.notJson(),
        502,
        "server_error",
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "The supplier sent a response that is not JSON.",
        false,
      ],
      [
        "a 200 whose JSON nests 5,000 deep",
        behaviour.deeplyNested(),
        502,
        "server_error",
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "The supplier sent a response nested too deep to read.",
        false,
      ],
      [
        "a 200 that is JSON but not a completion",
        behaviour.streamErrorChunk(),
        502,
        "server_error",
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "The supplier sent a response that is not a chat completion.",
        false,
      ],
      [
        "no first byte within first_byte_ms",
        behaviour.slowFirstByte(10_000),
        504,
        "timeout_error",
        "LETHE_UPSTREAM_TIMEOUT",
        "The supplier did not start answering in time.",
        false,
      ],
      [
        "half a body, then silence beyond idle_ms",
        behaviour.hangMidStream(),
        504,
        "timeout_error",
        "LETHE_UPSTREAM_TIMEOUT",
        "The supplier stopped sending in the middle of its answer.",
        false,
      ],
      [
        "half a body, then a reset connection",
        behaviour.resetMidStream(),
        502,
        "server_error",
        "LETHE_UPSTREAM_UNAVAILABLE",
        "The connection to the supplier broke during its answer.",
        false,
      ],
    ])("the supplier answering %s", async (_name, failure, status, type, code, message, relaysDetail) => {
      const { canary, body, headers } = canaryChat(rig, "beforestart");
      rig.fake.enqueue(failure);
      const result = await postChat(rig, body, headers);

      expect(result.status).toBe(status);
      expect(result.headers.get("content-type")).toMatch(/^application\/json/);
      const expectedMessage = relaysDetail ? `${message} Supplier said: ${supplierEcho(canary.user)}` : message;
      expect(JSON.parse(result.text)).toEqual({ error: { message: expectedMessage, type, param: null, code } });
      const record = await recordOf(rig, result.headers.get("x-request-id"));
      expect(record).toMatchObject({
        model: "fast-chat",
        supplier: "fake-openai",
        status,
        error_code: code,
        streamed: false,
        ttft_ms: null,
        ...NOTHING_METERED,
      });
    });

    it("answers a streaming request with a 504 JSON error when the supplier never starts", async () => {
      const { body, headers } = canaryChat(rig, "streamslow");
      rig.fake.enqueue(behaviour.slowFirstByte(10_000));
      const aborted = rig.fake.nextAbort();
      const result = await postChat(rig, { ...body, stream: true }, headers);

      expect(result.status).toBe(504);
      expect(result.headers.get("content-type")).toMatch(/^application\/json/);
      expect((JSON.parse(result.text) as OpenAIErrorBody).error.code).toBe("LETHE_UPSTREAM_TIMEOUT");
      // the gateway hung up on the supplier rather than leaving the request to run
      expect((await aborted).aborted).toBe(true);
      const record = await recordOf(rig, result.headers.get("x-request-id"));
      expect(record).toMatchObject({ status: 504, error_code: "LETHE_UPSTREAM_TIMEOUT", streamed: true });
    });

    it("says so when the supplier answers a streaming request with one JSON body (it ignored `stream`)", async () => {
      const { canary, body, headers } = canaryChat(rig, "streamasjson");
      const whole = { id: "chatcmpl-x", object: "chat.completion", choices: [{ message: { content: canary.user } }] };
      rig.fake.enqueue(behaviour.status(200, whole));
      const result = await postChat(rig, { ...body, stream: true }, headers);

      expect(result.status).toBe(502);
      expect(JSON.parse(result.text)).toEqual({
        error: {
          message: "The supplier answered with a JSON body where an event stream was asked for.",
          type: "server_error",
          param: null,
          code: "LETHE_UPSTREAM_BAD_RESPONSE",
        },
      });
      const record = await recordOf(rig, result.headers.get("x-request-id"));
      expect(record).toMatchObject({ status: 502, error_code: "LETHE_UPSTREAM_BAD_RESPONSE", streamed: true });
    });

    it("passes a supplier's 429 on as a 429 with its retry-after, which the SDK reads as a RateLimitError", async () => {
      const { body, headers } = canaryChat(rig, "ratelimit");
      rig.fake.enqueue(behaviour.status(429, undefined, { "retry-after": "7" }));
      const failure = await rig.client.chat.completions.create(body, { headers }).catch((thrown: unknown) => thrown);

      expect(failure).toBeInstanceOf(OpenAI.RateLimitError);
      const error = failure as InstanceType<typeof OpenAI.RateLimitError>;
      expect(error.status).toBe(429);
      expect(error.headers.get("retry-after")).toBe("7");
      expect(error.code).toBe("LETHE_UPSTREAM_RATE_LIMITED");
      expect(error.type).toBe("rate_limit_error");
      expect(error.message).toBe("429 The supplier is rate limiting requests.");
      const record = await recordOf(rig, error.headers.get("x-request-id"));
      expect(record).toMatchObject({ status: 429, error_code: "LETHE_UPSTREAM_RATE_LIMITED", ...NOTHING_METERED });
    });

    it("passes a supplier's 503 on as a 503 with its retry-after", async () => {
      const { body, headers } = canaryChat(rig, "overloaded");
      rig.fake.enqueue(behaviour.status(503, undefined, { "retry-after": "3" }));
      const result = await postChat(rig, body, headers);

      expect(result.status).toBe(503);
      expect(result.headers.get("retry-after")).toBe("3");
      expect(JSON.parse(result.text)).toEqual({
        error: {
          message: "The supplier is overloaded.",
          type: "server_error",
          param: null,
          code: "LETHE_UPSTREAM_OVERLOADED",
        },
      });
      const record = await recordOf(rig, result.headers.get("x-request-id"));
      expect(record).toMatchObject({ status: 503, error_code: "LETHE_UPSTREAM_OVERLOADED", ...NOTHING_METERED });
    });

    // these messages describe the operator's account, not the caller's request: a fragment
    // of the operator's key, its organisation, the supplier's own model name
    it.each([
      [
        401,
        "Incorrect API key provided: sk-fake-s***6789. You can find your API key at https://platform.example/keys.",
        "invalid_api_key",
      ],
      [404, "The model `upstream-model-1` does not exist or you do not have access to it.", "model_not_found"],
      [
        429,
        "Rate limit reached for upstream-model-1 in organization org-operator123 on tokens per min (TPM).",
        "rate_limit_exceeded",
      ],
      [500, "The server had an error processing your request (organization org-operator123).", "server_error"],
      // a base_url answered by a redirect (http to https, a moved host): Lethe follows none
      [307, "Moved to https://internal.example/org-operator123/upstream-model-1 for key sk-fake-s***6789", "moved"],
    ])("keeps the operator's details out of what a supplier's %i tells the caller", async (status, message, code) => {
      const { body, headers } = canaryChat(rig, "operatordetail");
      rig.fake.enqueue(
        behaviour.status(status, { error: { message, type: "invalid_request_error", param: null, code } }),
      );
      const result = await postChat(rig, body, headers);

      expect(result.status).toBe(status === 429 ? 429 : 502);
      // the operator's setup is wrong: both SDKs are told not to retry, which would only refuse again
      expect(result.headers.get("x-should-retry")).toBe(status === 500 || status === 429 ? null : "false");
      const error = (JSON.parse(result.text) as OpenAIErrorBody).error;
      expect(error.message).not.toContain("Supplier said");
      expect(result.text).not.toContain("sk-fake");
      expect(result.text).not.toContain("org-operator123");
      expect(result.text).not.toContain("upstream-model-1");
    });

    it("returns a supplier's 400 message to the SDK caller as a BadRequestError", async () => {
      const { canary, body, headers } = canaryChat(rig, "badrequest");
      rig.fake.enqueue(behaviour.status(400));
      const failure = await rig.client.chat.completions
        .create({ ...body, stream: true }, { headers })
        .catch((thrown: unknown) => thrown);

      expect(failure).toBeInstanceOf(OpenAI.BadRequestError);
      const error = failure as InstanceType<typeof OpenAI.BadRequestError>;
      expect(error.code).toBe("LETHE_UPSTREAM_REJECTED");
      expect(error.message).toContain(supplierEcho(canary.user));
    });

    it.each([
      ["not streaming", false],
      ["streaming", true],
    ])("answers 502 LETHE_UPSTREAM_UNAVAILABLE when the supplier is down (%s)", async (_name, stream) => {
      const { body, headers } = canaryChat(rig, "down", "down-chat");
      const result = await postChat(rig, { ...body, stream }, headers);

      expect(result.status).toBe(502);
      expect(JSON.parse(result.text)).toEqual({
        error: {
          message: "The supplier could not be reached.",
          type: "server_error",
          param: null,
          code: "LETHE_UPSTREAM_UNAVAILABLE",
        },
      });
      // the failure names the supplier tried and the ZDR rule, as an answer does
      expect(result.headers.get("x-lethe-supplier")).toBe("fake-openai-down");
      expect(result.headers.get("x-lethe-zdr")).toBe("enforced");
      const record = await recordOf(rig, result.headers.get("x-request-id"));
      expect(record).toMatchObject({
        model: "down-chat",
        supplier: "fake-openai-down",
        status: 502,
        error_code: "LETHE_UPSTREAM_UNAVAILABLE",
        streamed: stream,
      });
    });

    it("falls back to the next route when the first supplier is down, and logs only the failure's metadata", async () => {
      const { canary, body, headers } = canaryChat(rig, "fallback", "fallback-chat");
      const { data, response } = await rig.client.chat.completions.create(body, { headers }).withResponse();

      expect(data.model).toBe("fallback-chat");
      expect(data.choices[0]?.message.content).toContain(canary.user);
      expect(response.headers.get("x-lethe-supplier")).toBe("fake-openai");
      const record = await recordOf(rig, response.headers.get("x-request-id"));
      expect(record).toMatchObject({ supplier: "fake-openai", status: 200, error_code: null, cost_micros: 130 });
      const events = rig.gateway
        .logText()
        .split("\n")
        .filter((line) => line !== "")
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      const downEvents = events.filter((event) => event.supplier === "fake-openai-down");
      expect(downEvents.length).toBeGreaterThan(0);
      for (const event of downEvents) {
        expect(Object.keys(event).sort()).toEqual(["code", "event", "level", "model", "status", "supplier", "time"]);
      }
      expect(downEvents.at(-1)).toMatchObject({
        event: "upstream_error",
        model: "fallback-chat",
        status: 0,
        code: "LETHE_UPSTREAM_UNAVAILABLE",
      });
    });
  });

  describe("after the stream starts: an error chunk, then a clean end", () => {
    it.each<[string, () => FakeBehaviour, string, string, string]>([
      [
        "a reset connection",
        () => behaviour.resetMidStream(),
        "LETHE_UPSTREAM_UNAVAILABLE",
        "server_error",
        "The connection to the supplier broke during its answer.",
      ],
      [
        "a chunk that is not JSON",
        () => behaviour.garbageChunk(),
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "server_error",
        "The supplier sent a stream chunk that is not JSON.",
      ],
      [
        "a chunk whose JSON nests 5,000 deep",
        () => behaviour.deeplyNested(),
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "server_error",
        "The supplier sent a stream chunk nested too deep to read.",
      ],
      [
        "an error chunk that echoes the prompt",
        () => behaviour.streamErrorChunk(),
        "LETHE_UPSTREAM_ERROR",
        "server_error",
        "The supplier reported an error during the stream.",
      ],
      [
        "an event larger than max_response_bytes, echoing the prompt",
        () => behaviour.oversized(),
        "LETHE_UPSTREAM_BAD_RESPONSE",
        "server_error",
        "The supplier sent a stream event larger than this gateway accepts.",
      ],
      [
        "silence beyond idle_ms",
        () => behaviour.hangMidStream(),
        "LETHE_UPSTREAM_TIMEOUT",
        "timeout_error",
        "The supplier stopped sending in the middle of its answer.",
      ],
    ])("%s", async (_name, failure, code, type, message) => {
      const { canary, body, headers } = canaryChat(rig, "midstream");
      rig.fake.enqueue(failure(), failure());

      // both at once, so the timeout case waits once: the official SDK, which raises an APIError
      // while iterating, after the text that did arrive; and raw fetch, to see the wire
      const throughSdk = async () => {
        const { data: stream, response } = await rig.client.chat.completions
          .create({ ...body, stream: true }, { headers })
          .withResponse();
        let text = "";
        const thrown = await (async () => {
          for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
        })().catch((error: unknown) => error);
        return { text, thrown, requestId: response.headers.get("x-request-id") };
      };
      const [sdk, raw] = await Promise.all([throughSdk(), postChat(rig, { ...body, stream: true }, headers)]);

      expect(sdk.thrown).toBeInstanceOf(OpenAI.APIError);
      expect((sdk.thrown as InstanceType<typeof OpenAI.APIError>).code).toBe(code);
      expect((sdk.thrown as InstanceType<typeof OpenAI.APIError>).type).toBe(type);
      expect(sdk.text).toBe("Echo: ");

      // on the wire: the chunks that arrived, Lethe's own error chunk, [DONE], and the end of the response
      expect(raw.status).toBe(200);
      expect(raw.text.endsWith("\n\ndata: [DONE]\n\n")).toBe(true);
      const events = sseData(raw.text);
      expect(events.at(-1)).toEqual({ error: { message, type, param: null, code } });
      expect(events.slice(0, -1).map((event) => event.model)).toEqual(["fast-chat", "fast-chat"]);
      // the supplier's own error message stays out of a stream Lethe is ending
      expect(raw.text).not.toContain(supplierEcho(canary.user));

      for (const requestId of [sdk.requestId, raw.headers.get("x-request-id")]) {
        const record = await recordOf(rig, requestId);
        expect(record).toMatchObject({ supplier: "fake-openai", status: 200, error_code: code, streamed: true });
        // what was produced before the failure is billed, from Lethe's own count
        expect(record.tokens_estimated).toBe(true);
        expect(record.output_tokens).toBeGreaterThan(0);
        expect(record.ttft_ms).toBeGreaterThan(0);
      }
    });
  });

  it("ends a stream cleanly when the connection breaks after the whole answer and its usage, before [DONE]", async () => {
    const { body, headers } = canaryChat(rig, "afterusage");
    // every chunk, the usage chunk last, then a reset where [DONE] would be
    rig.fake.enqueue(behaviour.resetMidStream(10_000));
    const { data: stream, response } = await rig.client.chat.completions
      .create({ ...body, stream: true, stream_options: { include_usage: true } }, { headers })
      .withResponse();
    let text = "";
    let usage: unknown = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      usage = chunk.usage ?? usage;
    }
    expect(text.startsWith("Echo: ")).toBe(true);
    expect(usage).toMatchObject({ prompt_tokens: 1000, completion_tokens: 250 });
    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({ status: 200, error_code: null, tokens_estimated: false, output_tokens: 250 });
  });

  it("ends a stream cleanly when the supplier goes silent after the whole answer and its usage, before [DONE]", async () => {
    const { body, headers } = canaryChat(rig, "silentafterusage");
    // every chunk, the usage chunk last, then silence past idle_ms (300 ms) where [DONE] would be
    rig.fake.enqueue(behaviour.hangMidStream(10_000));
    const { data: stream, response } = await rig.client.chat.completions
      .create({ ...body, stream: true, stream_options: { include_usage: true } }, { headers })
      .withResponse();
    let usage: unknown = null;
    for await (const chunk of stream) usage = chunk.usage ?? usage;
    expect(usage).toMatchObject({ prompt_tokens: 1000, completion_tokens: 250 });
    const record = await recordOf(rig, response.headers.get("x-request-id"));
    expect(record).toMatchObject({ status: 200, error_code: null, tokens_estimated: false, output_tokens: 250 });
  });

  describe("the client going away", () => {
    it("aborts the upstream request when the client disconnects mid-stream", async () => {
      const { body, headers } = canaryChat(rig, "disconnect", "patient-chat");
      // the supplier stops after the first words and would wait 10 s: only the client's abort ends this
      rig.fake.enqueue(behaviour.hangMidStream());
      const abortsBefore = rig.fake.abortedCount;
      const aborted = rig.fake.nextAbort();
      const controller = new AbortController();
      const { data: stream, response } = await rig.client.chat.completions
        .create({ ...body, stream: true }, { headers, signal: controller.signal })
        .withResponse();
      let text = "";
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        if (text !== "") controller.abort();
      }
      expect(text).toBe("Echo: ");

      const upstream = await aborted;
      expect(upstream).toBe(rig.fake.requests.at(-1));
      expect(rig.fake.abortedCount).toBe(abortsBefore + 1);
      const requestId = response.headers.get("x-request-id");
      const record = await waitForRecord((candidate) => candidate.request_id === requestId);
      expect(record).toMatchObject({
        supplier: "fake-openai-patient",
        status: 499,
        error_code: "LETHE_CLIENT_CLOSED",
        streamed: true,
        tokens_estimated: true,
      });
      expect(record.ttft_ms).toBeGreaterThan(0);
      // the abort, not the supplier's 10 s idle timeout, is what ended it
      expect(record.latency_ms).toBeLessThan(5000);
    });

    it("aborts the upstream request when the client disconnects before the first byte", async () => {
      const { body, headers } = canaryChat(rig, "disconnectearly", "patient-chat");
      rig.fake.enqueue(behaviour.slowFirstByte(60_000));
      const arrived = rig.fake.nextRequest();
      const aborted = rig.fake.nextAbort();
      const controller = new AbortController();
      const call = rig.client.chat.completions.create(body, { headers, signal: controller.signal });
      const upstream = await arrived;
      controller.abort();

      await expect(call).rejects.toBeInstanceOf(OpenAI.APIUserAbortError);
      expect(await aborted).toBe(upstream);
      const record = await waitForRecord(
        (candidate) => candidate.model === "patient-chat" && candidate.status === 499 && !candidate.streamed,
      );
      // the supplier read the prompt: its input is counted by Lethe and billed, nothing more
      expect(record).toMatchObject({
        supplier: "fake-openai-patient",
        error_code: "LETHE_CLIENT_CLOSED",
        output_tokens: 0,
        tokens_estimated: true,
      });
      expect(record.input_tokens).toBeGreaterThan(0);
      expect(record.latency_ms).toBeLessThan(5000);
    });
  });
});
