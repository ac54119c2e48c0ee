import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CONFIG_FILE, resolveConfig } from "../src/config/load-config.js";
import { silentLog } from "../src/logging/event-log.js";
import { METADATA_COLUMNS } from "../src/metering/metadata-record.js";
import { startGateway } from "../src/server/start-gateway.js";
import { type SignedStatement, verifyStatement } from "../src/zdr/retention-statement.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import { runCli } from "./support/run-cli.js";

describe("the signed retention statement", () => {
  let gateway: TestGateway;
  let signed: SignedStatement;

  beforeAll(async () => {
    gateway = await startTestGateway({
      config: {
        suppliers: [
          { id: "demo", type: "demo", zdr: true },
          { id: "keeps-data", type: "openai", base_url: "http://127.0.0.1:9/v1", zdr: false },
        ],
        models: [
          { id: "lethe-demo", routes: [{ supplier: "demo", model: "lethe-demo" }] },
          { id: "retained", routes: [{ supplier: "keeps-data", model: "m" }] },
        ],
        retention: { metadata_days: 30, aggregate_days: 200 },
      },
    });
    const response = await fetch(`${gateway.baseURL}/zdr`);
    expect(response.status).toBe(200);
    signed = (await response.json()) as SignedStatement;
  });

  afterAll(async () => {
    await gateway.close();
    await removeDataDir(gateway);
  });

  it("is public, generated from the running config, and lists what is kept and for how long", () => {
    const statement = signed.statement;
    expect(statement.content_retained).toBe("none");
    expect(statement.metadata.fields).toEqual([...METADATA_COLUMNS]);
    expect(statement.metadata.retention_days).toBe(30);
    expect(statement.aggregates.account_unlinked_after_days).toBe(200);
    expect(statement.response_cache).toEqual({ enabled: false, window_seconds: 0 });
    expect(statement.ledger.per_request_debits_days).toBe(statement.metadata.retention_days + 1);
    expect(statement.suppliers).toEqual([
      { id: "demo", type: "demo", zdr: true },
      { id: "keeps-data", type: "openai", zdr: false },
    ]);
    expect(statement.models).toEqual([
      { id: "lethe-demo", zdr_eligible: true },
      { id: "retained", zdr_eligible: false },
    ]);
    // not `lethe serve --dev`: the process hardening is on
    expect(statement.development_run).toBe(false);
    expect(statement.config_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(statement.lethe_version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("verifies under the key served at /v1/zdr/key, and fails once tampered with", async () => {
    const key = (await (await fetch(`${gateway.baseURL}/zdr/key`)).json()) as { public_key: string };
    expect(key.public_key).toBe(signed.public_key);
    expect(verifyStatement(signed, key.public_key)).toBe(true);
    const tampered = structuredClone(signed);
    tampered.statement.metadata.retention_days = 3650;
    expect(verifyStatement(tampered, key.public_key)).toBe(false);
    const reordered = {
      ...signed,
      statement: { ...signed.statement, suppliers: [...signed.statement.suppliers].reverse() },
    };
    expect(verifyStatement(reordered, key.public_key)).toBe(false);
    expect(verifyStatement(signed, Buffer.alloc(32, 7).toString("base64"))).toBe(false);
  });

  it("signs with the same key when another gateway opens the same data dir", async () => {
    const config = resolveConfig(DEFAULT_CONFIG_FILE, { LETHE_DATA_DIR: gateway.dataDir, LETHE_PORT: "0" }, null);
    const second = await startGateway(config, { log: silentLog, retention: false });
    try {
      const served = (await (await fetch(`${second.url}/v1/zdr/key`)).json()) as { public_key: string };
      expect(served.public_key).toBe(signed.public_key);
    } finally {
      await second.close();
    }
  });

  it("lethe zdr verify checks it, pins a key, and explains failures in one line", async () => {
    const valid = await runCli(["zdr", "verify", gateway.url], {});
    expect(valid.code).toBe(0);
    expect(valid.out).toMatch(/^VALID: statement from http:\/\/127\.0\.0\.1:\d+ signed by ed25519 key /);
    expect(valid.out).not.toContain("development run");
    expect(valid.out).toContain("metadata kept 30 days");

    const pinned = await runCli(["zdr", "verify", `${gateway.baseURL}/zdr`, "--key", signed.public_key], {});
    expect(pinned.code).toBe(0);
    const wrongKey = await runCli(["zdr", "verify", gateway.url, "--key", Buffer.alloc(32, 1).toString("base64")], {});
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.out).toMatch(/^INVALID: /);
    // a key that is not a key at all is a usage error, not a forged statement
    // checked before anything is fetched: an unreachable URL does not hide the typo
    const notAKey = await runCli(["zdr", "verify", "http://127.0.0.1:9", "--key", "notakey"], {});
    expect(notAKey).toMatchObject({
      code: 2,
      err: "lethe: --key must be an ed25519 public key in base64 (44 characters), as GET /v1/zdr/key serves it",
    });

    const unreachable = await runCli(["zdr", "verify", "http://127.0.0.1:9"], {});
    expect(unreachable).toMatchObject({ code: 2, err: "lethe: cannot reach http://127.0.0.1:9/v1/zdr" });
    const notUrl = await runCli(["zdr", "verify", "not a url"], {});
    expect(notUrl.code).toBe(2);
    const notStatement = await runCli(["zdr", "verify", `${gateway.url}/healthz`], {});
    expect(notStatement.code).toBe(2);
  });
});
