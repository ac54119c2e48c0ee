// The metered endpoints are served on Node's own request and response (src/http/metered-call.ts),
// not through Fastify: what Fastify did for them (body limits, framing, routing niceties,
// connection reuse) is checked here over raw sockets, with canaries in every body.
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CONFIG_FILE } from "../src/config/load-config.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

const MAX_BODY_BYTES = 4096;

/** Reads from `socket` until `done(text)` holds or it closes; resolves with what arrived and whether it closed. */
function readUntil(socket: Socket, done: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    const finish = (closed: boolean) => {
      socket.off("data", onData);
      socket.off("close", onClose);
      resolve({ text, closed });
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString("utf8");
      if (done(text)) finish(false);
    };
    const onClose = () => finish(true);
    socket.on("data", onData);
    socket.on("close", onClose);
  });
}

/** True once `text` holds one whole response with a content-length body. */
function wholeResponse(text: string): boolean {
  const end = text.indexOf("\r\n\r\n");
  if (end === -1) return false;
  const length = /content-length: (\d+)/i.exec(text.slice(0, end));
  return length !== null && text.length >= end + 4 + Number(length[1]);
}

describe("metered endpoints on Node's own request and response", () => {
  let gateway: TestGateway;
  const canaries: string[] = [];

  beforeAll(async () => {
    gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { max_body_bytes: MAX_BODY_BYTES } },
    });
  });

  afterAll(async () => {
    await gateway.close();
    expect(await findCanaries(canaries, { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  });

  function chatBody(label: string): string {
    const secret = makeCanary(label);
    canaries.push(secret);
    return JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: secret }] });
  }

  function open(): Promise<Socket> {
    const port = new URL(gateway.url).port;
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), "127.0.0.1", () => resolve(socket));
      socket.once("error", reject);
    });
  }

  it("serves nothing pipelined behind a refusal whose answer closes the connection (it could never be read)", async () => {
    const socket = await open();
    const before = (await gateway.records()).length;
    const body = chatBody("pipelined");
    // a chunked body without a key, then a valid request on the same connection at once
    socket.write(
      "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
        "transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" +
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    const { text, closed } = await readUntil(socket, () => false);
    expect(closed).toBe(true);
    expect(text.match(/HTTP\/1\.1 \d+/g)).toEqual(["HTTP/1.1 401"]);
    // the refusal is metered; the request behind it was neither served nor billed
    const records = (await gateway.records()).slice(before);
    expect(records.map((record) => record.status)).toEqual([401]);
  });

  it("refuses a chunked body that grows past the limit with 413 and closes the connection", async () => {
    const socket = await open();
    const secret = makeCanary("chunked");
    canaries.push(secret);
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
        "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    const piece = `${secret}${"x".repeat(1000)}`;
    for (let sent = 0; sent <= MAX_BODY_BYTES; sent += piece.length) {
      socket.write(`${piece.length.toString(16)}\r\n${piece}\r\n`);
    }
    const { text, closed } = await readUntil(socket, () => false);
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text).toMatch(/connection: close/i);
    expect(text).toContain('"code":"LETHE_BODY_TOO_LARGE"');
    expect(text).not.toContain(secret);
    socket.destroy();
  });

  it("meters a client that leaves halfway through its body as 499, and keeps nothing of it", async () => {
    const before = (await gateway.records()).length;
    const socket = await open();
    const body = chatBody("halfway");
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, body.length / 2)}`,
    );
    // the gateway must have read the headers and started on the body before the client goes
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.destroy();
    let records = await gateway.records();
    for (let tries = 0; records.length === before && tries < 50; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      records = await gateway.records();
    }
    expect(records.slice(before)).toMatchObject([{ status: 499, error_code: "LETHE_CLIENT_CLOSED" }]);
  });

  it("meters a body Node's parser refuses (a malformed chunk) as the 400 its caller was answered, not as a client that left", async () => {
    const before = (await gateway.records()).length;
    const socket = await open();
    const body = chatBody("badchunk");
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n` +
        `${body.length.toString(16)}\r\n${body.slice(0, 20)}`,
    );
    // the gateway must have admitted the request and started on its body
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.write(`${body.slice(20)}\r\nzz\r\n`);
    const { text, closed } = await readUntil(socket, () => false);
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text).toContain('"code":"LETHE_INVALID_REQUEST"');
    let records = await gateway.records();
    for (let tries = 0; records.length === before && tries < 50; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      records = await gateway.records();
    }
    expect(records.slice(before)).toMatchObject([{ status: 400, error_code: "LETHE_INVALID_REQUEST" }]);
  });

  it("answers a refused key on a kept-alive connection, then serves the next request on it", async () => {
    const socket = await open();
    const body = chatBody("keepalive");
    const request = (key: string) =>
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    // a wrong key is refused before the body is read; the unread body must not break the connection
    socket.write(request(`sk-lethe-${"w".repeat(38)}`));
    const refused = await readUntil(socket, wholeResponse);
    expect(refused.text).toMatch(/^HTTP\/1\.1 401 /);
    socket.write(request(gateway.key));
    const served = await readUntil(socket, wholeResponse);
    expect(served.closed).toBe(false);
    expect(served.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(served.text).toMatch(/x-request-id: req_/);
    socket.destroy();
  });

  it.each([
    ["a declared length over the limit", "content-length: 1000000"],
    ["a chunked body", "transfer-encoding: chunked"],
  ])(
    "closes the connection after refusing a key whose body (%s) is still on its way, rather than reading it all",
    async (_name, framing) => {
      const socket = await open();
      // the key is refused first; a little of the body is sent, and it could go on without end
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-lethe-${"w".repeat(38)}\r\n` +
          `content-type: application/json\r\n${framing}\r\n\r\n${framing.startsWith("transfer") ? "10\r\n" : ""}{"model":"lethe`,
      );
      const refused = await readUntil(socket, () => false);
      expect(refused.text).toMatch(/^HTTP\/1\.1 401 /);
      expect(refused.text).toMatch(/\r\nconnection: close\r\n/i);
      expect(refused.closed).toBe(true);
    },
  );

  it.each([
    ["a header name with a space", (canary: string) => `bad header: ${canary}\r\n`, 400, "LETHE_INVALID_REQUEST"],
    [
      "both content-length and transfer-encoding",
      (canary: string) => `x-trace: ${canary}\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n`,
      400,
      "LETHE_INVALID_REQUEST",
    ],
    [
      "headers over 16 KiB",
      (canary: string) => `x-trace: ${canary}${"h".repeat(20_000)}\r\n`,
      431,
      "LETHE_HEADERS_TOO_LARGE",
    ],
  ])(
    "answers a request the HTTP parser refuses (%s) in a shape both SDKs read, and closes",
    async (_name, extra, status, code) => {
      const canary = makeCanary("parser");
      canaries.push(canary);
      const socket = await open();
      socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n${extra(canary)}\r\n`);
      const refused = await readUntil(socket, () => false);
      expect(refused.closed).toBe(true);
      expect(refused.text).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(refused.text).toMatch(/\r\nconnection: close\r\n/);
      expect(refused.text).toMatch(/\r\nx-request-id: req_/);
      expect(refused.text).not.toContain(canary);
      const body = JSON.parse(refused.text.slice(refused.text.indexOf("\r\n\r\n") + 4));
      // Anthropic's envelope around OpenAI's error object
      expect(body).toMatchObject({ type: "error", error: { type: "invalid_request_error", param: null, code } });
      expect(typeof body.error.message).toBe("string");
    },
  );

  it("serves the endpoints with a trailing slash or a query string, and only for POST", async () => {
    for (const suffix of ["/", "?trace=1", "/?trace=1"]) {
      const response = await fetch(`${gateway.baseURL}/chat/completions${suffix}`, {
        method: "POST",
        headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
        body: chatBody("suffix"),
      });
      expect(response.status).toBe(200);
      expect(response.headers.get("x-lethe-zdr")).toBeTruthy();
    }
    const get = await fetch(`${gateway.baseURL}/chat/completions`, {
      headers: { authorization: `Bearer ${gateway.key}` },
    });
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    expect(((await get.json()) as { error: { code: string } }).error.code).toBe("LETHE_METHOD_NOT_ALLOWED");
  });

  it("serves a request target in absolute form (RFC 9112 has servers accept it), as the other routes do", async () => {
    const ask = async (requestLine: string, body = "") => {
      const socket = await open();
      socket.write(
        `${requestLine}\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\ncontent-type: application/json\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
      const { text } = await readUntil(socket, () => false);
      socket.destroy();
      return text;
    };
    const served = await ask("POST http://gateway.example/v1/chat/completions?trace=1 HTTP/1.1", chatBody("absolute"));
    expect(served).toMatch(/^HTTP\/1\.1 200 /);
    expect(served).toContain('"object":"chat.completion"');
    const wrongMethod = await ask("GET http://gateway.example/v1/chat/completions HTTP/1.1");
    expect(wrongMethod).toMatch(/^HTTP\/1\.1 405 /);
    expect(wrongMethod).toMatch(/\r\nallow: POST\r\n/i);
    const unknown = await ask("POST http://gateway.example/v1/responses HTTP/1.1", "{}");
    expect(unknown).toMatch(/^HTTP\/1\.1 404 /);
    expect(unknown).toContain("not the Responses API");
    // the path is what follows the authority: none here (a query naming one is a query), or another scheme's
    for (const target of [
      "http://gateway.example?x=/v1/chat/completions",
      "foo://gateway.example/v1/chat/completions",
    ]) {
      expect(await ask(`POST ${target} HTTP/1.1`, chatBody("notapath"))).toMatch(/^HTTP\/1\.1 404 /);
    }
  });

  it("answers CONNECT (a proxy's tunnel) with a coded 405 and closes, rather than cutting the connection", async () => {
    const socket = await open();
    socket.write("CONNECT 127.0.0.1:80 HTTP/1.1\r\nhost: 127.0.0.1:80\r\n\r\n");
    const { text, closed } = await readUntil(socket, () => false);
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 405 /);
    expect(text).toMatch(/\r\nconnection: close\r\n/);
    const body = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4));
    expect(body).toMatchObject({ type: "error", error: { code: "LETHE_METHOD_NOT_ALLOWED" } });
  });

  it("survives clients that reset the connection right after a CONNECT (Node hands the socket over without an error listener)", async () => {
    const resets = Array.from(
      { length: 100 },
      () =>
        new Promise<void>((resolve) => {
          const socket = connect(Number(new URL(gateway.url).port), "127.0.0.1", () => {
            socket.write("CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n");
            socket.resetAndDestroy();
          });
          socket.on("close", () => resolve());
          socket.on("error", () => {});
        }),
    );
    await Promise.all(resets);
    const health = await fetch(`${gateway.url}/healthz`);
    expect(health.status).toBe(200);
  });

  it("refuses a body whose declared length is over the limit before reading it", async () => {
    const socket = await open();
    socket.write(
      `POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${gateway.key}\r\nanthropic-version: 2023-06-01\r\n` +
        `content-type: application/json\r\ncontent-length: ${MAX_BODY_BYTES + 1}\r\n\r\n{`,
    );
    const { text } = await readUntil(socket, wholeResponse);
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text).toContain('"type":"request_too_large"');
    expect(text).toMatch(/request-id: req_/);
    socket.destroy();
  });
});

/** A gateway that has served one demo answer, its record still buffered. */
async function gatewayAfterOneAnswer(config?: object): Promise<TestGateway> {
  const gateway = await startTestGateway(config === undefined ? {} : { config });
  const response = await fetch(`${gateway.baseURL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${gateway.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: "hi" }] }),
  });
  expect(response.status).toBe(200);
  return gateway;
}

/** Every event the gateway logged, parsed. */
function logEvents(gateway: TestGateway): Record<string, unknown>[] {
  return gateway
    .logText()
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe("a shutdown step that fails", () => {
  it("is logged by name, the remaining steps still run, and close() rejects", async () => {
    const gateway = await gatewayAfterOneAnswer();
    const suppliers = gateway.running.gateway.suppliers;
    suppliers.close = () => Promise.reject(new Error("a supplier pool that will not close"));
    await expect(gateway.close()).rejects.toThrow(/did not complete/);
    const events = logEvents(gateway);
    expect(events).toContainEqual(expect.objectContaining({ event: "server_stop_failed", step: "suppliers" }));
    // the metadata was flushed before the failing step, and the shutdown went on to its end
    expect(events.at(-1)).toMatchObject({ event: "server_stopped", flushed_records: 1 });
    await removeDataDir(gateway);
  });
});

describe("a shutdown whose buffered records cannot be written", () => {
  it("gives the flush as long as the deadline, says which step did not finish, and ends", async () => {
    const gateway = await gatewayAfterOneAnswer({ ...(DEFAULT_CONFIG_FILE as object), shutdown: { deadline_ms: 300 } });
    // a database that stopped answering: the write never settles
    const store = gateway.running.gateway.store;
    store.insertMetadata = () => new Promise<void>(() => {});
    const started = Date.now();
    await expect(gateway.close()).rejects.toThrow(/did not complete/);
    expect(Date.now() - started).toBeLessThan(5_000);
    const events = logEvents(gateway);
    expect(events).toContainEqual(expect.objectContaining({ event: "server_stop_failed", step: "metadata" }));
    expect(events.at(-1)).toMatchObject({ event: "server_stopped", flushed_records: 0 });
    await removeDataDir(gateway);
  });
});

describe("limits.max_connections", () => {
  it("closes a connection past the bound at once, and serves those within it", async () => {
    const gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { max_connections: 2 } },
    });
    const port = Number(new URL(gateway.url).port);
    const sockets: Socket[] = [];
    try {
      const open = () =>
        new Promise<Socket>((resolve, reject) => {
          const socket = connect(port, "127.0.0.1", () => resolve(socket));
          socket.once("error", reject);
          sockets.push(socket);
        });
      const [first, second] = [await open(), await open()];
      const third = await open();
      // the server closes the third as it accepts it, before any request
      const refused = await readUntil(third, () => false);
      expect(refused).toEqual({ text: "", closed: true });
      for (const socket of [first, second] as Socket[]) {
        socket.write(`GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n`);
        const { text } = await readUntil(socket, wholeResponse);
        expect(text).toMatch(/^HTTP\/1\.1 200/);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await gateway.close();
      await removeDataDir(gateway);
    }
  });
});

describe("limits.max_connections_per_address", () => {
  /** Opens a connection to `gateway` and asks it for /healthz: whether it was served or closed unasked. */
  async function served(gateway: TestGateway, sockets: Socket[]): Promise<boolean> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const opened = connect(Number(new URL(gateway.url).port), "127.0.0.1", () => resolve(opened));
      opened.once("error", reject);
    });
    sockets.push(socket);
    socket.on("error", () => {});
    socket.write(`GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n`);
    const { text, closed } = await readUntil(socket, wholeResponse);
    if (closed) expect(text).toBe("");
    return /^HTTP\/1\.1 200/.test(text);
  }

  it("closes one address's connections past its share at accept, and not a trusted proxy's", async () => {
    const capped = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { max_connections_per_address: 3 } },
    });
    const proxied = await startTestGateway({
      config: {
        ...(DEFAULT_CONFIG_FILE as object),
        limits: { max_connections_per_address: 3 },
        server: { trusted_proxies: ["127.0.0.1"] },
      },
    });
    const sockets: Socket[] = [];
    try {
      // one address holding its share (three kept-alive connections) is refused a fourth
      for (let index = 0; index < 3; index++) expect(await served(capped, sockets)).toBe(true);
      expect(await served(capped, sockets)).toBe(false);
      // once one of its connections closes, the address is served again
      const first = sockets[0] as Socket;
      const gone = readUntil(first, () => false);
      first.destroy();
      await gone;
      let again = false;
      for (let tries = 0; tries < 50 && !again; tries++) again = await served(capped, sockets);
      expect(again).toBe(true);
      // a reverse proxy carries everyone's connections: it is not capped
      for (let index = 0; index < 5; index++) expect(await served(proxied, sockets)).toBe(true);
    } finally {
      for (const socket of sockets) socket.destroy();
      for (const gateway of [capped, proxied]) {
        await gateway.close();
        await removeDataDir(gateway);
      }
    }
  });
});

describe("requests for no route, and clients that send slowly", () => {
  let gateway: TestGateway;
  const canary = makeCanary("unrouted");

  beforeAll(async () => {
    gateway = await startTestGateway({
      config: { ...(DEFAULT_CONFIG_FILE as object), limits: { request_timeout_ms: 1000 } },
    });
  });

  afterAll(async () => {
    await gateway.close();
    expect(await findCanaries([canary], { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
    await removeDataDir(gateway);
  });

  const port = () => Number(new URL(gateway.url).port);
  const open = () =>
    new Promise<Socket>((resolve, reject) => {
      const socket = connect(port(), "127.0.0.1", () => resolve(socket));
      socket.once("error", reject);
    });

  it("keeps the connection of a request without a body open (it was closed after each GET)", async () => {
    for (const path of ["/healthz", "/v1/models"]) {
      const socket = await open();
      try {
        for (let index = 0; index < 2; index++) {
          socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n\r\n`);
          const { text, closed } = await readUntil(socket, wholeResponse);
          expect(text).toMatch(/^HTTP\/1\.1 200/);
          expect(text).toMatch(/\r\nconnection: keep-alive\r\n/i);
          expect(closed).toBe(false);
        }
      } finally {
        socket.destroy();
      }
    }
  });

  it("serves an HTTP/1.1 request that sends no Host (Node's refusal had no code)", async () => {
    const socket = await open();
    try {
      socket.write("GET /healthz HTTP/1.1\r\n\r\n");
      const { text } = await readUntil(socket, wholeResponse);
      expect(text).toMatch(/^HTTP\/1\.1 200/);
      expect(text).toMatch(/x-request-id: req_/);
    } finally {
      socket.destroy();
    }
  });

  it("answers 404 without reading a body for no route into memory or parsing it", async () => {
    // not JSON: parsed, it would have been refused as such (400) rather than found missing
    const response = await fetch(`${gateway.url}/v1/nowhere`, { method: "POST", body: `{"prompt": "${canary}` });
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("LETHE_NOT_FOUND");
    // another method on a metered endpoint says which one it takes, body or not
    const wrongMethod = await fetch(`${gateway.url}/v1/chat/completions`, { method: "PUT", body: canary });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("POST");
  });

  it("drops a long body for no route unread past a bound, then answers and closes", async () => {
    const socket = await open();
    const size = 8 * 1024 * 1024;
    socket.write(`POST /v1/nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: ${size}\r\n\r\n`);
    // 2 MiB of it: past the bound the answer goes without waiting for the rest
    socket.write(Buffer.alloc(2 * 1024 * 1024, "[{}]"));
    const { text, closed } = await readUntil(socket, () => false);
    socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 404/);
    expect(text).toMatch(/connection: close/i);
    expect(closed).toBe(true);
  });

  it.each([
    ["GET /healthz", "GET", "/healthz", 200],
    ["GET /v1/models without a key", "GET", "/v1/models", 401],
    ["POST /admin/v1/accounts without a token", "POST", "/admin/v1/accounts", 401],
  ])("reads no further than a bound of a body %s leaves unread, then closes", async (_name, method, path, status) => {
    const socket = await open();
    socket.write(`${method} ${path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n`);
    // an endless body, as fast as the gateway takes it: Node alone would read it until request_timeout_ms
    let sent = 0;
    const chunk = Buffer.from(`100000\r\n${"x".repeat(0x100000)}\r\n`);
    let sending = true;
    const send = () => {
      while (sending && socket.writable) {
        sent += chunk.length;
        if (!socket.write(chunk)) return void socket.once("drain", send);
      }
    };
    socket.once("error", () => {
      sending = false;
    });
    send();
    const { text, closed } = await readUntil(socket, () => false);
    sending = false;
    socket.destroy();
    expect(text).toMatch(new RegExp(`^HTTP/1\\.1 ${status}`));
    expect(text).toMatch(/connection: close/i);
    expect(closed).toBe(true);
    // closed once a few MiB were read (the answer's own wait, then the bound), not gigabytes later
    expect(sent).toBeLessThan(64 * 1024 * 1024);
  });

  it("says 100 Continue only to an admitted request, and answers a refused one at once without its body", async () => {
    const refusedSocket = await open();
    const started = Date.now();
    refusedSocket.write(
      "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-lethe-wrong\r\n" +
        "content-type: application/json\r\ncontent-length: 10000000\r\nexpect: 100-continue\r\n\r\n",
    );
    const refused = await readUntil(refusedSocket, () => false);
    refusedSocket.destroy();
    // no "continue", so no 10 MB upload: the 401 at once, and the connection closes
    expect(refused.text).toMatch(/^HTTP\/1\.1 401/);
    expect(refused.text).toMatch(/connection: close/i);
    expect(refused.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(3000);

    const admittedSocket = await open();
    const body = JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: canary }] });
    admittedSocket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nexpect: 100-continue\r\n\r\n`,
    );
    const asked = await readUntil(admittedSocket, (text) => text.includes("\r\n\r\n"));
    expect(asked.text).toBe("HTTP/1.1 100 Continue\r\n\r\n");
    admittedSocket.write(body);
    const answered = await readUntil(admittedSocket, wholeResponse);
    admittedSocket.destroy();
    expect(answered.text).toMatch(/^HTTP\/1\.1 200/);
  });

  it.each([
    ["chat completions, the caller's own format", "POST /v1/chat/completions", "openai"],
    ["messages, the caller's own format", "POST /v1/messages", "anthropic"],
    ["any other route", "GET /v1/models", "both"],
  ])(
    "refuses an Expect other than 100-continue with a coded 417 on %s, sending no body for it",
    async (_name, line, shape) => {
      const socket = await open();
      const body = JSON.stringify({ model: "lethe-demo", messages: [{ role: "user", content: canary }] });
      socket.write(
        `${line} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nexpect: 200-ok\r\n\r\n`,
      );
      const { text, closed } = await readUntil(socket, () => false);
      socket.destroy();
      expect(text).toMatch(/^HTTP\/1\.1 417/);
      expect(text).toMatch(/connection: close/i);
      expect(text).toMatch(/x-request-id: req_/i);
      expect(closed).toBe(true);
      const answer = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)) as Record<string, Record<string, unknown>>;
      if (shape === "openai")
        expect(answer.error).toMatchObject({ code: "LETHE_EXPECTATION_FAILED", type: "invalid_request_error" });
      else expect(answer).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
      if (shape !== "openai") expect(JSON.stringify(answer)).toContain("LETHE_EXPECTATION_FAILED");
      expect(text).not.toContain("200-ok");
    },
  );

  it("closes a connection whose request does not arrive within request_timeout_ms", async () => {
    const slowHeaders = await open();
    slowHeaders.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n");
    const slowBody = await open();
    slowBody.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{");
    const [headers, body] = await Promise.all([readUntil(slowHeaders, () => false), readUntil(slowBody, () => false)]);
    expect(headers.closed).toBe(true);
    expect(body.closed).toBe(true);
    expect(headers.text).toMatch(/^HTTP\/1\.1 408/);
  });

  it("meters an admitted request whose body does not arrive within request_timeout_ms as the 408 it was answered", async () => {
    const before = (await gateway.records()).length;
    const socket = await open();
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"model":"${canary}`,
    );
    const { text, closed } = await readUntil(socket, () => false);
    expect(closed).toBe(true);
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    let records = await gateway.records();
    for (let tries = 0; records.length === before && tries < 50; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      records = await gateway.records();
    }
    expect(records.slice(before)).toMatchObject([{ status: 408, error_code: "LETHE_REQUEST_TIMEOUT" }]);
  });
});
