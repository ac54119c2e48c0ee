import { once } from "node:events";
import { createServer } from "node:net";
import OpenAI from "openai";
import type { MetadataRecord } from "../../src/metering/metadata-record.js";
import { type CanaryHit, findCanaries, makeCanary } from "./canary.js";
import { type FakeOpenAISupplier, startFakeOpenAISupplier } from "./fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./gateway-harness.js";

/** The supplier key the gateway is configured with; the tests check it, and only it, reaches the fake. */
export const FAKE_SUPPLIER_KEY = "sk-fake-supplier-key-0123456789";

/** The route price of every model here, per million tokens. */
export const ROUTE_PRICE = { input_per_mtok: 0.1, output_per_mtok: 0.2, cached_input_per_mtok: 0.05 };

/** A gateway whose models all go to a fake OpenAI-compatible supplier, and what a test needs to drive it. */
export interface OpenAISupplierRig {
  fake: FakeOpenAISupplier;
  gateway: TestGateway;
  client: OpenAI;
  /** Every canary the tests sent; none may be found in the gateway's stores or logs. */
  canaries: string[];
}

/** A loopback URL where nothing listens, so connecting is refused. */
async function closedPortUrl(): Promise<string> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}

/**
 * Starts a fake supplier and a gateway with four models on it:
 * `fast-chat` (short timeouts), `patient-chat` (long timeouts, for client aborts),
 * `down-chat` (a supplier where nothing listens) and `fallback-chat` (down, then fast).
 */
export async function startOpenAISupplierRig(): Promise<OpenAISupplierRig> {
  const fake = await startFakeOpenAISupplier();
  const downUrl = await closedPortUrl();
  const route = (supplier: string) => ({ supplier, model: "upstream-model-1", price: ROUTE_PRICE });
  const gateway = await startTestGateway({
    config: {
      suppliers: [
        {
          id: "fake-openai",
          type: "openai",
          base_url: fake.url,
          api_key_env: "FAKE_KEY",
          zdr: true,
          // far above any normal answer of the fake, far below behaviour.oversized()
          max_response_bytes: 64 * 1024,
          timeouts: { first_byte_ms: 300, idle_ms: 300, connect_ms: 1000, total_ms: 5000 },
        },
        {
          id: "fake-openai-patient",
          type: "openai",
          base_url: fake.url,
          api_key_env: "FAKE_KEY",
          zdr: true,
          timeouts: { first_byte_ms: 10_000, idle_ms: 10_000, connect_ms: 1000, total_ms: 20_000 },
        },
        {
          id: "fake-openai-down",
          type: "openai",
          base_url: downUrl,
          api_key_env: "FAKE_KEY",
          zdr: true,
          timeouts: { first_byte_ms: 300, idle_ms: 300, connect_ms: 1000, total_ms: 5000 },
        },
        {
          // a server that rejects `store`: Lethe must not add it
          id: "fake-openai-no-store",
          type: "openai",
          base_url: fake.url,
          api_key_env: "FAKE_KEY",
          zdr: true,
          send_store_false: false,
        },
      ],
      models: [
        { id: "fast-chat", routes: [route("fake-openai")] },
        { id: "patient-chat", routes: [route("fake-openai-patient")] },
        { id: "down-chat", routes: [route("fake-openai-down")] },
        { id: "fallback-chat", routes: [route("fake-openai-down"), route("fake-openai")], max_attempts: 2 },
        { id: "no-store-chat", routes: [route("fake-openai-no-store")] },
      ],
      // one attempt per request, and a breaker that never opens: these tests look at each
      // failure on its own (retries, fallback and breaking are tested in test/routing*)
      routing: { max_attempts: 1, breaker: { failure_threshold: 1_000_000 } },
    },
    env: { FAKE_KEY: FAKE_SUPPLIER_KEY },
  });
  const client = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
  return { fake, gateway, client, canaries: [] };
}

/**
 * Closes the gateway (flushing its metadata), reads `/metrics` first, then looks for
 * every canary in the data dir, the log and the metrics; closes the fake last.
 */
export async function closeRigAndFindCanaries(rig: OpenAISupplierRig): Promise<CanaryHit[]> {
  const metrics = await fetch(`${rig.gateway.url}/metrics`).then((response) => response.text());
  await rig.gateway.close();
  await rig.fake.close();
  return findCanaries(rig.canaries, {
    dataDir: rig.gateway.dataDir,
    texts: { log: rig.gateway.logText(), metrics },
  });
}

/** The canaries of one chat request, one per place content can hide. */
export interface ChatCanaries {
  system: string;
  user: string;
  toolDefinition: string;
  toolArguments: string;
  toolResult: string;
  userField: string;
  header: string;
}

/**
 * A chat request with a fresh canary in the system prompt, the user messages, a tool
 * definition, a tool call's arguments, a tool result, the `user` field and an unknown
 * header. The canaries are added to the rig's list so the final scan looks for them.
 */
export function canaryChat(rig: OpenAISupplierRig, label: string, model = "fast-chat") {
  const canary: ChatCanaries = {
    system: makeCanary(`${label}system`),
    user: makeCanary(`${label}user`),
    toolDefinition: makeCanary(`${label}tooldef`),
    toolArguments: makeCanary(`${label}toolargs`),
    toolResult: makeCanary(`${label}toolresult`),
    userField: makeCanary(`${label}userfield`),
    header: makeCanary(`${label}header`),
  };
  rig.canaries.push(...Object.values(canary));
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
    { role: "system", content: `You are terse. ${canary.system}` },
    { role: "user", content: `Look up ${canary.toolArguments}.` },
    {
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: "call_1",
          type: "function",
          function: { name: "lookup", arguments: JSON.stringify({ query: canary.toolArguments }) },
        },
      ],
    },
    { role: "tool", tool_call_id: "call_1", content: `Found ${canary.toolResult}` },
    { role: "user", content: `Now repeat ${canary.user} please` },
  ];
  const tools: OpenAI.Chat.ChatCompletionTool[] = [
    {
      type: "function",
      function: {
        name: "lookup",
        description: `Looks a term up. ${canary.toolDefinition}`,
        parameters: {
          type: "object",
          properties: { query: { type: "string", description: canary.toolDefinition } },
          required: ["query"],
        },
      },
    },
  ];
  const body = { model, messages, tools, user: canary.userField, temperature: 0.2, max_tokens: 64, seed: 7 };
  return { canary, body, headers: { "x-canary-trace": canary.header } };
}

/** What a raw `fetch` to the gateway's chat completions got back. */
export interface RawChatResponse {
  status: number;
  headers: Headers;
  text: string;
}

/** POSTs a body to `/v1/chat/completions` with plain fetch, for what the SDK hides (raw SSE, headers, error JSON). */
export async function postChat(
  rig: OpenAISupplierRig,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<RawChatResponse> {
  const response = await fetch(`${rig.gateway.baseURL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${rig.gateway.key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

/** The metadata record of one request, found by the `x-request-id` the gateway answered with. */
export async function recordOf(rig: OpenAISupplierRig, requestId: string | null): Promise<MetadataRecord> {
  const record = (await rig.gateway.records()).find((candidate) => candidate.request_id === requestId);
  if (record === undefined) throw new Error(`no metadata record for request ${String(requestId)}`);
  return record;
}

/** The JSON of every `data:` event of an SSE text, except the final `[DONE]`. */
export function sseData(text: string): Record<string, unknown>[] {
  return text
    .split("\n\n")
    .filter((event) => event.startsWith("data: ") && event !== "data: [DONE]")
    .map((event) => JSON.parse(event.slice("data: ".length)) as Record<string, unknown>);
}
