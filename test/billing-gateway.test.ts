import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Reservation } from "../src/billing/credit-guard.js";
import type { AccountId } from "../src/config/ids.js";
import { costMicros } from "../src/metering/cost.js";
import { countTextsTokens, MAX_COUNTED_CHARACTERS } from "../src/metering/count-tokens.js";
import { DOCUMENT_INPUT_TOKENS_BOUND, IMAGE_INPUT_TOKENS_BOUND } from "../src/metering/media-tokens.js";
import type { MetadataRecord } from "../src/metering/metadata-record.js";
import {
  BILLED,
  type BillingRig,
  closeBillingRig,
  DEFAULT_OUTPUT_RESERVE,
  ROUTE_PRICE,
  startBillingRig,
  type TestAccount,
} from "./support/billing-rig.js";
import { anthropicBehaviour } from "./support/fake-anthropic-supplier.js";
import { behaviour } from "./support/fake-openai-supplier.js";
import { seededRandom } from "./support/seeded-random.js";

/** What the metered tokens of a record cost on the rig's priced routes. */
function tokensCost(record: MetadataRecord): number {
  return costMicros(
    {
      input: record.input_tokens,
      output: record.output_tokens,
      cachedInput: record.cached_input_tokens,
      cacheWrite: 0,
      reasoning: record.reasoning_tokens,
    },
    ROUTE_PRICE,
  );
}

/** The ledger's view of an account once every settled charge is written. */
async function ledgerOf(rig: BillingRig, accountId: AccountId) {
  const gateway = rig.gateway.running.gateway;
  await gateway.credits.drain();
  const entries = await gateway.store.ledger.recent(accountId, 1_000_000);
  return {
    balance: await gateway.store.ledger.balance(accountId),
    sum: await gateway.store.ledger.sum(accountId),
    available: await gateway.credits.available(accountId),
    debits: new Map(
      entries.filter((entry) => entry.kind === "debit").map((entry) => [entry.requestId, -entry.amountMicros]),
    ),
  };
}

const OUTCOMES = [
  "ok-json",
  "ok-stream",
  "upstream-500",
  "upstream-400",
  "stream-reset",
  "stream-garbage",
  "abort-before-answer",
  "abort-mid-stream",
] as const;
type Outcome = (typeof OUTCOMES)[number];

describe("billing through the gateway", () => {
  let rig: BillingRig;
  let openai: (key: string) => OpenAI;
  let anthropic: (key: string) => Anthropic;

  beforeAll(async () => {
    rig = await startBillingRig();
    openai = (key) => new OpenAI({ apiKey: key, baseURL: rig.gateway.baseURL, maxRetries: 0 });
    anthropic = (key) => new Anthropic({ apiKey: key, baseURL: rig.gateway.url, maxRetries: 0 });
  });

  afterAll(async () => {
    const hits = await closeBillingRig(rig);
    expect(hits).toEqual([]);
  });

  it("settles 300 random requests (success, error, abort, stream cut short) so ledger sum = balance = credit − metered cost", async () => {
    const random = seededRandom(5_0505);
    const initial = 1_000_000_000;
    const account = await rig.account("property", { credits: initial });
    const startedWith = rig.finishedCount();
    const seen = new Map<Outcome, number>();
    const total = 300;
    for (let index = 0; index < total; index++) {
      const outcome = random.pick(OUTCOMES);
      seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
      // aborts need the fake OpenAI supplier's slow behaviours; otherwise either supplier, either surface
      const model =
        outcome.startsWith("abort") || outcome.startsWith("stream-")
          ? BILLED.gpt
          : random.pick([BILLED.gpt, BILLED.claude]);
      const anthropicClient = random.chance(0.5);
      const stream =
        outcome === "ok-json" || outcome === "upstream-500" || outcome === "upstream-400"
          ? random.chance(0.3)
          : outcome !== "abort-before-answer" || random.chance(0.5);
      const content = `${rig.canary("billed")} please answer`;
      const maxTokens = random.int(1, 3000);
      const body = anthropicClient
        ? { model, max_tokens: maxTokens, stream, messages: [{ role: "user", content }] }
        : {
            model,
            max_tokens: maxTokens,
            stream,
            ...(stream && random.chance(0.5) && { stream_options: { include_usage: true } }),
            messages: [{ role: "user", content }],
          };
      const path = anthropicClient ? "/v1/messages" : "/v1/chat/completions";

      if (model === BILLED.claude) {
        const usage = {
          input: random.int(1, 4000),
          output: random.int(0, 3000),
          cacheRead: random.int(0, 500),
          cacheCreation: random.int(0, 200),
          thinking: 0,
        };
        rig.anthropicFake.enqueue(
          outcome === "ok-json" || outcome === "ok-stream"
            ? anthropicBehaviour.ok({ usage })
            : anthropicBehaviour.status(outcome === "upstream-500" ? 500 : 400),
        );
      } else {
        const prompt = random.int(1, 4000);
        const completion = random.int(0, 3000);
        const usage = { prompt, completion, cached: random.int(0, prompt), reasoning: random.int(0, completion) };
        rig.openAIFake.enqueue(
          {
            "ok-json": behaviour.ok({ usage }),
            "ok-stream": behaviour.ok({ usage }),
            "upstream-500": behaviour.status(500),
            "upstream-400": behaviour.status(400),
            "stream-reset": behaviour.resetMidStream(random.int(1, 4)),
            "stream-garbage": behaviour.garbageChunk(random.int(1, 4)),
            "abort-before-answer": behaviour.slowFirstByte(60_000),
            "abort-mid-stream": behaviour.hangMidStream(random.int(1, 3)),
          }[outcome],
        );
      }

      const controller = new AbortController();
      if (outcome === "abort-before-answer") {
        const arrived = rig.openAIFake.nextRequest();
        const response = rig.post(path, account.key, body, { signal: controller.signal }).catch(() => null);
        await arrived;
        controller.abort();
        await response;
      } else if (outcome === "abort-mid-stream") {
        const response = await rig.post(path, account.key, { ...body, stream: true }, { signal: controller.signal });
        expect(response.status).toBe(200);
        const reader = (response.body as ReadableStream<Uint8Array>).getReader();
        await reader.read();
        controller.abort();
        await reader.read().catch(() => null);
      } else {
        const response = await rig.post(path, account.key, body);
        await response.text();
        if (outcome.startsWith("ok") || outcome.startsWith("stream")) expect(response.status).toBe(200);
        else expect(response.status).toBeGreaterThanOrEqual(400);
      }
    }
    await rig.finished(startedWith + total);

    for (const outcome of OUTCOMES) expect(seen.get(outcome) ?? 0).toBeGreaterThan(15);
    const records = (await rig.records()).filter((record) => record.account === account.id);
    expect(records).toHaveLength(total);
    const ledger = await ledgerOf(rig, account.id);
    let metered = 0;
    for (const record of records) {
      // each request is billed exactly what its metered tokens cost, once
      expect(record.cost_micros).toBe(tokensCost(record));
      expect(ledger.debits.get(record.request_id) ?? 0).toBe(record.cost_micros);
      metered += record.cost_micros;
    }
    expect(ledger.debits.size).toBe(records.filter((record) => record.cost_micros > 0).length);
    expect(ledger.balance).toBe(initial - metered);
    expect(ledger.sum).toBe(ledger.balance);
    // nothing is left reserved once every request has ended
    expect(ledger.available).toBe(ledger.balance);
    // what a supplier produced before a failure is billed: cut streams and mid-stream aborts cost something
    const billedFailures = records.filter(
      (record) =>
        (record.error_code === "LETHE_CLIENT_CLOSED" || record.error_code?.startsWith("LETHE_UPSTREAM")) &&
        record.cost_micros > 0,
    );
    expect(billedFailures.length).toBeGreaterThan(20);
    expect(records.some((record) => record.error_code === "LETHE_CLIENT_CLOSED" && record.streamed)).toBe(true);
  });

  it("charges the input of a request its client abandoned while the supplier worked on it", async () => {
    const account = await rig.account("abandoning", { credits: 1_000_000_000 });
    const startedWith = rig.finishedCount();
    const body = { model: BILLED.gpt, max_tokens: 50, messages: [{ role: "user", content: rig.canary("abandoned") }] };
    for (const stream of [false, true]) {
      rig.openAIFake.enqueue(behaviour.slowFirstByte(60_000));
      const arrived = rig.openAIFake.nextRequest();
      const controller = new AbortController();
      const response = rig.post(
        "/v1/chat/completions",
        account.key,
        { ...body, stream },
        { signal: controller.signal },
      );
      await arrived;
      controller.abort();
      await response.catch(() => null);
    }
    await rig.finished(startedWith + 2);
    const records = (await rig.records()).filter((record) => record.account === account.id);
    const ledger = await ledgerOf(rig, account.id);
    expect(records).toHaveLength(2);
    for (const record of records) {
      // the supplier read the prompt (and bills the operator for it): counted by Lethe, billed, marked estimated
      expect(record).toMatchObject({ error_code: "LETHE_CLIENT_CLOSED", output_tokens: 0, tokens_estimated: true });
      expect(record.input_tokens).toBeGreaterThan(0);
      expect(record.cost_micros).toBe(tokensCost(record));
      expect(record.cost_micros).toBeGreaterThan(0);
      expect(ledger.debits.get(record.request_id)).toBe(record.cost_micros);
    }
  });

  it("counts the tokens itself when a supplier reports counts no model could reach, rather than drain the account", async () => {
    const credits = 1_000_000_000;
    const account = await rig.account("absurd-usage", { credits });
    const startedWith = rig.finishedCount();
    // -1 wrapped to 32 bits, and a float past any integer: billed as reported, either would
    // leave the account thousands (or 1e294) below zero, for good
    rig.openAIFake.setBehaviour(
      behaviour.ok({ usage: { prompt: 4294967295, completion: 1e300, cached: 0, reasoning: 0 } }),
    );
    rig.anthropicFake.setBehaviour(
      anthropicBehaviour.ok({ usage: { input: 4294967295, output: 12, cacheRead: 0, cacheCreation: 0, thinking: 0 } }),
    );
    try {
      for (const model of [BILLED.gpt, BILLED.claude]) {
        for (const stream of [false, true]) {
          const path = model === BILLED.gpt ? "/v1/chat/completions" : "/v1/messages";
          const response = await rig.post(path, account.key, {
            model,
            max_tokens: 50,
            stream,
            messages: [{ role: "user", content: "four short words" }],
          });
          expect(response.status).toBe(200);
          await response.arrayBuffer();
        }
      }
      await rig.finished(startedWith + 4);
    } finally {
      rig.openAIFake.setBehaviour(behaviour.ok());
      rig.anthropicFake.setBehaviour(anthropicBehaviour.ok());
    }
    const records = (await rig.records()).filter((record) => record.account === account.id);
    expect(records).toHaveLength(4);
    for (const record of records) {
      expect(record.tokens_estimated).toBe(true);
      expect(record.input_tokens).toBeGreaterThan(0);
      expect(record.input_tokens).toBeLessThan(100);
      expect(record.output_tokens).toBeLessThan(100);
      expect(record.cost_micros).toBe(tokensCost(record));
    }
    const ledger = await ledgerOf(rig, account.id);
    const charged = records.reduce((sum, record) => sum + record.cost_micros, 0);
    expect(ledger.balance).toBe(credits - charged);
    expect(charged).toBeLessThan(credits / 1000);
  });

  it("bills the output an Anthropic stream relayed before it was cut, not message_start's placeholder count", async () => {
    const account = await rig.account("cut-anthropic-streams", { credits: 100_000_000 });
    // the fake echoes the prompt a word per delta: 40 words, of which the cut streams relay 24
    const words = Array.from({ length: 40 }, (_, index) => `word${index}`).join(" ");
    const relayedDeltas = 24;
    const cuts = [
      anthropicBehaviour.resetMidStream(3 + relayedDeltas),
      anthropicBehaviour.errorEvent(3 + relayedDeltas),
    ];
    const startedWith = rig.finishedCount();
    let sent = 0;
    for (const path of ["/v1/messages", "/v1/chat/completions"]) {
      for (const cut of cuts) {
        rig.anthropicFake.enqueue(cut);
        const content = `${rig.canary("cut-stream")} ${words}`;
        const response = await rig.post(path, account.key, {
          model: BILLED.claude,
          max_tokens: 1000,
          stream: true,
          messages: [{ role: "user", content }],
        });
        expect(response.status).toBe(200);
        await response.text().catch(() => "");
        sent++;
      }
    }
    await rig.finished(startedWith + sent);
    const records = (await rig.records()).filter((record) => record.account === account.id);
    expect(records).toHaveLength(sent);
    for (const record of records) {
      expect(record.streamed).toBe(true);
      // the supplier's own input count stays (500 + 400 cache reads + 100 cache writes), not an estimate
      expect(record.input_tokens).toBe(1000);
      expect(record.cached_input_tokens).toBe(400);
      // message_start says 1; what was relayed is at least a token a word
      expect(record.output_tokens).toBeGreaterThanOrEqual(relayedDeltas);
      expect(record.cost_micros).toBe(tokensCost(record));
    }
  });

  it.each([1, 4])(
    "never overdraws an account with credit for 50 when 200 requests arrive at once and the supplier respects max_tokens (n = %i)",
    async (n) => {
      // the supplier reports what the request was reserved for at most: 5 input tokens, max_tokens output per choice
      const usage = { prompt: 5, completion: 50 * n, cached: 0, reasoning: 0 };
      const cost = costMicros({ input: 5, output: 50 * n, cachedInput: 0, cacheWrite: 0, reasoning: 0 }, ROUTE_PRICE);
      const account = await rig.account(`burst-${n}`, { credits: 50 * cost });
      rig.openAIFake.setBehaviour(behaviour.ok({ usage }));
      const startedWith = rig.finishedCount();
      const suppliedBefore = rig.openAIFake.requests.length;
      const responses = await Promise.all(
        Array.from({ length: 200 }, async () => {
          const response = await rig.post("/v1/chat/completions", account.key, {
            model: BILLED.gpt,
            max_tokens: 50,
            ...(n > 1 && { n }),
            messages: [{ role: "user", content: "hi" }],
          });
          return {
            status: response.status,
            body: (await response.json()) as { error?: { type: string; code: string } },
          };
        }),
      );
      await rig.finished(startedWith + 200);
      rig.openAIFake.setBehaviour(behaviour.ok());

      const served = responses.filter((response) => response.status === 200).length;
      const refused = responses.filter((response) => response.status === 402);
      expect(served + refused.length).toBe(200);
      expect(served).toBeGreaterThan(0);
      expect(served).toBeLessThanOrEqual(50);
      for (const response of refused) {
        expect(response.body.error).toMatchObject({ type: "insufficient_quota", code: "LETHE_INSUFFICIENT_CREDIT" });
      }
      // a refused request is refused before anything is forwarded
      expect(rig.openAIFake.requests.length - suppliedBefore).toBe(served);
      const ledger = await ledgerOf(rig, account.id);
      expect(ledger.balance).toBe(50 * cost - served * cost);
      expect(ledger.balance).toBeGreaterThanOrEqual(0);
      expect(ledger.sum).toBe(ledger.balance);
      expect(ledger.available).toBe(ledger.balance);
    },
  );

  it("bounds the overdraw by what requests in flight cost beyond their reservation when a supplier ignores max_tokens", async () => {
    // the supplier produces 4× what was asked for: every request costs more than it reserved
    const usage = { prompt: 5, completion: 200, cached: 0, reasoning: 0 };
    const cost = costMicros({ input: 5, output: 200, cachedInput: 0, cacheWrite: 0, reasoning: 0 }, ROUTE_PRICE);
    const guard = rig.gateway.running.gateway.credits;
    const account = await rig.account("overrun", { credits: 50 * cost });
    // watch the guard: how many of this account's requests are in flight at each admission
    const reserve = guard.reserve.bind(guard);
    const settle = guard.settle.bind(guard);
    let inFlight = 0;
    let worstOverrunInFlight = 0;
    guard.reserve = async (accountId, upperBound, exact) => {
      const reservation = await reserve(accountId, upperBound, exact);
      if (accountId === account.id) {
        inFlight++;
        worstOverrunInFlight = Math.max(worstOverrunInFlight, inFlight * (cost - reservation.amountMicros));
      }
      return reservation;
    };
    guard.settle = (reservation: Reservation, costMicrosSettled, requestId) => {
      if (reservation.accountId === account.id && !reservation.settled) inFlight--;
      settle(reservation, costMicrosSettled, requestId);
    };
    rig.openAIFake.setBehaviour(behaviour.ok({ usage }));
    const startedWith = rig.finishedCount();
    try {
      const statuses = await Promise.all(
        Array.from({ length: 200 }, async () => {
          const response = await rig.post("/v1/chat/completions", account.key, {
            model: BILLED.gpt,
            max_tokens: 50,
            messages: [{ role: "user", content: "hi" }],
          });
          await response.arrayBuffer();
          return response.status;
        }),
      );
      await rig.finished(startedWith + 200);
      expect(statuses.filter((status) => status !== 200 && status !== 402)).toEqual([]);
      const served = statuses.filter((status) => status === 200).length;
      const ledger = await ledgerOf(rig, account.id);
      expect(ledger.balance).toBe(50 * cost - served * cost);
      expect(worstOverrunInFlight).toBeGreaterThan(0);
      // the documented bound (docs/billing.md): below zero by at most the in-flight overrun
      expect(ledger.balance).toBeGreaterThanOrEqual(-worstOverrunInFlight);
      expect(ledger.sum).toBe(ledger.balance);
      expect(ledger.available).toBe(ledger.balance);
      expect(inFlight).toBe(0);
    } finally {
      guard.reserve = reserve;
      guard.settle = settle;
      rig.openAIFake.setBehaviour(behaviour.ok());
    }
  });

  it("answers 402 in each caller's format, through the official SDKs, before forwarding anything", async () => {
    const account = await rig.account("broke");
    const suppliedBefore = rig.openAIFake.requests.length + rig.anthropicFake.requests.length;
    const openAIError = await openai(account.key)
      .chat.completions.create({ model: BILLED.gpt, max_tokens: 10, messages: [{ role: "user", content: "hi" }] })
      .catch((error: unknown) => error);
    expect(openAIError).toBeInstanceOf(OpenAI.APIError);
    expect(openAIError).toMatchObject({ status: 402, type: "insufficient_quota", code: "LETHE_INSUFFICIENT_CREDIT" });
    const anthropicError = await anthropic(account.key)
      .messages.create({ model: BILLED.claude, max_tokens: 10, messages: [{ role: "user", content: "hi" }] })
      .catch((error: unknown) => error);
    expect(anthropicError).toBeInstanceOf(Anthropic.APIError);
    expect(anthropicError).toMatchObject({ status: 402, error: { type: "error", error: { type: "billing_error" } } });
    expect(rig.openAIFake.requests.length + rig.anthropicFake.requests.length).toBe(suppliedBefore);
    // a free model still answers an account without credit
    const free = await openai(account.key).chat.completions.create({
      model: BILLED.free,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(free.choices[0]?.message.content).toContain("Lethe demo model");
  });

  it("reserves max_tokens when set, and the configured cap when not", async () => {
    const body = { model: BILLED.gpt, messages: [{ role: "user", content: "hi" }] };
    // enough for 100 output tokens, far from enough for the default reservation of 4096
    const account: TestAccount = await rig.account("capped", { credits: 2_000 });
    expect(DEFAULT_OUTPUT_RESERVE * ROUTE_PRICE.outputPerMtok).toBeGreaterThan(2_000);
    rig.openAIFake.enqueue(behaviour.ok({ usage: { prompt: 3, completion: 5, cached: 0, reasoning: 0 } }));
    const small = await rig.post("/v1/chat/completions", account.key, { ...body, max_tokens: 100 });
    expect(small.status).toBe(200);
    const uncapped = await rig.post("/v1/chat/completions", account.key, body);
    expect(uncapped.status).toBe(402);
    const completionTokens = await rig.post("/v1/chat/completions", account.key, {
      ...body,
      max_completion_tokens: 100,
    });
    expect(completionTokens.status).toBe(200);
    expect(rig.openAIFake.clearQueue()).toBe(0);
  });

  it("reserves an image sent by URL at the most a supplier counts one, though it is a few bytes of the body", async () => {
    const account = await rig.account("pictured", { credits: 2_000 });
    const text = { type: "text", text: "what is this?" };
    const image = { type: "image_url", image_url: { url: "https://example.invalid/cat.png" } };
    const body = (content: object[]) => ({
      model: BILLED.gpt,
      max_tokens: 10,
      messages: [{ role: "user", content }],
    });
    // the text alone fits the 2,000 micro-units; one image is held at 2,700 input tokens (5,400)
    expect(IMAGE_INPUT_TOKENS_BOUND * ROUTE_PRICE.inputPerMtok).toBeGreaterThan(2_000);
    const refused = await rig.post("/v1/chat/completions", account.key, body([text, image]));
    expect(refused.status).toBe(402);
    rig.openAIFake.enqueue(behaviour.ok({ usage: { prompt: 3, completion: 5, cached: 0, reasoning: 0 } }));
    expect((await rig.post("/v1/chat/completions", account.key, body([text]))).status).toBe(200);
    expect(rig.openAIFake.clearQueue()).toBe(0);
  });

  it("reserves a document sent by URL at the most a supplier reads of one", async () => {
    const account = await rig.account("documented", { credits: 100_000 });
    const text = { type: "text", text: "summarise this" };
    const document = { type: "document", source: { type: "url", url: "https://example.invalid/report.pdf" } };
    const body = (content: object[]) => ({
      model: BILLED.claude,
      max_tokens: 10,
      messages: [{ role: "user", content }],
    });
    expect(DOCUMENT_INPUT_TOKENS_BOUND * ROUTE_PRICE.inputPerMtok).toBeGreaterThan(100_000);
    expect((await rig.post("/v1/messages", account.key, body([text, document]))).status).toBe(402);
    rig.anthropicFake.enqueue(anthropicBehaviour.ok());
    expect((await rig.post("/v1/messages", account.key, body([text]))).status).toBe(200);
    expect(rig.anthropicFake.clearQueue()).toBe(0);
  });

  it("holds an inline PDF at the longest a supplier reads, whatever the file says of its pages, and settles at its count", async () => {
    const body = (pdf: Buffer) => ({
      model: BILLED.gpt,
      max_tokens: 10,
      messages: [
        {
          role: "user",
          content: [
            {
              type: "file",
              file: { filename: "a.pdf", file_data: `data:application/pdf;base64,${pdf.toString("base64")}` },
            },
            { type: "text", text: "summarise" },
          ],
        },
      ],
    });
    // one page by its page objects, in a few bytes: a file can say so of a hundred pages
    const onePage = Buffer.from("%PDF-1.4\n<< /Type /Pages /Count 1 >>\n<< /Type /Page >>\n%%EOF");
    const held = DOCUMENT_INPUT_TOKENS_BOUND * ROUTE_PRICE.inputPerMtok;
    const short = await rig.account("pdf-short", { credits: held - 1 });
    expect((await rig.post("/v1/chat/completions", short.key, body(onePage))).status).toBe(402);
    expect((await ledgerOf(rig, short.id)).balance).toBe(held - 1);
    // with the hold available it is served, and charged what the supplier counted
    const enough = await rig.account("pdf-enough", { credits: held + 1_000 });
    rig.openAIFake.enqueue(behaviour.ok({ usage: { prompt: 1_600, completion: 5, cached: 0, reasoning: 0 } }));
    expect((await rig.post("/v1/chat/completions", enough.key, body(onePage))).status).toBe(200);
    expect((await ledgerOf(rig, enough.id)).balance).toBe(held + 1_000 - (1_600 * 2 + 5 * 8));
    expect(rig.openAIFake.clearQueue()).toBe(0);
  });

  it("counts a prompt past what the tokenizer reads at a token a byte when credit is tight, not four characters a token", async () => {
    // 400,000 CJK characters: o200k (and a supplier) count about one token each; the
    // tokenizer reads the first 262,144, and four characters a token for the rest would
    // hold 296,614 tokens where a supplier bills 400,006: admitted, an overdraw
    const prompt = "漢".repeat(400_000);
    expect(countTextsTokens([prompt.slice(0, MAX_COUNTED_CHARACTERS)])).toBe(MAX_COUNTED_CHARACTERS);
    const account = await rig.account("cjk", { credits: 700_000 });
    const body = { model: BILLED.gpt, max_tokens: 10, messages: [{ role: "user", content: prompt }] };
    const refused = await rig.post("/v1/chat/completions", account.key, body);
    expect(refused.status).toBe(402);
    expect(rig.openAIFake.clearQueue()).toBe(0);
  });

  it("sees a top-up from the admin side at once: 402, then 200", async () => {
    const account = await rig.account("topped-up");
    const body = { model: BILLED.gpt, max_tokens: 10, messages: [{ role: "user", content: "hi" }] };
    expect((await rig.post("/v1/chat/completions", account.key, body)).status).toBe(402);
    const gateway = rig.gateway.running.gateway;
    await gateway.store.ledger.credit(account.id, 1_000_000, "top_up");
    gateway.credits.forget(account.id);
    expect((await rig.post("/v1/chat/completions", account.key, body)).status).toBe(200);
  });
});
