import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { behaviour, type FakeBehaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
  closedPortUrl,
  keyOfAccountWithoutZdr,
  messagesBody,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  recordOf,
  sseData,
  startFakes,
  streamedText,
} from "./support/routing-rig.js";

/**
 * Fallback and retries end to end: a real gateway in front of fake suppliers that
 * fail on demand. Before any byte reaches the client, a retryable failure moves on to
 * the next route (bounded, with backoff that honours retry-after); after it, the
 * stream ends with an error event in the client's format. Every failure below echoes
 * the prompt's canary in the supplier's body; none may reach a log or the metadata.
 */

let fakes: Record<"primary" | "secondary" | "retainer", FakeOpenAISupplier>;
let gateway: TestGateway;
/** Same suppliers, with the route header left disabled. */
let headerless: TestGateway;
/** A key of an account that does not require ZDR. */
let relaxedKey: string;
let openai: OpenAI;
let anthropic: Anthropic;
const canaries: string[] = [];

const BACKOFF = { backoff_base_ms: 40, backoff_max_ms: 80 };

beforeAll(async () => {
  fakes = await startFakes(["primary", "secondary", "retainer"]);
  const suppliers = [
    openAISupplier("primary", fakes.primary.url),
    openAISupplier("secondary", fakes.secondary.url),
    openAISupplier("down", await closedPortUrl()),
    openAISupplier("retainer", fakes.retainer.url, { zdr: false }),
  ];
  const primary = { supplier: "primary", model: "model-a" };
  const secondary = { supplier: "secondary", model: "model-b" };
  gateway = await startTestGateway({
    config: {
      suppliers,
      models: [
        { id: "duo", routes: [primary, secondary] },
        { id: "duo-once", routes: [primary, secondary], max_attempts: 1 },
        { id: "solo", routes: [primary], max_attempts: 2 },
        { id: "down-first", routes: [{ supplier: "down", model: "model-d" }, secondary] },
        { id: "mixed-zdr", routes: [{ supplier: "retainer", model: "model-r" }, secondary] },
        { id: "retainer-only", routes: [{ supplier: "retainer", model: "model-r" }] },
      ],
      // a breaker that never opens: each failure here is looked at on its own (see circuit-breaker.test.ts)
      routing: {
        max_attempts: 3,
        deadline_ms: 10_000,
        ...BACKOFF,
        allow_route_header: true,
        breaker: { failure_threshold: 1_000_000 },
      },
    },
    env: ROUTING_ENV,
  });
  headerless = await startTestGateway({
    config: { suppliers, models: [{ id: "duo", routes: [primary, secondary] }] },
    env: ROUTING_ENV,
  });
  relaxedKey = await keyOfAccountWithoutZdr(gateway, "relaxed");
  openai = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: gateway.key, baseURL: gateway.url, maxRetries: 0 });
});

afterAll(async () => {
  expect(await closeAndFindCanaries([gateway, headerless], Object.values(fakes), canaries)).toEqual([]);
});

// a behaviour left in a queue means the gateway sent fewer requests than the test expected
afterEach(() => {
  // a supplier's retry-after rests its route for the requests that follow (router.ts)
  gateway.passRouteRests();
  for (const fake of Object.values(fakes)) {
    expect(fake.clearQueue()).toBe(0);
    fake.setBehaviour(behaviour.ok());
  }
});

/** How many requests each fake receives while `run` runs. */
async function countingRequests<T>(run: () => Promise<T>): Promise<{ result: T; sent: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(fakes).map(([name, fake]) => [name, fake.requests.length]));
  const result = await run();
  const sent = Object.fromEntries(
    Object.entries(fakes).map(([name, fake]) => [name, fake.requests.length - (before[name] ?? 0)]),
  );
  return { result, sent };
}

describe("before the first byte: the next route serves", () => {
  it.each<[string, boolean, () => FakeBehaviour]>([
    ["a 500", false, () => behaviour.status(500)],
    ["a 500", true, () => behaviour.status(500)],
    ["a 502", false, () => behaviour.status(502)],
    ["a 503 with retry-after", false, () => behaviour.status(503, undefined, { "retry-after": "5" })],
    ["a 503 with retry-after", true, () => behaviour.status(503, undefined, { "retry-after": "5" })],
    ["a 429 with retry-after", false, () => behaviour.status(429, undefined, { "retry-after": "5" })],
    ["a 408", false, () => behaviour.status(408)],
    ["a 409", true, () => behaviour.status(409)],
    // the operator's model mapping or key is wrong, not the caller's request
    ["a 404", false, () => behaviour.status(404)],
    ["a 200 that is not JSON", false, () => behaviour.notJson()],
    ["a 200 of JSON in the wrong shape (choices: [null])", false, () => behaviour.wrongShape()],
    // a redirect's body speaks of the operator's side: it is a failure of the route, never shown
    ["a 307 redirect", false, () => behaviour.status(307, { error: "moved" }, { location: "http://127.0.0.1:9/" })],
    ["a 301 redirect", true, () => behaviour.status(301, { error: "moved" }, { location: "http://127.0.0.1:9/" })],
    ["a 200 that is not an event stream", true, () => behaviour.notJson()],
    ["half a body, then a reset", false, () => behaviour.resetMidStream()],
    ["stream headers, then a reset", true, () => behaviour.resetMidStream(0)],
    ["a first stream chunk that is garbage", true, () => behaviour.garbageChunk(0)],
  ])("%s (stream: %s)", async (_name, stream, failure) => {
    const { content } = canaryPrompt(canaries, "fallback");
    fakes.primary.enqueue(failure());
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("duo", content, stream)),
    );

    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-supplier")).toBe("secondary");
    expect(result.headers.get("x-lethe-attempts")).toBe("2");
    expect(sent).toEqual({ primary: 1, secondary: 1, retainer: 0 });
    const text = stream
      ? streamedText(result.text)
      : (JSON.parse(result.text) as OpenAI.ChatCompletion).choices[0]?.message.content;
    expect(text).toBe(`Echo: ${content}`);
    if (stream) expect(sseData(result.text).some((chunk) => "error" in chunk)).toBe(false);
    // falling over to another route does not wait for the first route's retry-after
    expect(result.elapsedMs).toBeLessThan(2000);
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      model: "duo",
      supplier: "secondary",
      attempts: 2,
      status: 200,
      error_code: null,
      streamed: stream,
    });
    // the failed route's own words (its error body echoes the prompt) stay out of the answer
    expect(result.text).not.toContain("could not handle");
  });

  it("skips a supplier that refuses connections", async () => {
    const { content } = canaryPrompt(canaries, "refused");
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("down-first", content)),
    );

    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-supplier")).toBe("secondary");
    expect(result.headers.get("x-lethe-attempts")).toBe("2");
    expect(sent).toEqual({ primary: 0, secondary: 1, retainer: 0 });
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      supplier: "secondary",
      attempts: 2,
      status: 200,
    });
  });

  it("serves the Anthropic surface from the next route, through the SDK", async () => {
    const { content } = canaryPrompt(canaries, "anthropicfallback");
    fakes.primary.enqueue(behaviour.status(503), behaviour.status(500));
    const { data, response } = await anthropic.messages
      .create({ model: "duo", max_tokens: 64, messages: [{ role: "user", content }] })
      .withResponse();
    expect(data.content[0]).toMatchObject({ type: "text", text: `Echo: ${content}` });
    expect(response.headers.get("x-lethe-supplier")).toBe("secondary");

    let text = "";
    const stream = anthropic.messages.stream({ model: "duo", max_tokens: 64, messages: [{ role: "user", content }] });
    for await (const event of stream) {
      if (event.type === "content_block_delta" && event.delta.type === "text_delta") text += event.delta.text;
    }
    expect(text).toBe(`Echo: ${content}`);
    const records = await gateway.records();
    expect(records.slice(-2).map((record) => [record.client_format, record.supplier, record.attempts])).toEqual([
      ["anthropic", "secondary", 2],
      ["anthropic", "secondary", 2],
    ]);
  });
});

describe("retries on the same route", () => {
  it("waits no longer than the configured backoff when the supplier names no retry-after", async () => {
    const { content } = canaryPrompt(canaries, "backoff");
    fakes.primary.enqueue(behaviour.status(500));
    const result = await postRaw(gateway, "/v1/chat/completions", chatBody("solo", content));

    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-attempts")).toBe("2");
    // backoff_base_ms 40 with full jitter, plus two loopback round trips
    expect(result.elapsedMs).toBeLessThan(500);
  });

  it("stops after max_attempts, answering with the last failure in the caller's format", async () => {
    const { canary, content } = canaryPrompt(canaries, "bounded");
    fakes.primary.setBehaviour(behaviour.status(500));
    fakes.secondary.setBehaviour(behaviour.status(500));
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("duo", content)),
    );

    expect(result.status).toBe(502);
    expect(JSON.parse(result.text)).toEqual({
      error: {
        message: "The supplier failed to answer.",
        type: "server_error",
        param: null,
        code: "LETHE_UPSTREAM_ERROR",
      },
    });
    expect(result.text).not.toContain(canary);
    // routing.max_attempts 3: both routes, then the first again
    expect(sent).toEqual({ primary: 2, secondary: 1, retainer: 0 });
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      supplier: "primary",
      attempts: 3,
      status: 502,
      error_code: "LETHE_UPSTREAM_ERROR",
    });
  });

  it.each([401, 403, 404, 307])(
    "tries a route that answered %i (Lethe's key, model name or base_url refused) once a request",
    async (status) => {
      const { content } = canaryPrompt(canaries, "refusedlethe");
      fakes.primary.setBehaviour(behaviour.status(status, { error: "refused" }, { location: "http://127.0.0.1:9/" }));
      fakes.secondary.setBehaviour(behaviour.status(500));
      const both = await countingRequests(() => postRaw(gateway, "/v1/chat/completions", chatBody("duo", content)));
      // the third attempt goes to the route that may recover, not to the one that refuses again
      expect(both.sent).toEqual({ primary: 1, secondary: 2, retainer: 0 });
      expect(both.result.status).toBe(502);
      expect(both.result.headers.get("x-should-retry")).toBeNull();

      const alone = await countingRequests(() => postRaw(gateway, "/v1/chat/completions", chatBody("solo", content)));
      expect(alone.sent).toEqual({ primary: 1, secondary: 0, retainer: 0 });
      expect(alone.result.status).toBe(502);
      expect(alone.result.headers.get("x-should-retry")).toBe("false");
      expect(await recordOf(gateway, alone.result.headers.get("x-request-id"))).toMatchObject({
        supplier: "primary",
        attempts: 1,
        status: 502,
        error_code: "LETHE_UPSTREAM_ERROR",
      });
    },
  );

  it("honours a model's own max_attempts", async () => {
    const { content } = canaryPrompt(canaries, "once");
    fakes.primary.enqueue(behaviour.status(500));
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("duo-once", content)),
    );

    expect(result.status).toBe(502);
    expect(sent).toEqual({ primary: 1, secondary: 0, retainer: 0 });
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({ attempts: 1 });
  });

  it("answers the Anthropic surface with 529 overloaded_error when every route is overloaded", async () => {
    const { canary, content } = canaryPrompt(canaries, "overloaded");
    fakes.primary.setBehaviour(behaviour.status(503));
    fakes.secondary.setBehaviour(behaviour.status(503));
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/messages", messagesBody("duo", content, true)),
    );

    expect(result.status).toBe(529);
    expect(JSON.parse(result.text)).toEqual({
      type: "error",
      error: { type: "overloaded_error", message: "The supplier is overloaded.", code: "LETHE_UPSTREAM_OVERLOADED" },
    });
    expect(result.text).not.toContain(canary);
    expect(sent).toEqual({ primary: 2, secondary: 1, retainer: 0 });
  });
});

describe("the caller's own mistakes are returned, not retried", () => {
  it.each([400, 422])("a %i goes back to the caller with the supplier's message", async (status) => {
    const { canary, content } = canaryPrompt(canaries, `rejected${status}`);
    fakes.primary.enqueue(behaviour.status(status));
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("duo", content)),
    );

    expect(result.status).toBe(status);
    const error = (JSON.parse(result.text) as { error: { code: string; message: string } }).error;
    expect(error.code).toBe("LETHE_UPSTREAM_REJECTED");
    // the caller's own data, back to the caller only
    expect(error.message).toContain(canary);
    expect(sent).toEqual({ primary: 1, secondary: 0, retainer: 0 });
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      supplier: "primary",
      attempts: 1,
      status,
      error_code: "LETHE_UPSTREAM_REJECTED",
    });
  });

  it("a 400 reaches the Anthropic SDK as a BadRequestError", async () => {
    const { canary, content } = canaryPrompt(canaries, "anthropic400");
    fakes.primary.enqueue(behaviour.status(400));
    const thrown = await anthropic.messages
      .create({ model: "duo", max_tokens: 64, messages: [{ role: "user", content }] })
      .catch((error: unknown) => error);

    expect(thrown).toBeInstanceOf(Anthropic.BadRequestError);
    expect((thrown as InstanceType<typeof Anthropic.BadRequestError>).message).toContain(canary);
  });
});

describe("after the first byte: never retried, an error event ends the stream", () => {
  it.each<[string, () => FakeBehaviour, string]>([
    ["a reset connection", () => behaviour.resetMidStream(), "LETHE_UPSTREAM_UNAVAILABLE"],
    ["a chunk that is garbage", () => behaviour.garbageChunk(), "LETHE_UPSTREAM_BAD_RESPONSE"],
    ["an error chunk that echoes the prompt", () => behaviour.streamErrorChunk(), "LETHE_UPSTREAM_ERROR"],
    // valid JSON that Lethe cannot translate is the supplier's garbage, not Lethe's own failure
    ["chunks of the wrong shape (null entries)", () => behaviour.wrongShape(), "LETHE_UPSTREAM_BAD_RESPONSE"],
  ])("%s", async (_name, failure, code) => {
    const { canary, content } = canaryPrompt(canaries, "midstream");
    fakes.primary.enqueue(failure(), failure(), failure());

    const throughOpenAISdk = async () => {
      const { data, response } = await openai.chat.completions
        .create({ model: "duo", messages: [{ role: "user", content }], stream: true })
        .withResponse();
      let text = "";
      const thrown = await (async () => {
        for await (const chunk of data) text += chunk.choices[0]?.delta.content ?? "";
      })().catch((error: unknown) => error);
      return { text, thrown, requestId: response.headers.get("x-request-id") };
    };
    const throughAnthropicSdk = async () => {
      const { data, response } = await anthropic.messages
        .create({ model: "duo", max_tokens: 64, messages: [{ role: "user", content }], stream: true })
        .withResponse();
      let text = "";
      const thrown = await (async () => {
        for await (const event of data) {
          if (event.type === "content_block_delta" && event.delta.type === "text_delta") text += event.delta.text;
        }
      })().catch((error: unknown) => error);
      return { text, thrown, requestId: response.headers.get("x-request-id") };
    };
    const { result, sent } = await countingRequests(() =>
      Promise.all([
        throughOpenAISdk(),
        throughAnthropicSdk(),
        postRaw(gateway, "/v1/messages", messagesBody("duo", content, true)),
      ]),
    );
    const [viaOpenAI, viaAnthropic, raw] = result;

    expect(sent).toEqual({ primary: 3, secondary: 0, retainer: 0 });
    expect(viaOpenAI.text).toBe("Echo: ");
    expect(viaOpenAI.thrown).toBeInstanceOf(OpenAI.APIError);
    expect((viaOpenAI.thrown as InstanceType<typeof OpenAI.APIError>).code).toBe(code);
    expect(viaAnthropic.text).toBe("Echo: ");
    expect(viaAnthropic.thrown).toBeInstanceOf(Anthropic.APIError);

    // on the Anthropic wire: a 200, the events that arrived, then Lethe's own `error` event
    expect(raw.status).toBe(200);
    const events = raw.text.split("\n\n").filter((event) => event !== "");
    expect(events.at(-1)?.split("\n")[0]).toBe("event: error");
    expect(sseData(raw.text).at(-1)).toMatchObject({ type: "error", error: { code } });
    expect(raw.text).not.toContain(`handle: Please repeat ${canary}`);

    for (const requestId of [viaOpenAI.requestId, viaAnthropic.requestId, raw.headers.get("x-request-id")]) {
      expect(await recordOf(gateway, requestId)).toMatchObject({
        supplier: "primary",
        attempts: 1,
        status: 200,
        error_code: code,
        streamed: true,
      });
    }
  });
});

describe("x-lethe-route pins a route when the operator allows it", () => {
  it("serves from the pinned route, named by route key or by supplier id", async () => {
    const { content } = canaryPrompt(canaries, "pinned");
    for (const pin of ["secondary/model-b", "secondary"]) {
      const { result, sent } = await countingRequests(() =>
        postRaw(gateway, "/v1/chat/completions", chatBody("duo", content), { "x-lethe-route": pin }),
      );
      expect(result.status).toBe(200);
      expect(result.headers.get("x-lethe-supplier")).toBe("secondary");
      expect(result.headers.get("x-lethe-attempts")).toBe("1");
      expect(sent).toEqual({ primary: 0, secondary: 1, retainer: 0 });
      expect(fakes.secondary.requests.at(-1)?.body).toMatchObject({ model: "model-b" });
    }
  });

  it("retries only the pinned route, never falling over to another", async () => {
    const { content } = canaryPrompt(canaries, "pinnedfail");
    fakes.secondary.setBehaviour(behaviour.status(500));
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("duo", content), { "x-lethe-route": "secondary/model-b" }),
    );

    expect(result.status).toBe(502);
    expect(sent).toEqual({ primary: 0, secondary: 3, retainer: 0 });
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      supplier: "secondary",
      attempts: 3,
    });
  });

  it.each([
    ["/v1/chat/completions" as const, chatBody, { error: { type: "invalid_request_error" } }],
    ["/v1/messages" as const, messagesBody, { type: "error", error: { type: "invalid_request_error" } }],
  ])("answers 400 on %s when the header names no route of the model", async (path, body, shape) => {
    const { content } = canaryPrompt(canaries, "pinnedunknown");
    const pin = canaryPrompt(canaries, "pinvalue").canary;
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, path, body("duo", content), { "x-lethe-route": pin }),
    );

    expect(result.status).toBe(400);
    expect(JSON.parse(result.text)).toMatchObject(shape);
    expect(result.text).toContain("LETHE_INVALID_REQUEST");
    // the header's value is the caller's text: not echoed
    expect(result.text).not.toContain(pin);
    expect(sent).toEqual({ primary: 0, secondary: 0, retainer: 0 });
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      status: 400,
      attempts: 0,
      supplier: null,
    });
  });

  it("cannot pin a route that ZDR rules out", async () => {
    const { content } = canaryPrompt(canaries, "pinnedretainer");
    const { result, sent } = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("mixed-zdr", content), { "x-lethe-route": "retainer" }),
    );

    expect(result.status).toBe(400);
    expect(sent.retainer).toBe(0);
  });

  it("is ignored when routing.allow_route_header is off", async () => {
    const { content } = canaryPrompt(canaries, "pinneddisabled");
    const { result, sent } = await countingRequests(() =>
      postRaw(headerless, "/v1/chat/completions", chatBody("duo", content), { "x-lethe-route": "secondary/model-b" }),
    );
    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-supplier")).toBe("primary");
    expect(sent).toEqual({ primary: 1, secondary: 0, retainer: 0 });

    const unknown = await postRaw(headerless, "/v1/chat/completions", chatBody("duo", content), {
      "x-lethe-route": "no-such-route",
    });
    expect(unknown.status).toBe(200);
  });
});

describe("ZDR filters routes first, and fails closed", () => {
  it("never sends a ZDR-required request to a retaining supplier, even when the others fail", async () => {
    const { content } = canaryPrompt(canaries, "zdrfiltered");
    const served = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("mixed-zdr", content)),
    );
    expect(served.result.status).toBe(200);
    expect(served.result.headers.get("x-lethe-supplier")).toBe("secondary");
    expect(served.result.headers.get("x-lethe-zdr")).toBe("enforced");
    expect(served.sent).toEqual({ primary: 0, secondary: 1, retainer: 0 });

    fakes.secondary.setBehaviour(behaviour.status(500));
    const failed = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("mixed-zdr", content)),
    );
    expect(failed.result.status).toBe(502);
    expect(failed.sent).toEqual({ primary: 0, secondary: 3, retainer: 0 });
  });

  it.each([
    ["/v1/chat/completions" as const, chatBody, { error: { type: "permission_error" } }],
    ["/v1/messages" as const, messagesBody, { type: "error", error: { type: "permission_error" } }],
  ])("refuses a model only a retaining supplier serves with 403 on %s", async (path, body, shape) => {
    const { content } = canaryPrompt(canaries, "zdrrefused");
    const { result, sent } = await countingRequests(() => postRaw(gateway, path, body("retainer-only", content)));

    expect(result.status).toBe(403);
    expect(JSON.parse(result.text)).toMatchObject(shape);
    expect(result.text).toContain("LETHE_ZDR_UNAVAILABLE");
    expect(result.headers.get("x-lethe-zdr")).toBe("enforced");
    expect(sent.retainer).toBe(0);
    // the record names the configured model it refused (`unknown` is for models not configured)
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      model: "retainer-only",
      status: 403,
      error_code: "LETHE_ZDR_UNAVAILABLE",
      attempts: 0,
    });
  });

  it("lets an account that does not require ZDR use every route, unless it sends x-lethe-zdr: required", async () => {
    const { content } = canaryPrompt(canaries, "zdrrelaxed");
    const open = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("mixed-zdr", content), {}, relaxedKey),
    );
    expect(open.result.status).toBe(200);
    expect(open.result.headers.get("x-lethe-supplier")).toBe("retainer");
    expect(open.result.headers.get("x-lethe-zdr")).toBe("off");
    expect(open.sent).toEqual({ primary: 0, secondary: 0, retainer: 1 });

    const required = await countingRequests(() =>
      postRaw(
        gateway,
        "/v1/chat/completions",
        chatBody("mixed-zdr", content),
        { "x-lethe-zdr": "required" },
        relaxedKey,
      ),
    );
    expect(required.result.status).toBe(200);
    expect(required.result.headers.get("x-lethe-supplier")).toBe("secondary");
    expect(required.result.headers.get("x-lethe-zdr")).toBe("enforced");
    expect(required.sent).toEqual({ primary: 0, secondary: 1, retainer: 0 });

    const refused = await countingRequests(() =>
      postRaw(
        gateway,
        "/v1/chat/completions",
        chatBody("retainer-only", content),
        { "x-lethe-zdr": "required" },
        relaxedKey,
      ),
    );
    expect(refused.result.status).toBe(403);
    expect(refused.result.text).toContain("LETHE_ZDR_UNAVAILABLE");
    expect(refused.sent.retainer).toBe(0);

    // failing closed: another case, spaces, the header sent twice (joined with a comma) still
    // require ZDR; a value Lethe does not know is refused, never ignored
    for (const value of ["Required", " REQUIRED ", "required, required"]) {
      const lenient = await countingRequests(() =>
        postRaw(gateway, "/v1/chat/completions", chatBody("mixed-zdr", content), { "x-lethe-zdr": value }, relaxedKey),
      );
      expect(lenient.result.headers.get("x-lethe-zdr")).toBe("enforced");
      expect(lenient.sent.retainer).toBe(0);
    }
    const unknown = await countingRequests(() =>
      postRaw(gateway, "/v1/chat/completions", chatBody("mixed-zdr", content), { "x-lethe-zdr": "maybe" }, relaxedKey),
    );
    expect(unknown.result.status).toBe(400);
    expect(unknown.result.text).toContain("LETHE_INVALID_REQUEST");
    expect(unknown.sent).toEqual({ primary: 0, secondary: 0, retainer: 0 });
  });
});
