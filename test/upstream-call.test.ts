import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import type { SupplierId } from "../src/config/ids.js";
import type { SupplierConfig } from "../src/config/load-config.js";
import { Cancellation } from "../src/suppliers/cancellation.js";
import { readJsonObject } from "../src/suppliers/http/read-json.js";
import { readSse } from "../src/suppliers/http/read-sse.js";
import { isRejection, SupplierHttpClient, type UpstreamResponse } from "../src/suppliers/http/supplier-http-client.js";
import { UpstreamCall } from "../src/suppliers/http/upstream-call.js";

const CHUNK = Buffer.alloc(16 * 1024, "x");
// 64 MiB in all: more than loopback buffers hold, even with a 32 MiB receive buffer (tcp_rmem on newer kernels)
const CHUNKS = 4096;

/** A loopback server whose handler the test sets; it reports how far each streamed answer got. */
async function startServer(handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<Server> {
  const server = createServer(handler);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return server;
}

function clientFor(
  server: Server,
  timeouts: Partial<SupplierConfig["timeouts"]> = {},
  maxResponseBytes = 64 * 1024 * 1024,
  keepAliveMs = 4000,
): SupplierHttpClient {
  const { port } = server.address() as AddressInfo;
  return new SupplierHttpClient({
    id: "test" as SupplierId,
    type: "openai",
    baseUrl: `http://127.0.0.1:${port}/v1`,
    apiKey: null,
    zdr: true,
    sendStoreFalse: false,
    maxTokensField: "max_tokens",
    maxConnections: 4,
    keepAliveMs,
    maxResponseBytes,
    headers: {},
    timeouts: { connectMs: 1000, firstByteMs: 5000, idleMs: 5000, totalMs: 10_000, ...timeouts },
  });
}

/** Writes CHUNKS chunks as fast as the socket takes them; `progress.sent` counts those written. */
function streamingHandler(progress: { sent: number; closedEarly: boolean; done: boolean }) {
  return async (_request: IncomingMessage, response: ServerResponse) => {
    response.writeHead(200, { "content-type": "text/event-stream" });
    response.on("close", () => {
      if (!response.writableFinished) progress.closedEarly = true;
    });
    for (let index = 0; index < CHUNKS; index++) {
      if (response.destroyed) return;
      progress.sent++;
      if (!response.write(CHUNK)) await once(response, "drain").catch(() => undefined);
    }
    response.end();
    progress.done = true;
  };
}

async function waitUntil(condition: () => boolean): Promise<void> {
  for (let turn = 0; turn < 200 && !condition(); turn++) await new Promise((resolve) => setTimeout(resolve, 10));
}

describe("supplier HTTP calls (undici dispatch handler)", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanUp of cleanups.splice(0)) await cleanUp();
  });

  async function setUp(
    handler: (request: IncomingMessage, response: ServerResponse) => void,
    timeouts?: Partial<SupplierConfig["timeouts"]>,
    maxResponseBytes?: number,
    keepAliveMs?: number,
  ) {
    const server = await startServer(handler);
    const client = clientFor(server, timeouts, maxResponseBytes, keepAliveMs);
    cleanups.push(async () => {
      await client.close();
      server.closeAllConnections();
      server.close();
    });
    return client;
  }

  it("stops reading a stream whose reader is slow, so the supplier is held back, and loses nothing", async () => {
    const progress = { sent: 0, closedEarly: false, done: false };
    const client = await setUp(streamingHandler(progress));
    const answer = (await client.post("/chat", "{}", {}, new Cancellation())) as UpstreamResponse;
    expect(isRejection(answer)).toBe(false);
    const reader = answer.stream()[Symbol.asyncIterator]();
    await reader.next();
    // the reader takes nothing more for a while: the socket is paused and the server's writes back up
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(progress.done).toBe(false);
    expect(progress.sent).toBeLessThan(CHUNKS);
    let bytes = CHUNK.length;
    for (let next = await reader.next(); next.done !== true; next = await reader.next()) bytes += next.value.length;
    expect(bytes).toBe(CHUNK.length * CHUNKS);
    expect(progress.done).toBe(true);
  });

  it("reads a JSON answer whole however many chunks it arrives in", async () => {
    const parts = Array.from({ length: 64 }, (_, index) => `"part${index}":"${"z".repeat(2000)}"`);
    const client = await setUp(async (_request, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.write("{");
      for (let index = 0; index < parts.length; index++) {
        response.write(`${index === 0 ? "" : ","}${parts[index]}`);
        // a separate read on the other side each time
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      response.end("}");
    });
    const answer = (await client.post("/chat", "{}", {}, new Cancellation())) as UpstreamResponse;
    // let the chunks pile up before the body is asked for, as a slow attempt loop would
    await new Promise((resolve) => setTimeout(resolve, 300));
    const body = JSON.parse(await answer.text()) as Record<string, string>;
    expect(Object.keys(body)).toHaveLength(64);
  });

  it("aborts the upstream request when the reader stops early", async () => {
    const progress = { sent: 0, closedEarly: false, done: false };
    const client = await setUp(streamingHandler(progress));
    const answer = (await client.post("/chat", "{}", {}, new Cancellation())) as UpstreamResponse;
    for await (const _chunk of answer.stream()) break;
    await waitUntil(() => progress.closedEarly);
    expect(progress.closedEarly).toBe(true);
    expect(progress.done).toBe(false);
  });

  it("aborts when the client goes away before the supplier answered, as LETHE_CLIENT_CLOSED", async () => {
    let reached = false;
    const client = await setUp(() => {
      reached = true;
    });
    const cancellation = new Cancellation();
    const call = client.post("/chat", "{}", {}, cancellation);
    await waitUntil(() => reached);
    cancellation.abort();
    // the supplier has the request: it reads (and bills) the prompt whatever happens next
    await expect(call).rejects.toMatchObject({ code: "LETHE_CLIENT_CLOSED", sent: true });
  });

  it("fails a request still waiting for a busy pool's socket at once when its client leaves or time runs out", async () => {
    const reached: string[] = [];
    const client = await setUp((request) => {
      // every request reaching the supplier hangs: the pool's four connections stay busy
      reached.push(request.url ?? "");
    });
    const busy = Array.from({ length: 4 }, () => client.post("/busy", "{}", {}, new Cancellation()).catch(() => null));
    await waitUntil(() => reached.length === 4);
    const cancellation = new Cancellation();
    const queued = client.post("/queued", "{}", {}, cancellation);
    cancellation.abort();
    await expect(queued).rejects.toMatchObject({ code: "LETHE_CLIENT_CLOSED", sent: false });
    const late = client.post("/late", "{}", {}, new Cancellation(), { firstByteMs: 5000, idleMs: 5000, totalMs: 50 });
    await expect(late).rejects.toMatchObject({ code: "LETHE_UPSTREAM_TIMEOUT" });
    // a client already gone sends nothing at all
    const gone = new Cancellation();
    gone.abort();
    await expect(client.post("/gone", "{}", {}, gone)).rejects.toMatchObject({
      code: "LETHE_CLIENT_CLOSED",
      sent: false,
    });
    expect(reached).toEqual(["/v1/busy", "/v1/busy", "/v1/busy", "/v1/busy"]);
    void busy;
  });

  it("drops calls given up while they waited for a socket without closing the connection they would have had", async () => {
    const connections = new Set<unknown>();
    let release: (() => void) | null = null;
    const client = await setUp((request, response) => {
      connections.add(request.socket);
      if (request.url === "/v1/hold") release = () => response.end("{}");
      else response.end("{}");
    });
    const sockets = new Set<unknown>();
    const held = client.post("/hold", "{}", {}, new Cancellation());
    // three more fill the pool's four connections, then end: one stays held
    await Promise.all(Array.from({ length: 3 }, () => client.post("/fill", "{}", {}, new Cancellation())));
    await waitUntil(() => release !== null);
    for (const socket of connections) sockets.add(socket);
    // twenty calls queue behind the pool and are given up while they wait
    const waiting = Array.from({ length: 20 }, () => {
      const cancellation = new Cancellation();
      const call = client.post("/queued", "{}", {}, cancellation);
      return { cancellation, call };
    });
    for (const { cancellation } of waiting) cancellation.abort();
    for (const { call } of waiting) await expect(call).rejects.toMatchObject({ code: "LETHE_CLIENT_CLOSED" });
    (release as unknown as () => void)();
    await held;
    const after = (await client.post("/after", "{}", {}, new Cancellation())) as UpstreamResponse;
    await after.text();
    // the dead calls cost no connection: the pool still has the four it opened
    expect(connections.size).toBe(sockets.size);
  });

  it("drops a queued call whose deadline passed before it reached a socket, without the connection's abort", async () => {
    let failed: unknown = null;
    // a pool whose connections are all taken: the call is entered in the queue's watch
    const call = new UpstreamCall(
      new Cancellation(),
      { firstByteMs: 500, idleMs: 5000, totalMs: 10_000, answerWithinMs: 5 },
      1024,
      () => {},
      (error) => {
        failed = error;
      },
      { inFlight: 4, connections: 1 },
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    let connectionAborted = false;
    // the deadline passed, here before or after a sweep: either way the call is thrown back, and
    // undici's abort (which destroys the socket) is never called
    expect(() =>
      call.onConnect(() => {
        connectionAborted = true;
      }),
    ).toThrow();
    // what undici's errorRequest then does
    call.onError(new Error("dropped"));
    expect(connectionAborted).toBe(false);
    expect(failed).toMatchObject({ code: "LETHE_UPSTREAM_TIMEOUT" });
  });

  it("ends an answer that outlives the total deadline as LETHE_UPSTREAM_TIMEOUT, mid-body too", async () => {
    const client = await setUp(
      (_request, response) => {
        response.writeHead(200, { "content-type": "application/json" });
        response.write('{"partial":');
      },
      { totalMs: 200 },
    );
    const answer = (await client.post("/chat", "{}", {}, new Cancellation())) as UpstreamResponse;
    await expect(answer.text()).rejects.toMatchObject({ code: "LETHE_UPSTREAM_TIMEOUT" });
  });

  it("cuts the wait for an answer at the routing deadline, never before it (undici's own timer can)", async () => {
    let reached = false;
    const client = await setUp(() => {
      reached = true;
    });
    const timeouts = { firstByteMs: 5000, idleMs: 5000, totalMs: 10_000, answerWithinMs: 600 };
    const startedAt = performance.now();
    const call = client.post("/chat", "{}", {}, new Cancellation(), timeouts);
    await expect(call).rejects.toMatchObject({ code: "LETHE_UPSTREAM_TIMEOUT" });
    const elapsedMs = performance.now() - startedAt;
    expect(reached).toBe(true);
    // never early: undici's first-byte timer ticks every ~0.5 s and fires a 600 ms wait
    // after 0.5 to 1 s; and well before the route's own 5 s (slack for a loaded machine)
    expect(elapsedMs).toBeGreaterThanOrEqual(595);
    expect(elapsedMs).toBeLessThan(2000);
  });

  it("lets an answer that started before the routing deadline run past it", async () => {
    const client = await setUp((_request, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.write('{"slow":');
      setTimeout(() => response.end("true}"), 300);
    });
    const timeouts = { firstByteMs: 5000, idleMs: 5000, totalMs: 10_000, answerWithinMs: 100 };
    const answer = (await client.post("/chat", "{}", {}, new Cancellation(), timeouts)) as UpstreamResponse;
    expect(await answer.text()).toBe('{"slow":true}');
  });

  it("reads a rejection's message for the caller only when it is the caller's own mistake, bounded", async () => {
    const client = await setUp((request, response) => {
      const huge = request.url?.endsWith("huge") === true;
      response.writeHead(huge ? 400 : 401, { "content-type": "application/json" });
      response.end(JSON.stringify({ error: { message: huge ? "y".repeat(200_000) : "key sk-operator-secret" } }));
    });
    const unauthorized = await client.post("/chat", "{}", {}, new Cancellation());
    expect(isRejection(unauthorized) && unauthorized.detail).toBe(undefined);
    expect(isRejection(unauthorized) && unauthorized.error.code).toBe("LETHE_UPSTREAM_ERROR");
    const huge = await client.post("/huge", "{}", {}, new Cancellation());
    expect(isRejection(huge) && huge.error.code).toBe("LETHE_UPSTREAM_REJECTED");
    expect(isRejection(huge) && huge.detail).toBe(undefined);
  });

  it("reads retry-after whatever its case, the first when repeated, from the raw headers", async () => {
    const client = await setUp((request, response) => {
      // setHeader would merge or lower-case: raw header lines are written as they are
      const retryAfter = request.url?.endsWith("twice") === true ? ["Retry-After", "7", "retry-after", "9"] : [];
      response.writeHead(429, ["Content-Type", "application/json", "RETRY-AFTER-MS", "1", ...retryAfter]);
      response.end("{}");
    });
    const twice = await client.post("/twice", "{}", {}, new Cancellation());
    expect(isRejection(twice) && twice.error.code).toBe("LETHE_UPSTREAM_RATE_LIMITED");
    expect(isRejection(twice) && twice.error.retryAfterSeconds).toBe(7);
    const none = await client.post("/none", "{}", {}, new Cancellation());
    expect(isRejection(none) && none.error.retryAfterSeconds).toBe(null);
  });

  it("refuses a JSON answer over max_response_bytes as a bad response, cut off or already whole", async () => {
    const progress = { sent: 0, closedEarly: false, done: false };
    const client = await setUp(
      (request, response) => {
        if (request.url?.endsWith("small") === true) {
          response.writeHead(200, { "content-type": "application/json" });
          response.end(JSON.stringify({ text: "y".repeat(2048) }));
          return;
        }
        void streamingHandler(progress)(request, response);
      },
      undefined,
      64 * 1024,
    );
    const large = (await client.post("/large", "{}", {}, new Cancellation())) as UpstreamResponse;
    await expect(readJsonObject(large)).rejects.toMatchObject({ code: "LETHE_UPSTREAM_BAD_RESPONSE", retryable: true });
    await waitUntil(() => progress.closedEarly);
    expect(progress.closedEarly).toBe(true);
    expect(progress.sent).toBeLessThan(CHUNKS);

    const tight = await setUp(
      (_request, response) => {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(JSON.stringify({ text: "y".repeat(2048) }));
      },
      undefined,
      1024,
    );
    const whole = (await tight.post("/small", "{}", {}, new Cancellation())) as UpstreamResponse;
    // let the whole answer arrive before it is read
    await new Promise((resolve) => setTimeout(resolve, 50));
    await expect(readJsonObject(whole)).rejects.toMatchObject({ code: "LETHE_UPSTREAM_BAD_RESPONSE" });
  });

  it("lets a stream run past max_response_bytes, but not one event that never ends", async () => {
    const client = await setUp(
      async (request, response) => {
        response.writeHead(200, { "content-type": "text/event-stream" });
        if (request.url?.endsWith("endless") === true) {
          response.write("data: ");
          for (let index = 0; index < 64 && !response.destroyed; index++) {
            if (!response.write("x".repeat(1024))) await once(response, "drain").catch(() => undefined);
          }
          response.end();
          return;
        }
        // keep-alive comments alone (40 KiB of them), then 200 events of about 1 KiB: each
        // complete comment or event starts the count again
        for (let index = 0; index < 40; index++) response.write(`: ${"p".repeat(1000)}\n\n`);
        for (let index = 0; index < 200; index++) response.write(`data: ${"z".repeat(1000)}\n\n`);
        response.end();
      },
      undefined,
      16 * 1024,
    );
    const events = [];
    const long = (await client.post("/long", "{}", {}, new Cancellation())) as UpstreamResponse;
    for await (const event of readSse(long)) events.push(event);
    expect(events).toHaveLength(200);

    const endless = (await client.post("/endless", "{}", {}, new Cancellation())) as UpstreamResponse;
    const read = async () => {
      for await (const _event of readSse(endless));
    };
    await expect(read()).rejects.toMatchObject({ code: "LETHE_UPSTREAM_BAD_RESPONSE" });
    expect(endless.aborted).toBe(true);
  });

  it("gives up on a failed answer's body that trickles, at idle_ms or 2 s, and moves on without it", async () => {
    const client = await setUp((_request, response) => {
      response.writeHead(503, { "content-type": "application/json" });
      // a byte every 50 ms: never idle for idle_ms, never done
      const timer = setInterval(() => response.write(" "), 50);
      response.on("close", () => clearInterval(timer));
    });
    const started = Date.now();
    const overloaded = await client.post("/chat", "{}", {}, new Cancellation(), {
      firstByteMs: 5000,
      idleMs: 300,
      totalMs: 10_000,
    });
    expect(isRejection(overloaded) && overloaded.error.code).toBe("LETHE_UPSTREAM_OVERLOADED");
    // the status decides; the body was given up after idle_ms, not at the 10 s total
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("times a supplier that sends 1xx answers and never the real one out at first_byte_ms, not at the total", async () => {
    const client = await setUp((_request, response) => {
      // 103 Early Hints every 100 ms: undici starts its own first-byte timer again at each
      const timer = setInterval(() => response.writeEarlyHints({ link: "</a.css>; rel=preload" }), 100);
      response.on("close", () => clearInterval(timer));
    });
    const started = Date.now();
    await expect(
      client.post("/chat", "{}", {}, new Cancellation(), {
        firstByteMs: 400,
        idleMs: 5000,
        totalMs: 10_000,
      }),
    ).rejects.toMatchObject({ code: "LETHE_UPSTREAM_TIMEOUT" });
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("reads a stream whose lines end with a lone CR to its last event, and drops an event cut before its blank line", async () => {
    const client = await setUp((request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      if (request.url?.endsWith("cut") === true) response.end("data: 1\r\rdata: 2\r");
      else response.end("event: a\rdata: 1\r\revent: b\rdata: 2\r\r");
    });
    const read = async (path: string) => {
      const answer = (await client.post(path, "{}", {}, new Cancellation())) as UpstreamResponse;
      const events = [];
      for await (const event of readSse(answer)) events.push([event.event, event.data]);
      return events;
    };
    expect(await read("/cr")).toEqual([
      ["a", "1"],
      ["b", "2"],
    ]);
    expect(await read("/cut")).toEqual([[undefined, "1"]]);
  });

  it("closes a pooled connection idle for keep_alive_ms even when the supplier's Keep-Alive hint says longer", async () => {
    const closedAfter: number[] = [];
    let answeredAt = 0;
    const server = await startServer((request, response) => {
      request.socket.once("close", () => closedAfter.push(Date.now() - answeredAt));
      answeredAt = Date.now();
      response.writeHead(200, { "content-type": "application/json", "keep-alive": "timeout=120" });
      response.end("{}");
    });
    server.keepAliveTimeout = 120_000;
    const client = clientFor(server, {}, undefined, 200);
    cleanups.push(async () => {
      await client.close();
      server.closeAllConnections();
      server.close();
    });
    const answer = (await client.post("/chat", "{}", {}, new Cancellation())) as UpstreamResponse;
    expect(await answer.text()).toBe("{}");
    await waitUntil(() => closedAfter.length === 1);
    expect(closedAfter[0]).toBeLessThan(1500);
  });

  it("closes a pooled connection idle for keep_alive_ms, before a supplier that closes idle ones unannounced does", async () => {
    const closedAfter: number[] = [];
    let answeredAt = 0;
    const server = await startServer((request, response) => {
      request.socket.once("close", () => closedAfter.push(Date.now() - answeredAt));
      answeredAt = Date.now();
      // no Keep-Alive header (as uvicorn sends none): the pool's own keep_alive_ms decides
      response.shouldKeepAlive = true;
      response.writeHead(200, { "content-type": "application/json", connection: "keep-alive" });
      response.end("{}");
    });
    server.keepAliveTimeout = 60_000;
    const client = clientFor(server, {}, undefined, 200);
    cleanups.push(async () => {
      await client.close();
      server.closeAllConnections();
      server.close();
    });
    const answer = (await client.post("/chat", "{}", {}, new Cancellation())) as UpstreamResponse;
    expect(await answer.text()).toBe("{}");
    await waitUntil(() => closedAfter.length === 1);
    // Lethe's side closed it after about keep_alive_ms; the server would have kept it a minute
    expect(closedAfter[0]).toBeGreaterThanOrEqual(150);
    expect(closedAfter[0]).toBeLessThan(1500);
  });
});
