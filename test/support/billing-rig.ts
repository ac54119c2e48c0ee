import { EventEmitter, once } from "node:events";
import type { AccountId } from "../../src/config/ids.js";
import type { RoutePrice } from "../../src/config/load-config.js";
import { KeyHasher } from "../../src/keys/api-key.js";
import { issueKey } from "../../src/keys/issue-key.js";
import type { MetadataRecord } from "../../src/metering/metadata-record.js";
import { loadServerSecret } from "../../src/store/server-secret.js";
import { type CanaryHit, findCanaries, makeCanary } from "./canary.js";
import { type FakeAnthropicSupplier, startFakeAnthropicSupplier } from "./fake-anthropic-supplier.js";
import { type FakeOpenAISupplier, startFakeOpenAISupplier } from "./fake-openai-supplier.js";
import { fakeSupplierEntries } from "./fake-supplier-entries.js";
import { startTestGateway, type TestGateway } from "./gateway-harness.js";

/** Route prices per million tokens, as the config file writes them: whole micro-units per token. */
export const PRICE = { input_per_mtok: 2, output_per_mtok: 8, cached_input_per_mtok: 1 };
/** The same price as the gateway holds it, for computing expected costs. */
export const ROUTE_PRICE: RoutePrice = {
  inputPerMtok: 2,
  outputPerMtok: 8,
  cachedInputPerMtok: 1,
  cacheWritePerMtok: 2,
};

/** Configured model ids. */
export const BILLED = {
  /** The fake OpenAI supplier, priced. */
  gpt: "billed-gpt",
  /** The fake Anthropic supplier, priced. */
  claude: "billed-claude",
  /** The demo supplier, free. */
  free: "free-demo",
} as const;

/** The configured default output reservation when a request sets no max_tokens. */
export const DEFAULT_OUTPUT_RESERVE = 4096;

/** An account made for a test, with one key. */
export interface TestAccount {
  id: AccountId;
  name: string;
  key: string;
  keyId: string;
}

/** Both fakes behind a gateway with priced routes, and helpers to make accounts and watch settlement. */
export interface BillingRig {
  openAIFake: FakeOpenAISupplier;
  anthropicFake: FakeAnthropicSupplier;
  gateway: TestGateway;
  /** Creates an account with `credits` micro-units, its own limits, and one key (with optional key limits). */
  account(
    name: string,
    options?: { credits?: number; rpm?: number; tpm?: number; keyRpm?: number; keyTpm?: number; email?: string },
  ): Promise<TestAccount>;
  /** Another key for an existing account. */
  key(account: TestAccount, limits?: { rpm?: number; tpm?: number }): Promise<{ key: string; keyId: string }>;
  /** Resolves once the gateway has finished `count` requests in all (each metered, and its credit settled). */
  finished(count: number): Promise<void>;
  /** How many requests the gateway has finished so far. */
  finishedCount(): number;
  /** Every canary made so far. */
  canaries: string[];
  canary(label: string): string;
  /** POSTs JSON to the gateway with `key`; `signal` aborts it. */
  post(
    path: string,
    key: string,
    body: unknown,
    init?: { signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<Response>;
  /** Every metadata record, written now. */
  records(): Promise<MetadataRecord[]>;
}

const TIMEOUTS = { first_byte_ms: 10_000, idle_ms: 10_000, connect_ms: 1000, total_ms: 20_000 };

/** Starts both fakes and a gateway with priced routes; `limits` and `billing` go to its config as they are. */
export async function startBillingRig(
  options: { limits?: Record<string, number>; env?: Record<string, string>; metering?: Record<string, number> } = {},
): Promise<BillingRig> {
  const openAIFake = await startFakeOpenAISupplier();
  const anthropicFake = await startFakeAnthropicSupplier();
  const gateway = await startTestGateway({
    config: {
      suppliers: [
        ...fakeSupplierEntries({ openai: openAIFake.url, anthropic: anthropicFake.url }, TIMEOUTS),
        { id: "demo", type: "demo", zdr: true },
      ],
      models: [
        { id: BILLED.gpt, routes: [{ supplier: "fake-openai", model: "upstream-gpt", price: PRICE }] },
        { id: BILLED.claude, routes: [{ supplier: "fake-anthropic", model: "upstream-claude", price: PRICE }] },
        { id: BILLED.free, routes: [{ supplier: "demo", model: "lethe-demo" }] },
      ],
      // one attempt and a breaker that never opens: each request sees exactly what its fake did
      routing: { max_attempts: 1, breaker: { failure_threshold: 1_000_000 } },
      billing: { default_output_reserve_tokens: DEFAULT_OUTPUT_RESERVE },
      limits: options.limits ?? { rpm: 1_000_000, tpm: 1_000_000_000_000 },
      ...(options.metering !== undefined && { metering: options.metering }),
    },
    env: { FAKE_OPENAI_KEY: "sk-fake-openai-0123456789", FAKE_ANTHROPIC_KEY: "sk-ant-fake-0123456789", ...options.env },
    credits: 0,
  });
  const store = gateway.running.gateway.store;
  const hasher = new KeyHasher(await loadServerSecret(gateway.dataDir, null));

  // every finished request passes through the meter, in the same tick as its settlement
  const meter = gateway.running.gateway.meter;
  const record = meter.record.bind(meter);
  const finishedEvents = new EventEmitter();
  let finishedCount = 0;
  meter.record = (entry) => {
    record(entry);
    finishedCount++;
    finishedEvents.emit("finished");
  };

  const canaries: string[] = [];
  const keyFor = async (accountId: AccountId, limits: { rpm?: number; tpm?: number } = {}) => {
    const { key, record: keyRecord } = await issueKey(store, hasher, accountId, null, {
      rpm: limits.rpm ?? null,
      tpm: limits.tpm ?? null,
    });
    return { key, keyId: keyRecord.id };
  };
  return {
    openAIFake,
    anthropicFake,
    gateway,
    async account(name, settings = {}) {
      const created = await store.createAccount({
        name,
        rpm: settings.rpm ?? null,
        tpm: settings.tpm ?? null,
        email: settings.email ?? null,
      });
      if ((settings.credits ?? 0) !== 0) await store.ledger.credit(created.id, settings.credits ?? 0, "top_up");
      const { key, keyId } = await keyFor(created.id, { rpm: settings.keyRpm, tpm: settings.keyTpm });
      return { id: created.id, name, key, keyId };
    },
    key: (account, limits) => keyFor(account.id, limits),
    async finished(count) {
      while (finishedCount < count) await once(finishedEvents, "finished");
    },
    finishedCount: () => finishedCount,
    canaries,
    canary(label) {
      const canary = makeCanary(label);
      canaries.push(canary);
      return canary;
    },
    post(path, key, body, init = {}) {
      return fetch(`${gateway.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...init.headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
        ...(init.signal !== undefined && { signal: init.signal }),
      });
    },
    records: () => gateway.records(),
  };
}

/** Closes the gateway (flushing metadata and charges) and both fakes, then scans for every canary. */
export async function closeBillingRig(rig: BillingRig, texts: Record<string, string> = {}): Promise<CanaryHit[]> {
  const metrics = await fetch(`${rig.gateway.url}/metrics`).then((response) => response.text());
  await rig.gateway.close();
  await rig.openAIFake.close();
  await rig.anthropicFake.close();
  return findCanaries(rig.canaries, {
    dataDir: rig.gateway.dataDir,
    texts: { log: rig.gateway.logText(), metrics, ...texts },
  });
}
