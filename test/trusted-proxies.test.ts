import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, DEFAULT_CONFIG_FILE, resolveConfig } from "../src/config/load-config.js";
import { ClientAddresses } from "../src/http/client-address.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

/**
 * Behind a reverse proxy every connection comes from the proxy. With the proxy listed in
 * `server.trusted_proxies`, the auth-failure throttle counts each client its
 * X-Forwarded-For names; without it, the header is ignored and cannot be used to escape.
 */

describe("ClientAddresses", () => {
  const clients = new ClientAddresses(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
  const forwardedFor = (value: string | string[]) => ({ "x-forwarded-for": value });
  /** Each call as from a new connection, unless one is given. */
  const clientOf = (peer: string, headers: Record<string, string | string[]>, connection = {}) =>
    clients.clientOf(connection, peer, headers);

  it("believes X-Forwarded-For only from a trusted peer, read from the right", () => {
    expect(clientOf("127.0.0.1", forwardedFor("203.0.113.7"))).toBe("203.0.113.7");
    // a client's own entries left of the first untrusted hop are never believed
    expect(clientOf("127.0.0.1", forwardedFor("198.51.100.1, 203.0.113.7"))).toBe("203.0.113.7");
    // trusted hops (a load balancer behind the proxy) are skipped
    expect(clientOf("10.1.2.3", forwardedFor("203.0.113.7, 10.9.9.9,10.0.0.5"))).toBe("203.0.113.7");
    // an untrusted peer's header is ignored
    expect(clientOf("192.0.2.10", forwardedFor("203.0.113.7"))).toBe("192.0.2.10");
    // nothing forwarded, or only trusted hops: the left-most address known
    expect(clientOf("127.0.0.1", {})).toBe("127.0.0.1");
    expect(clientOf("127.0.0.1", forwardedFor(""))).toBe("127.0.0.1");
    expect(clientOf("127.0.0.1", forwardedFor(" , "))).toBe("127.0.0.1");
    expect(clientOf("127.0.0.1", forwardedFor("10.0.0.7, 10.0.0.8"))).toBe("10.0.0.7");
    // repeated headers arrive joined, or as a list from other callers
    expect(clientOf("127.0.0.1", forwardedFor(["198.51.100.1", "203.0.113.7"]))).toBe("203.0.113.7");
    // a hop that is not an address is not trusted: it is the client (only ever hashed)
    expect(clientOf("127.0.0.1", forwardedFor("garbage"))).toBe("garbage");
  });

  it("drops the port some proxies add, so one client's connections count as one", () => {
    expect(clientOf("127.0.0.1", forwardedFor("203.0.113.7:51234"))).toBe("203.0.113.7");
    expect(clientOf("127.0.0.1", forwardedFor("[2001:db8::7]:443"))).toBe("2001:db8::7");
    expect(clientOf("127.0.0.1", forwardedFor("2001:db8::7"))).toBe("2001:db8::7");
    // a trusted inner hop written with its port is still recognised
    expect(clientOf("127.0.0.1", forwardedFor("203.0.113.7, 10.0.0.5:8443"))).toBe("203.0.113.7");
  });

  it("matches IPv4 peers of a dual-stack socket and IPv6 ranges", () => {
    const header = forwardedFor("203.0.113.7");
    expect(clientOf("::ffff:127.0.0.1", header)).toBe("203.0.113.7");
    expect(clientOf("::FFFF:10.20.30.40", header)).toBe("203.0.113.7");
    expect(clientOf("::ffff:192.0.2.1", header)).toBe("::ffff:192.0.2.1");
    expect(clientOf("fd12:3456::1", header)).toBe("203.0.113.7");
    expect(clientOf("2001:db8::1", header)).toBe("2001:db8::1");
    expect(clientOf("127.0.0.2", header)).toBe("127.0.0.2");
    expect(clientOf("", header)).toBe("");
    expect(clientOf("fd00::1", forwardedFor("2001:db8::7"))).toBe("2001:db8::7");
  });

  it("decides once per connection whether its peer is a proxy, and reads each request's header", () => {
    const connection = {};
    expect(clientOf("127.0.0.1", forwardedFor("203.0.113.7"), connection)).toBe("203.0.113.7");
    expect(clientOf("127.0.0.1", forwardedFor("198.51.100.9"), connection)).toBe("198.51.100.9");
    // the decision is the connection's: a connection's peer does not change
    expect(clientOf("192.0.2.10", forwardedFor("198.51.100.9"), connection)).toBe("198.51.100.9");
  });

  it("trusts nobody by default", () => {
    const none = new ClientAddresses([]);
    expect(none.clientOf({}, "127.0.0.1", forwardedFor("203.0.113.7"))).toBe("127.0.0.1");
  });

  it("refuses a config entry that is neither an address nor a CIDR range, with the reason", () => {
    const withProxies = (trusted_proxies: unknown) =>
      resolveConfig({ server: { trusted_proxies } }, { LETHE_DATA_DIR: "/tmp/unused" }, null);
    expect(withProxies(["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"]).server.trustedProxies).toHaveLength(4);
    expect(resolveConfig({}, { LETHE_DATA_DIR: "/tmp/unused" }, null).server.trustedProxies).toEqual([]);
    for (const bad of ["localhost", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/8/8", "fd00::/129", "1.2.3.4/-1", ""]) {
      expect(() => withProxies([bad])).toThrow(ConfigError);
      expect(() => withProxies([bad])).toThrow(/server\.trusted_proxies.*IP address or a CIDR range/);
    }
    expect(() => withProxies("127.0.0.1")).toThrow(ConfigError);
  });
});

describe("the auth-failure throttle behind a trusted proxy", () => {
  let gateway: TestGateway;
  const canaries: string[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway({
      config: {
        ...(DEFAULT_CONFIG_FILE as object),
        limits: { auth_failures_per_minute: 2 },
        // the test's own loopback connections play the proxy
        server: { trusted_proxies: ["127.0.0.1"] },
      },
    });
  });

  afterAll(async () => {
    await gateway.close();
    // neither the clients' addresses nor a canary sent as one are kept anywhere
    const addresses = ["203.0.113.7", "198.51.100.9", "192.0.2.44"];
    expect(
      await findCanaries([...addresses, ...canaries], { dataDir: gateway.dataDir, texts: { log: gateway.logText() } }),
    ).toEqual([]);
    await removeDataDir(gateway);
  });

  const chat = (key: string, forwarded: string) =>
    fetch(`${gateway.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-forwarded-for": forwarded },
      body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
    });
  const code = async (response: Response) => ((await response.json()) as { error: { code: string } }).error.code;

  it("throttles the client a scanner forwarded for, and no other client of the same proxy", async () => {
    for (let attempt = 0; attempt < 2; attempt++)
      expect((await chat("sk-lethe-wrong", "203.0.113.7")).status).toBe(401);
    const throttled = await chat(gateway.key, "203.0.113.7");
    expect(throttled.status).toBe(429);
    expect(await code(throttled)).toBe("LETHE_AUTH_THROTTLED");

    // another customer behind the same proxy, on the same kept-alive connections
    expect((await chat(gateway.key, "198.51.100.9")).status).toBe(200);
    const models = await fetch(`${gateway.baseURL}/models`, {
      headers: { authorization: `Bearer ${gateway.key}`, "x-forwarded-for": "198.51.100.9" },
    });
    expect(models.status).toBe(200);

    // the throttled client cannot escape by writing another address in front of its own
    expect((await chat(gateway.key, "198.51.100.9, 203.0.113.7")).status).toBe(429);
    const throttledModels = await fetch(`${gateway.baseURL}/models`, {
      headers: { authorization: `Bearer ${gateway.key}`, "x-forwarded-for": "203.0.113.7" },
    });
    expect(throttledModels.status).toBe(429);
  });

  it("applies the same per-client throttle to operator tokens", async () => {
    const admin = (forwarded: string) =>
      fetch(`${gateway.url}/admin/v1/accounts`, {
        headers: { authorization: "Bearer not-an-operator-token", "x-forwarded-for": forwarded },
      });
    expect((await admin("192.0.2.44")).status).toBe(401);
    expect((await admin("192.0.2.44")).status).toBe(401);
    expect((await admin("192.0.2.44")).status).toBe(429);
    expect((await admin("198.51.100.9")).status).toBe(401);
  });

  it("keeps a forwarded value that is not an address only as a hash", async () => {
    const canary = makeCanary("forwarded-for");
    canaries.push(canary);
    for (let attempt = 0; attempt < 2; attempt++) expect((await chat("sk-lethe-wrong", canary)).status).toBe(401);
    expect((await chat(gateway.key, canary)).status).toBe(429);
    expect((await chat(gateway.key, "198.51.100.9")).status).toBe(200);
  });
});

describe("the auth-failure throttle without trusted proxies", () => {
  it("ignores X-Forwarded-For: a throttled address cannot name another", async () => {
    const gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { auth_failures_per_minute: 2 } },
    });
    try {
      const chat = (key: string, forwarded: string) =>
        fetch(`${gateway.baseURL}/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-forwarded-for": forwarded },
          body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
        });
      for (let attempt = 0; attempt < 2; attempt++)
        expect((await chat("sk-lethe-wrong", "203.0.113.7")).status).toBe(401);
      expect((await chat(gateway.key, "198.51.100.9")).status).toBe(429);
    } finally {
      await gateway.close();
      await removeDataDir(gateway);
    }
  });
});
