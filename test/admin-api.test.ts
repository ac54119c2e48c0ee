import { connect } from "node:net";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintApiKey, OPERATOR_TOKEN_PREFIX } from "../src/keys/api-key.js";
import { BILLED, type BillingRig, closeBillingRig, startBillingRig } from "./support/billing-rig.js";
import { findCanaries } from "./support/canary.js";
import { runCli } from "./support/run-cli.js";

interface AdminResponse {
  status: number;
  body: Record<string, unknown> & { error?: { code: string; param: string | null; message: string; type: string } };
  text: string;
  headers: Headers;
}

describe("the admin API under /admin/v1", () => {
  let rig: BillingRig;
  let token: string;
  let operatorId: string;
  let createOutput: string;

  const admin = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = { authorization: `Bearer ${token}` },
  ): Promise<AdminResponse> => {
    const response = await fetch(`${rig.gateway.url}/admin/v1${path}`, {
      method,
      headers: { ...(body !== undefined && { "content-type": "application/json" }), ...headers },
      ...(body !== undefined && { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: text === "" ? {} : (JSON.parse(text) as AdminResponse["body"]),
      text,
      headers: response.headers,
    };
  };
  const events = () => rig.gateway.running.gateway.store.operators.recentEvents(10_000);

  beforeAll(async () => {
    rig = await startBillingRig();
    const created = await runCli(["operators", "create", "ops-alice"], { LETHE_DATA_DIR: rig.gateway.dataDir });
    expect(created.code).toBe(0);
    createOutput = created.out;
    token = /token:\s+(\S+)/.exec(created.out)?.[1] ?? "";
    operatorId = /operator id:\s+(\S+)/.exec(created.out)?.[1] ?? "";
  });

  afterAll(async () => {
    // the operator token is stored only as its hash; no canary of any rejected input is anywhere
    expect(await closeBillingRig(rig, { cli: createOutput.replace(token, "") })).toEqual([]);
    expect(
      await findCanaries([token], { dataDir: rig.gateway.dataDir, texts: { log: rig.gateway.logText() } }),
    ).toEqual([]);
  });

  it("mints an operator token with `lethe operators create`, shown once, and refuses a second operator of that name", async () => {
    expect(token.startsWith(OPERATOR_TOKEN_PREFIX)).toBe(true);
    expect(createOutput).toMatch(/cannot show it again/);
    const again = await runCli(["operators", "create", "ops-alice"], { LETHE_DATA_DIR: rig.gateway.dataDir });
    expect(again.code).toBe(2);
    expect(again.err).toBe(
      "lethe: operator 'ops-alice' already exists (lethe operators rotate ops-alice gives it a new token)",
    );
    expect(again.out).toBe("");
    const badName = await runCli(["operators", "create", "no spaces"], { LETHE_DATA_DIR: rig.gateway.dataDir });
    expect(badName.code).toBe(2);
  });

  it("revokes an operator's token with `lethe operators revoke`, effective on the next admin request", async () => {
    const env = { LETHE_DATA_DIR: rig.gateway.dataDir };
    const created = await runCli(["operators", "create", "ops-leaving"], env);
    const leaving = created.out.match(new RegExp(`${OPERATOR_TOKEN_PREFIX}[0-9A-Za-z]+`))?.[0] as string;
    const asLeaving = { authorization: `Bearer ${leaving}` };
    expect((await admin("GET", "/accounts", undefined, asLeaving)).status).toBe(200);
    const revoked = await runCli(["operators", "revoke", "ops-leaving"], env);
    expect(revoked.code).toBe(0);
    expect((await admin("GET", "/accounts", undefined, asLeaving)).status).toBe(401);
    // the other operators' tokens are untouched; a second revoke has nothing to do
    expect((await admin("GET", "/accounts")).status).toBe(200);
    const again = await runCli(["operators", "revoke", "ops-leaving"], env);
    expect(again.code).toBe(2);
    expect(again.err).toBe("lethe: no active operator named 'ops-leaving'");
  });

  it.each([
    ["no credentials", {}],
    ["a customer key as Bearer", { authorization: `Bearer ${mintApiKey()}` }],
    ["a customer key as x-api-key", { "x-api-key": mintApiKey() }],
    ["a malformed token", { authorization: "Bearer not-a-token" }],
    ["a well-formed token nobody holds", { authorization: `Bearer ${mintApiKey(OPERATOR_TOKEN_PREFIX)}` }],
  ])("refuses %s with 401", async (_what, headers) => {
    const before = (await events()).length;
    const response = await admin("GET", "/accounts", undefined, headers);
    expect(response.status).toBe(401);
    expect(response.body.error).toMatchObject({ code: "LETHE_INVALID_OPERATOR_TOKEN", type: "authentication_error" });
    expect((await events()).length).toBe(before);
  });

  it("refuses a valid customer key of a real account on every admin route", async () => {
    const customer = await rig.account("customer-at-admin", { credits: 1e6 });
    for (const [method, path] of [
      ["GET", "/accounts"],
      ["POST", "/accounts"],
      ["GET", "/accounts/customer-at-admin/credits"],
      ["POST", "/accounts/customer-at-admin/credits"],
      ["DELETE", `/keys/${customer.keyId}`],
      ["GET", "/accounts/customer-at-admin/export"],
    ] as const) {
      const response = await admin(method, path, method === "POST" ? { amount: "1" } : undefined, {
        authorization: `Bearer ${customer.key}`,
      });
      expect(response.status, `${method} ${path}`).toBe(401);
    }
  });

  it("creates, lists, reads and updates accounts, writing an audit event for each change", async () => {
    const created = await admin("POST", "/accounts", {
      name: "acme",
      email: "billing@acme.example",
      rpm: 120,
      tpm: 50_000,
      credits: "12.50",
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      name: "acme",
      email: "billing@acme.example",
      rpm: 120,
      tpm: 50_000,
      balance: "12.500000",
    });
    const id = created.body.id as string;
    expect(id).toMatch(/^acct_[0-9a-z]{20}$/);

    const duplicate = await admin("POST", "/accounts", { name: "acme" });
    expect(duplicate.status).toBe(409);
    expect(duplicate.body.error?.code).toBe("LETHE_CONFLICT");

    const list = await admin("GET", "/accounts");
    expect(list.status).toBe(200);
    expect((list.body.data as { name: string }[]).map((account) => account.name)).toContain("acme");

    const read = await admin("GET", "/accounts/acme");
    expect(read.body).toEqual(created.body);

    const updated = await admin("PATCH", "/accounts/acme", { rpm: 7, tpm: null });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ rpm: 7, tpm: null });
    // a limit change applies to the account's very next request
    const key = await admin("POST", "/accounts/acme/keys", {});
    const response = await rig.post("/v1/chat/completions", key.body.key as string, {
      model: BILLED.gpt,
      max_tokens: 5,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-ratelimit-limit-requests")).toBe("7");

    const audit = (await events()).filter((event) => event.account_id === id);
    expect(audit.map((event) => event.action).sort()).toEqual(["account_create", "account_update", "key_create"]);
    for (const event of audit) {
      expect(event.operator_id).toBe(operatorId);
      expect(Math.abs(event.ts - Date.now())).toBeLessThan(60_000);
    }
    expect(audit.find((event) => event.action === "account_create")?.amount_micros).toBe(12_500_000);
  });

  it("sets whether an account requires ZDR, at creation and later; its next request follows", async () => {
    const created = await admin("POST", "/accounts", { name: "lenient", zdr_required: false });
    expect(created.status).toBe(201);
    expect(created.body.zdr_required).toBe(false);
    expect((await admin("GET", "/accounts/acme")).body.zdr_required).toBe(true);
    const key = (await admin("POST", "/accounts/lenient/keys", {})).body.key as string;
    const ask = () =>
      rig.post("/v1/chat/completions", key, { model: BILLED.free, messages: [{ role: "user", content: "hi" }] });
    expect((await ask()).headers.get("x-lethe-zdr")).toBe("off");

    const strict = await admin("PATCH", "/accounts/lenient", { zdr_required: true });
    expect(strict.body.zdr_required).toBe(true);
    // the cached view of the key is dropped with the change
    expect((await ask()).headers.get("x-lethe-zdr")).toBe("enforced");

    const wrongType = await admin("PATCH", "/accounts/lenient", { zdr_required: "no" });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.error?.param).toBe("zdr_required");
  });

  it("creates, lists and revokes keys; a revoked key stops working on the next request", async () => {
    await admin("POST", "/accounts", { name: "keyed", credits: "1" });
    const created = await admin("POST", "/accounts/keyed/keys", { label: "ci runner", rpm: 30 });
    expect(created.status).toBe(201);
    const key = created.body.key as string;
    expect(key).toMatch(/^sk-lethe-/);
    expect(created.body).toMatchObject({ label: "ci runner", display: `sk-lethe-…${key.slice(-4)}` });
    // a whole key (an export's personal data, too) is kept by no cache on the way
    expect(created.headers.get("cache-control")).toBe("no-store");
    const chat = { model: BILLED.gpt, max_tokens: 5, messages: [{ role: "user", content: "hi" }] };
    const served = await rig.post("/v1/chat/completions", key, chat);
    expect(served.status).toBe(200);
    // the key's own limit is under its account's
    expect(served.headers.get("x-ratelimit-limit-requests")).toBe("30");

    const listed = await admin("GET", "/accounts/keyed/keys");
    expect(listed.text).not.toContain(key);
    expect(listed.body.data).toEqual([
      expect.objectContaining({
        id: created.body.id,
        display: created.body.display,
        label: "ci runner",
        revoked_at: null,
      }),
    ]);

    const revoked = await admin("DELETE", `/keys/${created.body.id as string}`);
    expect(revoked.body).toEqual({ id: created.body.id, revoked: true, already_revoked: false });
    const refused = await rig.post("/v1/chat/completions", key, chat);
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("LETHE_REVOKED_API_KEY");
    const revocations = async () =>
      (await events()).filter((event) => event.action === "key_revoke" && event.key_id === created.body.id).length;
    expect(await revocations()).toBe(1);
    expect((await admin("DELETE", `/keys/${created.body.id as string}`)).body).toMatchObject({ already_revoked: true });
    expect(await revocations()).toBe(1);
    // clients that send a JSON content type on every request send it on a DELETE with no body
    const typed = await admin("DELETE", `/keys/${created.body.id as string}`, undefined, {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
    });
    expect(typed.status).toBe(200);
    expect(typed.body).toMatchObject({ already_revoked: true });
    expect((await admin("DELETE", "/keys/key_00000000000000000000")).status).toBe(404);
    expect((await admin("DELETE", "/keys/not-an-id")).body.error?.code).toBe("LETHE_UNKNOWN_KEY");
    expect((await admin("POST", "/accounts/keyed/keys", { label: "x".repeat(101) })).status).toBe(400);
    expect((await admin("POST", "/accounts/nobody/keys", {})).status).toBe(404);
  });

  it("adds credits and shows the balance and recent ledger entries; a top-up unblocks the account at once", async () => {
    await admin("POST", "/accounts", { name: "payg" });
    const keyed = await admin("POST", "/accounts/payg/keys", {});
    const chat = { model: BILLED.gpt, max_tokens: 10, messages: [{ role: "user", content: "hi" }] };
    expect((await rig.post("/v1/chat/completions", keyed.body.key as string, chat)).status).toBe(402);
    const added = await admin("POST", "/accounts/payg/credits", { amount: "5.25" });
    expect(added).toMatchObject({ status: 200, body: { balance: "5.250000", added: "5.250000" } });
    expect((await rig.post("/v1/chat/completions", keyed.body.key as string, chat)).status).toBe(200);
    await rig.gateway.running.gateway.credits.drain();
    const shown = await admin("GET", "/accounts/payg/credits");
    // the fake's usage: 600 uncached + 400 cached input, 250 output, at 2/1/8 per million
    expect(shown.body.balance).toBe("5.246400");
    expect(shown.body.entries).toEqual([
      expect.objectContaining({ kind: "debit", amount: "-0.003600", request_id: expect.stringMatching(/^req_/) }),
      expect.objectContaining({ kind: "top_up", amount: "5.250000", request_id: null }),
    ]);
    const audit = (await events()).find((event) => event.action === "credits_add");
    expect(audit).toMatchObject({ operator_id: operatorId, amount_micros: 5_250_000 });
  });

  it.each([
    ["negative", { amount: "-1" }],
    ["zero", { amount: "0" }],
    ["zero with decimals", { amount: "0.000000" }],
    ["non-numeric", { amount: "ten" }],
    ["over-precise", { amount: "1.1234567" }],
    ["exponent", { amount: "1e3" }],
    ["comma decimal", { amount: "12,50" }],
    ["a JSON number", { amount: 5 }],
    ["too large to hold exactly", { amount: "999999999999" }],
    ["missing", {}],
    ["an extra field", { amount: "1", note: "x" }],
  ])("refuses a %s credit amount with a 400 and writes nothing", async (_what, body) => {
    const before = (await events()).length;
    const response = await admin("POST", "/accounts/payg/credits", body);
    expect(response.status).toBe(400);
    expect(response.body.error).toMatchObject({ code: "LETHE_INVALID_REQUEST", type: "invalid_request_error" });
    expect(response.body.error?.message).not.toBe("");
    expect((await events()).length).toBe(before);
    expect((await admin("GET", "/accounts/payg")).body.balance).toBe("5.246400");
  });

  it.each([
    ["a bad name", { name: "has spaces" }, "name"],
    ["an over-long name", { name: "a".repeat(65) }, "name"],
    ["a bad email", { name: "ok-name", email: "not-an-email" }, "email"],
    // a right-to-left override would print the address reversed wherever it is shown
    ["an email with an invisible format character", { name: "ok-name", email: "a\u202emoc.live@x.com" }, "email"],
    ["a negative rpm", { name: "ok-name", rpm: -1 }, "rpm"],
    ["a fractional tpm", { name: "ok-name", tpm: 1.5 }, "tpm"],
    ["a string rpm", { name: "ok-name", rpm: "10" }, "rpm"],
    ["over-precise credits", { name: "ok-name", credits: "0.0000001" }, "credits"],
    ["negative credits", { name: "ok-name", credits: "-3" }, "credits"],
    ["an unknown field", { name: "ok-name", owner: "x" }, null],
  ])("refuses an account with %s, naming the field", async (_what, body, param) => {
    const response = await admin("POST", "/accounts", body);
    expect(response.status).toBe(400);
    expect(response.body.error).toMatchObject({ code: "LETHE_INVALID_REQUEST", param });
    expect((await admin("GET", "/accounts/ok-name")).status).toBe(404);
  });

  it("names the accepted fields, never the unknown one, when a body has a field the route does not take", async () => {
    const response = await admin("POST", "/accounts", { name: "ok-name", ownerCanary: "x" });
    expect(response.status).toBe(400);
    expect(response.body.error?.message).toBe(
      "The request body has a field that is not accepted here; the accepted fields are: name, email, rpm, tpm, credits, zdr_required.",
    );
    expect(response.text).not.toContain("ownerCanary");
  });

  it("refuses malformed JSON, non-object bodies and bad limit updates", async () => {
    for (const body of ['{"name": "broken"', "[]", '"acme"', "null", "42"]) {
      const response = await admin("POST", "/accounts", body);
      expect(response.status, body).toBe(400);
      expect(["LETHE_INVALID_JSON", "LETHE_INVALID_REQUEST"]).toContain(response.body.error?.code);
    }
    const empty = await admin("POST", "/accounts", "");
    expect(empty.status).toBe(400);
    // a compressed body is named as such (415), as on the inference endpoints, not read as garbage JSON
    const gzipped = await admin("POST", "/accounts", gzipSync(JSON.stringify({ name: "zipped" })).toString("latin1"), {
      authorization: `Bearer ${token}`,
      "content-encoding": "gzip",
    });
    expect([gzipped.status, gzipped.body.error?.code]).toEqual([415, "LETHE_UNSUPPORTED_ENCODING"]);
    // limits both stores can hold (32-bit), and nothing PostgreSQL would refuse as a 500
    for (const body of [{ rpm: 0 }, { rpm: -5 }, { tpm: "many" }, { zdr: false }, { tpm: 5_000_000_000 }]) {
      const response = await admin("PATCH", "/accounts/acme", body);
      expect(response.status, JSON.stringify(body)).toBe(400);
    }
    for (const body of [{ label: "nul\u0000byte" }, { label: "escape\u001b[31m" }, { rpm: 2 ** 31 }]) {
      const response = await admin("POST", "/accounts/acme/keys", body);
      expect(response.status, JSON.stringify(body)).toBe(400);
    }
    for (const body of [{ name: "deleted-acct_x" }, { name: "mail", email: "a\u0000@b" }]) {
      const response = await admin("POST", "/accounts", body);
      expect(response.status, JSON.stringify(body)).toBe(400);
    }
    // messages say what is expected, in words, not as a pattern or a vague bound
    expect((await admin("PATCH", "/accounts/acme", { rpm: 0 })).body.error?.message).toBe(
      "'rpm' must be greater than 0.",
    );
    expect((await admin("POST", "/accounts", { name: "mail", email: "not-an-address" })).body.error?.message).toBe(
      "'email' has the wrong format: an email address, like ops@example.com.",
    );
  });

  it("tells no one without a token which admin paths exist: 401 first, 404 for an operator", async () => {
    for (const [method, path] of [
      ["GET", "/nope"],
      ["PUT", "/accounts"],
      ["GET", "/accounts/ghost/nothing"],
    ] as const) {
      const anonymous = await admin(method, path, undefined, {});
      expect(anonymous.status, `${method} ${path}`).toBe(401);
      expect(anonymous.body.error?.code).toBe("LETHE_INVALID_OPERATOR_TOKEN");
      const operator = await admin(method, path);
      expect(operator.status, `${method} ${path}`).toBe(404);
      expect(operator.body.error?.code).toBe("LETHE_NOT_FOUND");
    }
  });

  it("answers 404 for unknown accounts on every account route", async () => {
    for (const [method, path, body] of [
      ["GET", "/accounts/ghost", undefined],
      ["PATCH", "/accounts/ghost", { rpm: 1 }],
      ["DELETE", "/accounts/ghost", undefined],
      ["GET", "/accounts/ghost/export", undefined],
      ["GET", "/accounts/ghost/keys", undefined],
      ["POST", "/accounts/ghost/credits", { amount: "1" }],
      ["GET", "/accounts/ghost/credits", undefined],
      ["GET", "/accounts/ghost/usage", undefined],
    ] as const) {
      const response = await admin(method, path, body);
      expect(response.status, `${method} ${path}`).toBe(404);
      expect(response.body.error?.code).toBe("LETHE_UNKNOWN_ACCOUNT");
    }
  });

  it("reports any account's usage, with the usage API's grouping and validation", async () => {
    await rig.gateway.running.gateway.meter.drain();
    const report = await admin("GET", "/accounts/payg/usage?group_by=model");
    expect(report.status).toBe(200);
    expect(report.body).toMatchObject({ object: "usage", group_by: "model" });
    expect(report.body.data).toEqual([
      expect.objectContaining({ group: BILLED.gpt, requests: 2, errors: 1, cost_micros: 3600, cost: "0.003600" }),
    ]);
    const bad = await admin("GET", "/accounts/payg/usage?group_by=hour");
    expect(bad.status).toBe(400);
    expect(bad.body.error?.param).toBe("group_by");
  });

  it("keeps nothing of rejected admin input: canaries in bad fields are neither stored nor logged", async () => {
    const bodies = [
      { name: `bad name ${rig.canary("adminname")}` },
      { name: "ok-canary", email: rig.canary("adminemail") },
      { name: "ok-canary", [rig.canary("adminfield")]: rig.canary("adminvalue") },
      { name: "ok-canary", credits: rig.canary("admincredits") },
    ];
    for (const body of bodies) expect((await admin("POST", "/accounts", body)).status).toBe(400);
    const amount = await admin("POST", "/accounts/payg/credits", { amount: rig.canary("adminamount") });
    expect(amount.status).toBe(400);
    expect(amount.text).not.toContain(rig.canaries.at(-1));
    const malformed = await admin("POST", "/accounts", `{"name": "${rig.canary("adminjson")}"`);
    expect(malformed.status).toBe(400);
    const patch = await admin("PATCH", "/accounts/payg", { rpm: rig.canary("adminpatch") });
    expect(patch.status).toBe(400);
    const ghost = await admin("GET", `/accounts/${rig.canary("adminpath")}`);
    expect(ghost.status).toBe(404);
    const query = await admin("GET", `/accounts/payg/usage?from=${rig.canary("adminquery")}`);
    expect(query.status).toBe(400);
    // the scan itself runs when the rig closes (data dir, log, metrics)
  });

  it("logs no internal failure for an operator's upload that is cut off", async () => {
    const port = Number(new URL(rig.gateway.url).port);
    const before = rig.gateway.logText().split("request_failed").length;
    await new Promise<void>((resolve, reject) => {
      const socket = connect(port, "127.0.0.1", () => {
        socket.write(
          `POST /admin/v1/accounts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\n` +
            'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"name":',
        );
        // once the body is being read, the client goes
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 200);
      });
      socket.once("error", reject);
    });
    // the gateway still serves, and logged nothing of it as its own failure (the cut-off
    // body fails its request on the next turns of the event loop: give those a moment)
    expect((await fetch(`${rig.gateway.url}/healthz`)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(rig.gateway.logText().split("request_failed").length).toBe(before);
  });

  it("throttles an address that keeps presenting bad operator tokens", async () => {
    // the rig allows 20 failures a minute per address (the default)
    let status = 401;
    let attempts = 0;
    while (status === 401 && attempts < 50) {
      attempts++;
      status = (await admin("GET", "/accounts", undefined, { authorization: "Bearer guess" })).status;
    }
    expect(status).toBe(429);
    // at most the window's 20 failures (earlier tests here already spent some of them)
    expect(attempts).toBeLessThanOrEqual(21);
    // customer routes share the throttle: this address is refused there too, until the window passes
    const customer = await fetch(`${rig.gateway.baseURL}/models`, {
      headers: { authorization: `Bearer ${mintApiKey()}` },
    });
    expect(customer.status).toBe(429);
  });
});
