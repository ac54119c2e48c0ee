import OpenAI from "openai";
import { Pool } from "undici";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { displayKey, isWellFormedKey, KEY_PREFIX, KeyHasher, mintApiKey } from "../src/keys/api-key.js";
import { Authenticator } from "../src/keys/authenticator.js";
import { DatabaseSilence } from "../src/store/database-silence.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

describe("API keys", () => {
  it("are prefixed, carry a checksum and at least 128 bits of randomness", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const key = mintApiKey();
      expect(key.startsWith(KEY_PREFIX)).toBe(true);
      expect(isWellFormedKey(key)).toBe(true);
      keys.add(key);
    }
    expect(keys.size).toBe(200);
    const key = mintApiKey();
    // 32 base62 characters of randomness: log2(62) * 32 ≈ 190 bits
    expect(key.length - KEY_PREFIX.length - 6).toBe(32);
    // flipping one character breaks the checksum
    const last = key.at(-8) === "a" ? "b" : "a";
    expect(isWellFormedKey(`${key.slice(0, -8)}${last}${key.slice(-7)}`)).toBe(false);
    expect(displayKey(key)).toBe(`${KEY_PREFIX}…${key.slice(-4)}`);
  });

  it("are hashed with HMAC-SHA256 under the server secret", () => {
    const key = mintApiKey();
    const first = new KeyHasher("secret-one-0123456789").hash(key);
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    expect(new KeyHasher("secret-two-0123456789").hash(key)).not.toBe(first);
    expect(KeyHasher.equal(first, new KeyHasher("secret-one-0123456789").hash(key))).toBe(true);
  });
});

describe("authentication on /v1 routes", () => {
  let gateway: TestGateway;
  const canaries: string[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway();
  });

  afterAll(async () => {
    await gateway.close();
    expect(await findCanaries(canaries, { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  });

  async function call(headers: Record<string, string>) {
    const secret = makeCanary("auth");
    canaries.push(secret);
    const response = await fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: secret }] }),
    });
    const body = (await response.json()) as { error?: { code: string } };
    return { status: response.status, code: body.error?.code };
  }

  it("accepts Authorization: Bearer and x-api-key", async () => {
    expect((await call({ authorization: `Bearer ${gateway.key}` })).status).toBe(200);
    expect((await call({ "x-api-key": gateway.key })).status).toBe(200);
  });

  it("rejects a missing, malformed, unknown or mis-checksummed key with 401", async () => {
    expect(await call({})).toEqual({ status: 401, code: "LETHE_MISSING_API_KEY" });
    expect(await call({ authorization: "Basic abc" })).toEqual({ status: 401, code: "LETHE_INVALID_API_KEY" });
    expect(await call({ authorization: "Bearer not-a-key" })).toEqual({ status: 401, code: "LETHE_INVALID_API_KEY" });
    expect(await call({ authorization: `Bearer ${mintApiKey()}` })).toEqual({
      status: 401,
      code: "LETHE_INVALID_API_KEY",
    });
    const leakedCanaryKey = makeCanary("key");
    canaries.push(leakedCanaryKey);
    expect(await call({ authorization: `Bearer ${leakedCanaryKey}` })).toEqual({
      status: 401,
      code: "LETHE_INVALID_API_KEY",
    });
  });

  it("refuses a revoked key on the very next request, also one revoked by another process", async () => {
    const { key, keyId } = await gateway.createKey("revocable");
    const client = new OpenAI({ apiKey: key, baseURL: gateway.baseURL, maxRetries: 0 });
    await client.chat.completions.create({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] });
    // revoke through a second SQLite connection, as the `lethe keys revoke` CLI does
    const { openSqliteStore } = await import("../src/store/sqlite/open-sqlite-store.js");
    const other = await openSqliteStore(gateway.dataDir);
    expect(await other.revokeKey(keyId as never)).toBe(true);
    await other.close();
    const error = await client.chat.completions
      .create({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] })
      .catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe("LETHE_REVOKED_API_KEY");
  });

  it("checks every request's own key on one kept-alive connection, whatever the connection sent before", async () => {
    const { key, keyId } = await gateway.createKey("one-connection");
    const connection = new Pool(gateway.url, { connections: 1, pipelining: 1 });
    const send = async (headers: Record<string, string>) => {
      const response = await connection.request({
        method: "POST",
        path: "/v1/chat/completions",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
      });
      const body = (await response.body.json()) as { error?: { code: string } };
      return { status: response.statusCode, code: body.error?.code };
    };
    try {
      expect((await send({ authorization: `Bearer ${key}` })).status).toBe(200);
      expect(await send({ authorization: `Bearer ${mintApiKey()}` })).toEqual({
        status: 401,
        code: "LETHE_INVALID_API_KEY",
      });
      expect(await send({})).toEqual({ status: 401, code: "LETHE_MISSING_API_KEY" });
      expect((await send({ "x-api-key": key })).status).toBe(200);
      // an ingress's Basic auth beside the key: x-api-key speaks, and is checked each time
      const basic = "Basic dXNlcjpwYXNzd29yZA==";
      expect((await send({ authorization: basic, "x-api-key": key })).status).toBe(200);
      expect(await send({ authorization: basic, "x-api-key": mintApiKey() })).toEqual({
        status: 401,
        code: "LETHE_INVALID_API_KEY",
      });
      expect(await send({ authorization: basic })).toEqual({ status: 401, code: "LETHE_INVALID_API_KEY" });
      expect((await send({ authorization: `Bearer ${key}` })).status).toBe(200);
      const { openSqliteStore } = await import("../src/store/sqlite/open-sqlite-store.js");
      const other = await openSqliteStore(gateway.dataDir);
      expect(await other.revokeKey(keyId as never)).toBe(true);
      await other.close();
      expect(await send({ authorization: `Bearer ${key}` })).toEqual({ status: 401, code: "LETHE_REVOKED_API_KEY" });
    } finally {
      await connection.close();
    }
  });

  it("shares one database look-up between the requests that find a key due for a re-check together", async () => {
    const { store, hasher } = gateway.running.gateway;
    let counter = 0;
    const authenticator = new Authenticator(store, hasher, () => counter);
    const lookUps = vi.spyOn(store, "findKeyByHash");
    try {
      const headers = { authorization: `Bearer ${gateway.key}` };
      await authenticator.authenticate(headers);
      expect(lookUps).toHaveBeenCalledTimes(1);
      // a change notice: the cached key is checked again, once for all twenty requests
      counter++;
      await Promise.all(Array.from({ length: 20 }, () => authenticator.authenticate(headers)));
      expect(lookUps).toHaveBeenCalledTimes(2);
      // a change while a look-up is on its way needs a look-up of its own (it may be the revocation)
      counter++;
      const first = authenticator.authenticate(headers);
      counter++;
      const second = authenticator.authenticate(headers);
      await Promise.all([first, second]);
      expect(lookUps).toHaveBeenCalledTimes(4);
    } finally {
      lookUps.mockRestore();
    }
  });

  it("while the database is silent, serves cached keys as they are, unless a change was announced since they were cached", async () => {
    const { store, hasher } = gateway.running.gateway;
    const { key, keyId } = await gateway.createKey("silenced");
    // the same store, with a silence of this test's own: a credit hold left unanswered, while
    // the change feed still hears the database
    let counter = 0;
    const silence = new DatabaseSilence(() => counter);
    const silent = Object.create(store, { silence: { value: silence } }) as typeof store;
    const authenticator = new Authenticator(silent, hasher, () => counter, 1);
    const lookUps = vi.spyOn(store, "findKeyByHash");
    try {
      const headers = { authorization: `Bearer ${key}` };
      await authenticator.authenticate(headers);
      silence.noteUnanswered();
      await new Promise((resolve) => setTimeout(resolve, 5));
      // due its re-check by age alone: the database is not asked while it is silent
      await authenticator.authenticate(headers);
      expect(lookUps).toHaveBeenCalledTimes(1);
      // a revocation notice is the database answering: the key is asked about, and refused
      await store.revokeKey(keyId as never);
      counter++;
      await expect(Promise.resolve(authenticator.authenticate(headers))).rejects.toMatchObject({
        code: "LETHE_REVOKED_API_KEY",
      });
      // a change heard after a key was cached but before the silence began (a revocation, and
      // then a hold timed out) is asked about too: only a key cached since is served as it is
      const later = new DatabaseSilence(() => counter);
      later.noteUnanswered();
      expect([later.servesCached(counter - 1), later.servesCached(counter)]).toEqual([false, true]);
      counter++;
      expect(later.servesCached(counter - 1)).toBe(false);
    } finally {
      lookUps.mockRestore();
    }
  });

  it("does not cache what a look-up read before this process revoked the key (SQLite's counter does not move for it)", async () => {
    const { store, hasher } = gateway.running.gateway;
    const { key, keyId } = await gateway.createKey("racing");
    const authenticator = new Authenticator(store, hasher, () => 0);
    const headers = { authorization: `Bearer ${key}` };
    // the look-up reads the key while it is valid, and answers only after the revocation
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const read = store.findKeyByHash.bind(store);
    const slow = vi.spyOn(store, "findKeyByHash").mockImplementationOnce(async (hash) => {
      const found = await read(hash);
      await gate;
      return found;
    });
    try {
      const racing = authenticator.authenticate(headers);
      await store.revokeKey(keyId as never);
      authenticator.invalidate();
      release();
      // that request was let in on what it read; the next one is not
      await racing;
      await expect(Promise.resolve(authenticator.authenticate(headers))).rejects.toMatchObject({
        code: "LETHE_REVOKED_API_KEY",
      });
    } finally {
      slow.mockRestore();
    }
  });

  it("protects GET /v1/models and lists models in OpenAI's shape", async () => {
    const denied = await fetch(`${gateway.baseURL}/models`);
    expect(denied.status).toBe(401);
    const client = new OpenAI({ apiKey: gateway.key, baseURL: gateway.baseURL, maxRetries: 0 });
    const models = [];
    for await (const model of client.models.list()) models.push(model);
    expect(models.map((model) => model.id)).toEqual(["lethe-demo"]);
    expect(models[0]?.object).toBe("model");
  });

  it("serves health and readiness without auth", async () => {
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${gateway.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: "ready" });
  });
});
