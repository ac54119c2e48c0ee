import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountId, KeyId } from "../src/config/ids.js";
import { runRetention } from "../src/retention/retention-job.js";
import { BILLED, type BillingRig, closeBillingRig, startBillingRig } from "./support/billing-rig.js";
import { findCanaries } from "./support/canary.js";
import { metadataRecord } from "./support/metadata-records.js";
import { runCli } from "./support/run-cli.js";

interface Export {
  exported_at: string;
  account: {
    id: string;
    name: string;
    email: string | null;
    rpm: number | null;
    tpm: number | null;
    zdr_required: boolean;
  };
  keys: { id: string; display: string; label: string | null; revoked_at: string | null }[];
  balance: string;
  ledger: { kind: string; amount: string; request_id: string | null }[];
  usage: { day: string; model: string; requests: number; input_tokens: number; cost: string }[];
  usage_aggregates: { day: string; model: string; requests: number }[];
}

/** Personal data made unique per run, so a scan of the data dir finds exactly these values. */
function personal(label: string) {
  const tag = randomBytes(6).toString("hex");
  return {
    name: `${label}-${tag}`,
    email: `billing-${tag}@${label}.example`,
    label: `laptop of ${label} ${tag}`,
  };
}

describe("account data rights: export and delete", () => {
  let rig: BillingRig;
  let env: Record<string, string>;
  let token: string;

  /** Creates an account with email, credit, two labelled keys and some billed traffic (canaries in its content). */
  async function populatedAccount(label: string) {
    const data = personal(label);
    const store = rig.gateway.running.gateway.store;
    const created = await runCli(
      ["accounts", "create", data.name, "--email", data.email, "--credits", "25", "--rpm", "90"],
      env,
    );
    expect(created.code).toBe(0);
    const account = (await store.findAccountByName(data.name)) as NonNullable<
      Awaited<ReturnType<typeof store.findAccountByName>>
    >;
    const keys: { key: string; id: string }[] = [];
    for (const suffix of ["one", "two"]) {
      const issued = await runCli(
        ["keys", "create", "--account", data.name, "--label", `${data.label} ${suffix}`],
        env,
      );
      keys.push({ key: /key:\s+(\S+)/.exec(issued.out)?.[1] ?? "", id: /key id:\s+(\S+)/.exec(issued.out)?.[1] ?? "" });
    }
    const requestIds: string[] = [];
    for (const [index, key] of keys.entries()) {
      const response =
        index === 0
          ? await rig.post("/v1/chat/completions", key.key, {
              model: BILLED.gpt,
              max_tokens: 50,
              messages: [{ role: "user", content: rig.canary(`${label}openai`) }],
            })
          : await rig.post(
              "/v1/messages",
              key.key,
              {
                model: BILLED.claude,
                max_tokens: 50,
                stream: true,
                messages: [{ role: "user", content: rig.canary(`${label}anthropic`) }],
              },
              { headers: { "anthropic-version": "2023-06-01" } },
            );
      expect(response.status).toBe(200);
      await response.text();
      requestIds.push(response.headers.get("x-request-id") ?? "");
    }
    // an old day of usage already rolled into aggregates
    await store.insertMetadata([
      metadataRecord({ account: account.id, key_id: keys[0]?.id, ts: Date.now() - 120 * 86_400_000 }),
    ]);
    await runRetention(store, { metadataDays: 90, aggregateDays: 400 }, Date.now());
    await rig.gateway.running.gateway.meter.drain();
    await rig.gateway.running.gateway.credits.drain();
    return { ...data, id: account.id, keys, requestIds };
  }

  beforeAll(async () => {
    rig = await startBillingRig();
    env = { LETHE_DATA_DIR: rig.gateway.dataDir };
    const operator = await runCli(["operators", "create", "data-officer"], env);
    token = /token:\s+(\S+)/.exec(operator.out)?.[1] ?? "";
  });

  afterAll(async () => {
    expect(await closeBillingRig(rig)).toEqual([]);
  });

  const admin = async (method: string, path: string) => {
    const response = await fetch(`${rig.gateway.url}/admin/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
    });
    return { status: response.status, text: await response.text() };
  };

  it("exports an account's personal and billing data as JSON, usage aggregates included, and no content", async () => {
    const account = await populatedAccount("exported");
    const result = await runCli(["accounts", "export", account.name], env);
    expect(result.code).toBe(0);
    const exported = JSON.parse(result.out) as Export;
    expect(exported.account).toMatchObject({
      id: account.id,
      name: account.name,
      email: account.email,
      rpm: 90,
      zdr_required: true,
    });
    expect(exported.keys.map((key) => key.label).sort()).toEqual([`${account.label} one`, `${account.label} two`]);
    // keys only in their display form: the export is not a way to recover a key
    for (const key of account.keys) {
      expect(result.out).not.toContain(key.key);
      expect(exported.keys.find((entry) => entry.id === key.id)?.display).toBe(`sk-lethe-…${key.key.slice(-4)}`);
    }
    // the ledger: the top-up and one debit per billed request; the balance is their sum
    expect(exported.ledger.filter((entry) => entry.kind === "top_up").map((entry) => entry.amount)).toEqual([
      "25.000000",
    ]);
    const debits = exported.ledger.filter((entry) => entry.kind === "debit");
    expect(debits.map((entry) => entry.request_id).sort()).toEqual([...account.requestIds].sort());
    const sum = exported.ledger.reduce((total, entry) => total + Math.round(Number(entry.amount) * 1e6), 0);
    expect(Math.round(Number(exported.balance) * 1e6)).toBe(sum);
    expect(exported.usage.reduce((total, row) => total + row.requests, 0)).toBe(2);
    // every field snake_case, as in the rest of the export and the APIs
    for (const row of exported.usage) {
      expect(Object.keys(row).every((field) => /^[a-z_]+$/.test(field))).toBe(true);
      expect(row.input_tokens).toBeGreaterThan(0);
    }
    expect(exported.usage_aggregates).toHaveLength(1);
    expect(exported.usage_aggregates[0]).toMatchObject({ model: BILLED.gpt, requests: 1 });
    // content never reaches an export: it was never kept
    expect(await findCanaries(rig.canaries, { texts: { export: result.out } })).toEqual([]);

    // the admin API exports the same document, and audits that it did
    const viaAdmin = await admin("GET", `/accounts/${account.name}/export`);
    expect(viaAdmin.status).toBe(200);
    const { exported_at: _adminAt, ...adminDocument } = JSON.parse(viaAdmin.text) as Export;
    const { exported_at: _cliAt, ...cliDocument } = exported;
    expect(adminDocument).toEqual(cliDocument);
    const events = await rig.gateway.running.gateway.store.operators.recentEvents(100);
    expect(events.find((event) => event.action === "account_export" && event.account_id === account.id)).toBeDefined();
  });

  it("deletes an account from the CLI: keys stop at once, personal fields are erased, metadata is unlinked, the ledger stays", async () => {
    const account = await populatedAccount("erased");
    const store = rig.gateway.running.gateway.store;
    const ledgerBefore = await store.ledger.recent(account.id, 1000);
    const balanceBefore = await store.ledger.balance(account.id);

    const result = await runCli(["accounts", "delete", account.name], env);
    expect(result.code).toBe(0);
    expect(result.out).toContain(account.id);

    // the running gateway refuses both keys on their very next request (the CLI is another connection)
    for (const key of account.keys) {
      const refused = await rig.post("/v1/chat/completions", key.key, {
        model: BILLED.gpt,
        max_tokens: 5,
        messages: [{ role: "user", content: "hi" }],
      });
      expect(refused.status).toBe(401);
    }
    const erased = await store.findAccountById(account.id as AccountId);
    expect(erased).toMatchObject({ name: `deleted-${account.id}`, email: null });
    expect(erased?.deletedAt).not.toBeNull();
    const keys = await store.listKeys(account.id as AccountId);
    expect(keys.every((key) => key.revokedAt !== null && key.label === null)).toBe(true);

    // metadata stays for the operator's totals, linked to nobody
    const records = await rig.records();
    for (const requestId of account.requestIds) {
      expect(records.find((record) => record.request_id === requestId)).toMatchObject({ account: null, key_id: null });
    }
    expect(records.some((record) => record.account === account.id)).toBe(false);
    expect(await store.usage.dailyRows(account.id as AccountId, "0000-00-00", "9999-99-99")).toEqual([]);
    // the ledger is a legal record: kept whole, under the pseudonymous id only
    expect(await store.ledger.recent(account.id, 1000)).toEqual(ledgerBefore);
    expect(await store.ledger.sum(account.id)).toBe(balanceBefore);

    // gone for every account operation; the name is free again
    expect((await runCli(["accounts", "export", account.name], env)).err).toBe(
      `lethe: no account named '${account.name}'`,
    );
    expect((await runCli(["accounts", "delete", account.name], env)).code).toBe(2);
    expect((await runCli(["credits", "show", "--account", account.name], env)).code).toBe(2);
    expect((await admin("GET", `/accounts/${account.name}`)).status).toBe(404);
    expect((await admin("GET", "/accounts")).text).not.toContain(account.id);
    const reused = await runCli(["accounts", "create", account.name], env);
    expect(reused.code).toBe(0);
    expect(reused.out).not.toContain(account.id);

    // nothing personal is left anywhere in the data dir, WAL included, even while the gateway runs
    const leftovers = await findCanaries([account.email, account.label], { dataDir: rig.gateway.dataDir });
    expect(leftovers).toEqual([]);
  });

  it("deletes an account through the admin API, revoking its keys at once and auditing the deletion", async () => {
    const account = await populatedAccount("admindeleted");
    const deleted = await admin("DELETE", `/accounts/${account.name}`);
    expect(deleted.status).toBe(200);
    expect(JSON.parse(deleted.text)).toEqual({ deleted: true, id: account.id });
    const refused = await rig.post("/v1/chat/completions", account.keys[0]?.key ?? "", {
      model: BILLED.gpt,
      max_tokens: 5,
      messages: [{ role: "user", content: "hi" }],
    });
    expect(refused.status).toBe(401);
    const store = rig.gateway.running.gateway.store;
    expect(await store.findKeyById(account.keys[1]?.id as KeyId)).toMatchObject({ label: null });
    const events = await store.operators.recentEvents(100);
    const event = events.find((entry) => entry.action === "account_delete" && entry.account_id === account.id);
    expect(event).toBeDefined();
    // audit events name ids only: no name, email or label
    expect(
      await findCanaries([account.name, account.email, account.label], { texts: { audit: JSON.stringify(events) } }),
    ).toEqual([]);
    expect((await admin("DELETE", `/accounts/${account.name}`)).status).toBe(404);
    expect((await admin("GET", `/accounts/${account.name}/export`)).status).toBe(404);
  });

  it("unlinks a request that finished just before the delete, and what is written for the account after it", async () => {
    const store = rig.gateway.running.gateway.store;
    expect((await runCli(["accounts", "create", "hasty", "--credits", "5"], env)).code).toBe(0);
    const issued = await runCli(["keys", "create", "--account", "hasty"], env);
    const key = /key:\s+(\S+)/.exec(issued.out)?.[1] ?? "";
    const id = ((await store.findAccountByName("hasty")) as { id: AccountId }).id;
    // answered, its record still in the meter's batch, when the delete arrives
    const response = await rig.post("/v1/chat/completions", key, {
      model: BILLED.gpt,
      max_tokens: 5,
      messages: [{ role: "user", content: rig.canary("hasty") }],
    });
    expect(response.status).toBe(200);
    await response.text();
    expect((await admin("DELETE", "/accounts/hasty")).status).toBe(200);
    await rig.gateway.running.gateway.meter.drain();
    const record = (await rig.records()).find((entry) => entry.request_id === response.headers.get("x-request-id"));
    expect(record).toMatchObject({ account: null, key_id: null });

    // another process's batch, written after the erase (a request that was in flight there)
    await store.insertMetadata([metadataRecord({ account: id, ts: Date.now() })]);
    expect((await rig.records()).some((entry) => entry.account === id)).toBe(true);
    const result = await runRetention(store, { metadataDays: 90, aggregateDays: 400 }, Date.now());
    expect(result.unlinked).toBeGreaterThanOrEqual(1);
    expect((await rig.records()).some((entry) => entry.account === id)).toBe(false);
  });

  it.each([
    [["accounts", "create", "spoofed", "--email", "a\u202emoc.live@x.com"], /--email must be an email address/],
    [["accounts", "export"], /usage: lethe accounts export NAME/],
    [["accounts", "delete"], /usage: lethe accounts delete NAME/],
    [["accounts", "delete", "two", "names"], /usage: lethe accounts delete NAME/],
    [["accounts", "export", "not a name"], /account names use letters/],
    [["accounts", "delete", "nobody-here"], /no account named 'nobody-here'/],
  ])("refuses `lethe %s` with one line and exit 2", async (args, message) => {
    const result = await runCli(args as string[], env);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
    expect(result.err.split("\n")).toHaveLength(1);
  });
});
