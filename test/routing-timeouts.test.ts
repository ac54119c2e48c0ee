import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, it, vi } from "vitest";
import type { CanaryHit } from "./support/canary.js";
import { behaviour, type FakeBehaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
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
 * Timeouts, retry-after and the total deadline, end to end. Every case waits on a
 * timer, so each has its own pair of fake suppliers and model, and the cases run
 * concurrently: the file takes about as long as its slowest case.
 */

const CASES = [
  "slow-json",
  "slow-stream",
  "silent-body",
  "silent-headers",
  "silent-headers-idle",
  "mid-stream",
  "retry-after",
  "retry-after-pair",
  "retry-after-long",
  "deadline-retry",
  "deadline-slow",
  "deadline-bounded",
] as const;
type CaseName = (typeof CASES)[number];

interface Pair {
  first: FakeOpenAISupplier;
  second: FakeOpenAISupplier;
}

let pairs: Record<CaseName, Pair>;
let gateway: TestGateway;
/** A total deadline of 600 ms, and up to 10 attempts. */
let strict: TestGateway;
const canaries: string[] = [];

beforeAll(async () => {
  const fakes = await startFakes(CASES.flatMap((name) => [`${name}/first`, `${name}/second`]));
  pairs = Object.fromEntries(
    CASES.map((name) => [name, { first: fakes[`${name}/first`], second: fakes[`${name}/second`] }]),
  ) as Record<CaseName, Pair>;
  // the deadline cases' own first_byte_ms is long, so only the deadline can cut them short
  // and the silent-headers-idle case's idle_ms is long, so only first_byte_ms can cut its wait for a first event
  const patient = (name: CaseName) =>
    name.startsWith("deadline")
      ? { timeouts: { first_byte_ms: 5000 } }
      : name === "silent-headers-idle"
        ? { timeouts: { idle_ms: 10_000 } }
        : {};
  const suppliers = CASES.flatMap((name) => [
    openAISupplier(`${name}-first`, pairs[name].first.url, patient(name)),
    openAISupplier(`${name}-second`, pairs[name].second.url),
  ]);
  const model = (name: CaseName, routes: number, extra: Record<string, unknown> = {}) => ({
    id: name,
    routes: [`${name}-first`, `${name}-second`]
      .slice(0, routes)
      .map((supplier) => ({ supplier, model: `${supplier}-model` })),
    ...extra,
  });
  const noBreaker = { failure_threshold: 1_000_000 };
  gateway = await startTestGateway({
    config: {
      suppliers,
      models: [
        ...(
          ["slow-json", "slow-stream", "silent-body", "silent-headers", "silent-headers-idle", "mid-stream"] as const
        ).map((name) => model(name, 2)),
        model("retry-after", 1, { max_attempts: 2 }),
        model("retry-after-pair", 2),
        model("retry-after-long", 2),
      ],
      // the backoff's own waits stay short (base 40 ms); a retry-after up to 1.5 s is waited out
      routing: { max_attempts: 3, deadline_ms: 10_000, backoff_base_ms: 40, backoff_max_ms: 1500, breaker: noBreaker },
    },
    env: ROUTING_ENV,
  });
  strict = await startTestGateway({
    config: {
      suppliers,
      models: [model("deadline-retry", 1), model("deadline-slow", 1), model("deadline-bounded", 2)],
      routing: { max_attempts: 10, deadline_ms: 600, backoff_base_ms: 40, backoff_max_ms: 1000, breaker: noBreaker },
    },
    env: ROUTING_ENV,
  });
});

afterAll(async () => {
  const fakes = Object.values(pairs).flatMap((pair) => [pair.first, pair.second]);
  const hits = await closeAndFindCanaries([gateway, strict], fakes, canaries);
  if (hits.length > 0) throw new Error(`canaries found: ${JSON.stringify(hits)}`);
});

describe("a route that goes silent before the first byte: the next route serves", () => {
  it.concurrent.for<[CaseName, boolean, FakeBehaviour]>([
    ["slow-json", false, behaviour.slowFirstByte(10_000)],
    ["slow-stream", true, behaviour.slowFirstByte(10_000)],
    // half a JSON body, then nothing: not a byte of it reached the client
    ["silent-body", false, behaviour.hangMidStream()],
    // the stream's headers, then nothing: no event reached the client
    ["silent-headers", true, behaviour.hangMidStream(0)],
    // the same with a long idle_ms (a server busy with the prompt): first_byte_ms bounds the wait for a first event
    ["silent-headers-idle", true, behaviour.hangMidStream(0)],
  ])("%s", async ([name, stream, failure], { expect }) => {
    const { first, second } = pairs[name];
    const { content } = canaryPrompt(canaries, name);
    first.enqueue(failure);
    const aborted = first.nextAbort();
    const result = await postRaw(gateway, "/v1/chat/completions", chatBody(name, content, stream));

    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-supplier")).toBe(`${name}-second`);
    expect(result.headers.get("x-lethe-attempts")).toBe("2");
    const text = stream
      ? streamedText(result.text)
      : (JSON.parse(result.text) as OpenAI.ChatCompletion).choices[0]?.message.content;
    expect(text).toBe(`Echo: ${content}`);
    // the gateway hung up on the silent supplier rather than leaving its request to run
    expect((await aborted).aborted).toBe(true);
    expect([first.requests.length, second.requests.length]).toEqual([1, 1]);
    expect(first.clearQueue()).toBe(0);
    // the timeouts are 300 ms (undici checks them on a coarse timer): never the supplier's 10 s
    expect(result.elapsedMs).toBeGreaterThanOrEqual(280);
    expect(result.elapsedMs).toBeLessThan(3000);
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({
      supplier: `${name}-second`,
      attempts: 2,
      status: 200,
      error_code: null,
    });
  });
});

describe("a stream that goes silent after its first byte", () => {
  it.concurrent("ends with a timeout error event in each client's format, and is not retried", async ({ expect }) => {
    const { first, second } = pairs["mid-stream"];
    const { canary, content } = canaryPrompt(canaries, "midsilence");
    first.enqueue(behaviour.hangMidStream(), behaviour.hangMidStream(), behaviour.hangMidStream());
    const openai = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
    const anthropic = new Anthropic({ apiKey: gateway.key, baseURL: gateway.url, maxRetries: 0 });

    const throughOpenAISdk = async () => {
      const stream = await openai.chat.completions.create({
        model: "mid-stream",
        messages: [{ role: "user", content }],
        stream: true,
      });
      let text = "";
      const thrown = await (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
      })().catch((error: unknown) => error);
      return { text, thrown };
    };
    const throughAnthropicSdk = async () => {
      const stream = await anthropic.messages.create({
        model: "mid-stream",
        max_tokens: 64,
        messages: [{ role: "user", content }],
        stream: true,
      });
      let text = "";
      const thrown = await (async () => {
        for await (const event of stream) {
          if (event.type === "content_block_delta" && event.delta.type === "text_delta") text += event.delta.text;
        }
      })().catch((error: unknown) => error);
      return { text, thrown };
    };
    const [viaOpenAI, viaAnthropic, raw] = await Promise.all([
      throughOpenAISdk(),
      throughAnthropicSdk(),
      postRaw(gateway, "/v1/messages", messagesBody("mid-stream", content, true)),
    ]);

    expect(viaOpenAI.text).toBe("Echo: ");
    expect((viaOpenAI.thrown as InstanceType<typeof OpenAI.APIError>).code).toBe("LETHE_UPSTREAM_TIMEOUT");
    expect(viaAnthropic.text).toBe("Echo: ");
    expect(viaAnthropic.thrown).toBeInstanceOf(Anthropic.APIError);
    expect(raw.status).toBe(200);
    expect(raw.text.trimEnd().split("\n\n").at(-1)?.split("\n")[0]).toBe("event: error");
    expect(sseData(raw.text).at(-1)).toEqual({
      type: "error",
      error: {
        type: "timeout_error",
        message: "The supplier stopped sending in the middle of its answer.",
        code: "LETHE_UPSTREAM_TIMEOUT",
      },
    });
    expect(raw.text).not.toContain(canary);
    expect([first.requests.length, second.requests.length]).toEqual([3, 0]);
    expect(await recordOf(gateway, raw.headers.get("x-request-id"))).toMatchObject({
      supplier: "mid-stream-first",
      attempts: 1,
      status: 200,
      error_code: "LETHE_UPSTREAM_TIMEOUT",
      streamed: true,
    });
  });
});

describe("retry-after and the total deadline", () => {
  it.concurrent("waits at least the supplier's retry-after before asking the same route again", async ({ expect }) => {
    const { first } = pairs["retry-after"];
    const { content } = canaryPrompt(canaries, "retryafter");
    first.enqueue(behaviour.status(503, undefined, { "retry-after": "1" }));
    const result = await postRaw(gateway, "/v1/chat/completions", chatBody("retry-after", content));

    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-attempts")).toBe("2");
    expect(first.requests.length).toBe(2);
    expect(result.elapsedMs).toBeGreaterThanOrEqual(990);
    expect(result.elapsedMs).toBeLessThan(3000);
  });

  it.concurrent("honours a route's retry-after when it comes back to it after another route", async ({ expect }) => {
    const { first, second } = pairs["retry-after-pair"];
    const { content } = canaryPrompt(canaries, "retryafterpair");
    first.enqueue(behaviour.status(429, undefined, { "retry-after": "1" }));
    // the second route names no retry-after: it must not erase the first route's
    second.enqueue(behaviour.status(500));
    const result = await postRaw(gateway, "/v1/chat/completions", chatBody("retry-after-pair", content));

    expect(result.status).toBe(200);
    expect(result.headers.get("x-lethe-supplier")).toBe("retry-after-pair-first");
    expect(result.headers.get("x-lethe-attempts")).toBe("3");
    expect([first.requests.length, second.requests.length]).toEqual([2, 1]);
    expect(result.elapsedMs).toBeGreaterThanOrEqual(990);
    expect(result.elapsedMs).toBeLessThan(3000);
  });

  it.concurrent("leaves a retry-after longer than backoff_max_ms to the client, trying the other route meanwhile", async ({
    expect,
  }) => {
    const { first, second } = pairs["retry-after-long"];
    const { content } = canaryPrompt(canaries, "retryafterlong");
    first.setBehaviour(behaviour.status(429, undefined, { "retry-after": "5" }));
    second.setBehaviour(behaviour.status(429, undefined, { "retry-after": "4" }));
    const result = await postRaw(gateway, "/v1/chat/completions", chatBody("retry-after-long", content));

    // each route asked once, neither waited for: the client hears the supplier's own wait at once
    expect(result.status).toBe(429);
    expect(result.headers.get("retry-after")).toBe("4");
    expect(result.headers.get("x-should-retry")).toBeNull();
    expect([first.requests.length, second.requests.length]).toEqual([1, 1]);
    expect(result.elapsedMs).toBeLessThan(1000);
    expect(await recordOf(gateway, result.headers.get("x-request-id"))).toMatchObject({ attempts: 2, status: 429 });
  });

  it.concurrent("does not wait out a retry-after that ends beyond the deadline", async ({ expect }) => {
    const { first } = pairs["deadline-retry"];
    const { content } = canaryPrompt(canaries, "deadlineretry");
    first.enqueue(behaviour.status(503, undefined, { "retry-after": "1" }));
    const result = await postRaw(strict, "/v1/chat/completions", chatBody("deadline-retry", content));

    expect(result.status).toBe(503);
    expect(result.headers.get("retry-after")).toBe("1");
    expect(first.requests.length).toBe(1);
    expect(result.elapsedMs).toBeLessThan(500);
    expect(await recordOf(strict, result.headers.get("x-request-id"))).toMatchObject({ attempts: 1, status: 503 });
  });

  it.concurrent("cuts a slow attempt short at the deadline, whatever the route's own timeouts", async ({ expect }) => {
    const { first } = pairs["deadline-slow"];
    const { content } = canaryPrompt(canaries, "deadlineslow");
    first.enqueue(behaviour.slowFirstByte(10_000));
    const result = await postRaw(strict, "/v1/chat/completions", chatBody("deadline-slow", content));

    expect(result.status).toBe(504);
    expect(JSON.parse(result.text)).toMatchObject({ error: { code: "LETHE_UPSTREAM_TIMEOUT" } });
    // deadline_ms is 600, the route's first_byte_ms 5000
    expect(result.elapsedMs).toBeGreaterThanOrEqual(550);
    expect(result.elapsedMs).toBeLessThan(2000);
    expect(await recordOf(strict, result.headers.get("x-request-id"))).toMatchObject({ attempts: 1 });
  });

  it.concurrent("bounds the attempts of a request whose routes all keep failing", async ({ expect }) => {
    const { first, second } = pairs["deadline-bounded"];
    const { content } = canaryPrompt(canaries, "deadlinebounded");
    first.setBehaviour(behaviour.status(500));
    second.setBehaviour(behaviour.status(500));
    const result = await postRaw(strict, "/v1/chat/completions", chatBody("deadline-bounded", content));

    expect(result.status).toBe(502);
    const record = await recordOf(strict, result.headers.get("x-request-id"));
    expect(record.attempts).toBeGreaterThanOrEqual(2);
    expect(record.attempts).toBeLessThanOrEqual(10);
    expect(first.requests.length + second.requests.length).toBe(record.attempts);
    expect(result.elapsedMs).toBeLessThan(1500);
  });
});

describe("a request waiting for a pooled connection", () => {
  it("is held to the routing deadline while it waits, not only once it has a socket", async ({ expect }) => {
    const { busy } = await startFakes(["busy"]);
    const supplier = { ...openAISupplier("busy", busy.url, { timeouts: { first_byte_ms: 500, idle_ms: 10_000 } }) };
    const queued = await startTestGateway({
      config: {
        suppliers: [{ ...supplier, max_connections: 1 }],
        models: [{ id: "one-connection", routes: [{ supplier: "busy", model: "busy-model" }] }],
        // the deadline is past first_byte_ms: undici's own first-byte timer would start only with a socket
        routing: { max_attempts: 1, deadline_ms: 1_000 },
      },
      env: ROUTING_ENV,
    });
    const holder = new AbortController();
    try {
      // a stream that starts, then goes quiet, keeps the supplier's one connection
      busy.enqueue(behaviour.hangMidStream());
      const held = await fetch(`${queued.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${queued.key}`, "content-type": "application/json" },
        body: JSON.stringify(chatBody("one-connection", canaryPrompt(canaries, "holder").content, true)),
        signal: holder.signal,
      });
      expect(held.status).toBe(200);

      const { content } = canaryPrompt(canaries, "queued");
      const result = await postRaw(queued, "/v1/chat/completions", chatBody("one-connection", content));
      expect(result.status).toBe(504);
      expect(JSON.parse(result.text)).toMatchObject({ error: { code: "LETHE_UPSTREAM_TIMEOUT" } });
      // the deadline, and a sweep of the queue (every 250 ms), not the holder's idle_ms
      expect(result.elapsedMs).toBeGreaterThanOrEqual(950);
      expect(result.elapsedMs).toBeLessThan(2_500);
      expect(busy.requests).toHaveLength(1);
    } finally {
      holder.abort();
      const hits = await closeAndFindCanaries([queued], [busy], canaries);
      expect(hits).toEqual([]);
    }
  });
});

/**
 * A gateway with a model of two routes, the first on a supplier of one connection; `hold()`
 * takes that connection with a stream that starts, then goes quiet, until `release()`.
 */
async function crowdedPair(routing: Record<string, unknown> = {}) {
  const { crowded, other } = await startFakes(["crowded", "other"]);
  const gateway = await startTestGateway({
    config: {
      suppliers: [
        { ...openAISupplier("crowded", crowded.url, { timeouts: { idle_ms: 10_000 } }), max_connections: 1 },
        openAISupplier("other", other.url),
      ],
      models: [
        {
          id: "pair",
          routes: [
            { supplier: "crowded", model: "crowded-model" },
            { supplier: "other", model: "other-model" },
          ],
        },
      ],
      routing,
    },
    env: ROUTING_ENV,
  });
  const holder = new AbortController();
  return {
    gateway,
    crowded,
    other,
    async hold(): Promise<string | null> {
      crowded.enqueue(behaviour.hangMidStream());
      const held = await fetch(`${gateway.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
        body: JSON.stringify(chatBody("pair", canaryPrompt(canaries, "holder").content, true)),
        signal: holder.signal,
      });
      return held.headers.get("x-lethe-supplier");
    },
    release: () => holder.abort(),
    async close(): Promise<CanaryHit[]> {
      holder.abort();
      return closeAndFindCanaries([gateway], [crowded, other], canaries);
    },
  };
}

describe("a route whose supplier has every connection taken", () => {
  it("is passed over on the first pass while another route has room", async ({ expect }) => {
    const pair = await crowdedPair();
    try {
      expect(await pair.hold()).toBe("crowded");
      const { content } = canaryPrompt(canaries, "roomy");
      const result = await postRaw(pair.gateway, "/v1/chat/completions", chatBody("pair", content));
      expect(result.status).toBe(200);
      expect(result.headers.get("x-lethe-supplier")).toBe("other");
      expect(result.headers.get("x-lethe-attempts")).toBe("1");
      expect(pair.crowded.requests).toHaveLength(1);
    } finally {
      expect(await pair.close()).toEqual([]);
    }
  });

  it("is tried at once when the routes with room fail, without the backoff meant for routes tried before", async ({
    expect,
  }) => {
    // a backoff longer than the deadline: waited before the crowded route, it would end the request
    const pair = await crowdedPair({ deadline_ms: 3_000, backoff_base_ms: 5_000, backoff_max_ms: 5_000 });
    try {
      await pair.hold();
      pair.other.enqueue(behaviour.status(500));
      // the crowded route's connection frees a moment after the request came
      setTimeout(() => pair.release(), 300);
      const { content } = canaryPrompt(canaries, "crowded");
      // the backoff's jitter at its top: 4.95 s, past the deadline, were it waited
      const jitter = vi.spyOn(Math, "random").mockReturnValue(0.99);
      const result = await postRaw(pair.gateway, "/v1/chat/completions", chatBody("pair", content)).finally(() =>
        jitter.mockRestore(),
      );
      expect(result.status).toBe(200);
      expect(result.headers.get("x-lethe-supplier")).toBe("crowded");
      expect(result.headers.get("x-lethe-attempts")).toBe("2");
      expect(result.elapsedMs).toBeLessThan(2_500);
    } finally {
      expect(await pair.close()).toEqual([]);
    }
  });
});
