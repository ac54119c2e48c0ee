import { once } from "node:events";
import { createServer } from "node:net";
import { performance } from "node:perf_hooks";
import type { MetadataRecord } from "../../src/metering/metadata-record.js";
import { type CanaryHit, findCanaries, makeCanary } from "./canary.js";
import { type FakeOpenAISupplier, startFakeOpenAISupplier } from "./fake-openai-supplier.js";
import type { TestGateway } from "./gateway-harness.js";

/**
 * Shared pieces of the routing tests: several fake OpenAI-compatible suppliers on
 * loopback, supplier config entries with short timeouts, raw requests to both client
 * surfaces that report their elapsed time, and the final canary scan.
 */

/** The supplier key every fake supplier is configured with. */
export const ROUTING_SUPPLIER_KEY = "sk-fake-routing-supplier-0123456789";

/** Timeouts short enough that a hanging supplier costs a test a fraction of a second. */
export const SHORT_TIMEOUTS = { connect_ms: 1000, first_byte_ms: 300, idle_ms: 300, total_ms: 5000 };

/** A loopback URL where nothing listens, so connecting is refused. */
export async function closedPortUrl(): Promise<string> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}

/** Starts one fake OpenAI-compatible supplier per name. */
export async function startFakes<Name extends string>(names: Name[]): Promise<Record<Name, FakeOpenAISupplier>> {
  const entries = await Promise.all(names.map(async (name) => [name, await startFakeOpenAISupplier()] as const));
  return Object.fromEntries(entries) as Record<Name, FakeOpenAISupplier>;
}

/** A supplier entry of the config file for an OpenAI-compatible server at `url`. */
export function openAISupplier(
  id: string,
  url: string,
  options: { zdr?: boolean; timeouts?: Partial<typeof SHORT_TIMEOUTS> } = {},
): Record<string, unknown> {
  return {
    id,
    type: "openai",
    base_url: url,
    api_key_env: "ROUTING_SUPPLIER_KEY",
    zdr: options.zdr ?? true,
    timeouts: { ...SHORT_TIMEOUTS, ...options.timeouts },
  };
}

/** The environment the gateway needs for the suppliers above. */
export const ROUTING_ENV = { ROUTING_SUPPLIER_KEY };

/** A key of a new account that does not require ZDR (`zdr_required: false`, as the admin API sets it). */
export async function keyOfAccountWithoutZdr(gateway: TestGateway, accountName: string): Promise<string> {
  const { key } = await gateway.createKey(accountName);
  const store = gateway.running.gateway.store;
  const account = await store.findAccountByName(accountName);
  if (account === undefined) throw new Error(`no account ${accountName}`);
  await store.accountAdmin.updateSettings(account.id, { zdrRequired: false });
  gateway.running.gateway.authenticator.invalidate();
  return key;
}

/** What a raw request to the gateway got back, and how long it took. */
export interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
  elapsedMs: number;
}

/** A request body for either surface whose user message carries a fresh canary (kept in `canaries`). */
export function canaryPrompt(canaries: string[], label: string): { canary: string; content: string } {
  const canary = makeCanary(label);
  canaries.push(canary);
  return { canary, content: `Please repeat ${canary} back` };
}

/** POSTs `body` to `path` with the given key and headers; the timer covers the whole response. */
export async function postRaw(
  gateway: TestGateway,
  path: "/v1/chat/completions" | "/v1/messages",
  body: unknown,
  headers: Record<string, string> = {},
  key: string = gateway.key,
): Promise<RawResponse> {
  const started = performance.now();
  const response = await fetch(`${gateway.url}${path}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      ...(path === "/v1/messages" && { "anthropic-version": "2023-06-01" }),
      ...headers,
    },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, elapsedMs: performance.now() - started };
}

/** An OpenAI chat request for `model` whose prompt is `content`. */
export function chatBody(model: string, content: string, stream = false): Record<string, unknown> {
  return { model, messages: [{ role: "user", content }], max_tokens: 64, stream };
}

/** An Anthropic messages request for `model` whose prompt is `content`. */
export function messagesBody(model: string, content: string, stream = false): Record<string, unknown> {
  return { model, max_tokens: 64, messages: [{ role: "user", content }], stream };
}

/** The metadata record of one request, found by the `x-request-id` the gateway answered with. */
export async function recordOf(gateway: TestGateway, requestId: string | null): Promise<MetadataRecord> {
  const record = (await gateway.records()).find((candidate) => candidate.request_id === requestId);
  if (record === undefined) throw new Error(`no metadata record for request ${String(requestId)}`);
  return record;
}

/** The JSON of every `data:` line of an SSE text, except OpenAI's final `[DONE]`. */
export function sseData(text: string): Record<string, unknown>[] {
  return text
    .split("\n\n")
    .flatMap((event) => event.split("\n").filter((line) => line.startsWith("data: ")))
    .map((line) => line.slice("data: ".length))
    .filter((data) => data !== "[DONE]")
    .map((data) => JSON.parse(data) as Record<string, unknown>);
}

/** The text an OpenAI SSE answer carried, joined from its chunks' deltas. */
export function streamedText(text: string): string {
  return sseData(text)
    .map((chunk) => {
      const choice = (chunk.choices as { delta?: { content?: string | null } }[] | undefined)?.[0];
      return choice?.delta?.content ?? "";
    })
    .join("");
}

/**
 * Reads /metrics, closes the gateways (flushing their metadata) and the fakes, then
 * looks for every canary in the data dirs, the logs and the metrics.
 */
export async function closeAndFindCanaries(
  gateways: TestGateway[],
  fakes: FakeOpenAISupplier[],
  canaries: string[],
): Promise<CanaryHit[]> {
  const hits: CanaryHit[] = [];
  for (const gateway of gateways) {
    const metrics = await fetch(`${gateway.url}/metrics`).then((response) => response.text());
    await gateway.close();
    hits.push(
      ...(await findCanaries(canaries, {
        dataDir: gateway.dataDir,
        texts: { log: gateway.logText(), metrics },
      })),
    );
  }
  await Promise.all(fakes.map((fake) => fake.close()));
  return hits;
}
