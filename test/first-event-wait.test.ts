import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { behaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  startFakes,
} from "./support/routing-rig.js";

/**
 * A stream's first event is waited for first_byte_ms from when its request left for the
 * supplier: a request that first waited for a pooled connection has its full first_byte_ms
 * once it gets one, not what the queue left of it.
 */
describe("the wait for a stream's first event", () => {
  let fake: FakeOpenAISupplier;
  let gateway: TestGateway;
  const canaries: string[] = [];

  beforeAll(async () => {
    ({ single: fake } = await startFakes(["single"]));
    gateway = await startTestGateway({
      config: {
        // one connection: the second stream waits for the first, longer than first_byte_ms
        suppliers: [
          { ...openAISupplier("single", fake.url, { timeouts: { first_byte_ms: 400 } }), max_connections: 1 },
        ],
        models: [{ id: "queued", routes: [{ supplier: "single", model: "single-model" }] }],
        routing: { deadline_ms: 10_000, max_attempts: 1 },
      },
      env: ROUTING_ENV,
    });
  });

  afterAll(async () => {
    const hits = await closeAndFindCanaries([gateway], [fake], canaries);
    expect(hits).toEqual([]);
  });

  it("runs first_byte_ms from when the request got its pooled connection", async () => {
    // each stream's events 250 ms apart, its first 250 ms after its headers: within first_byte_ms
    fake.enqueue(behaviour.ok({ pace: 250 }), behaviour.ok({ pace: 250 }));
    const { content } = canaryPrompt(canaries, "queued");
    const [first, second] = await Promise.all([
      postRaw(gateway, "/v1/chat/completions", chatBody("queued", content, true)),
      postRaw(gateway, "/v1/chat/completions", chatBody("queued", content, true)),
    ]);
    for (const result of [first, second]) {
      expect(result.status).toBe(200);
      expect(result.text).toContain("data: [DONE]");
      expect(result.text).not.toContain("LETHE_UPSTREAM_TIMEOUT");
    }
    // neither was given up on and sent again
    expect(fake.requests.map((request) => request.aborted)).toEqual([false, false]);
  });
});
