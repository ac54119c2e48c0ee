import { connect } from "node:net";
import path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { SQLITE_FILE } from "../src/store/sqlite/open-sqlite-store.js";
import { findCanaries } from "./support/canary.js";
import { behaviour, type FakeOpenAISupplier } from "./support/fake-openai-supplier.js";
import { startTestGateway, type TestGateway } from "./support/gateway-harness.js";
import {
  canaryPrompt,
  chatBody,
  closeAndFindCanaries,
  openAISupplier,
  postRaw,
  ROUTING_ENV,
  recordOf,
  startFakes,
} from "./support/routing-rig.js";

/**
 * A streaming client that stops reading: without a bound it held its stream, the supplier
 * connection under it (the supplier's idle timeout never fires while Lethe holds it back)
 * and its record, until the client left, for ever if it never did. The client's silence
 * is bounded by the route's idle_ms, as the supplier's is.
 */

let fakes: Record<"steady", FakeOpenAISupplier>;
let gateway: TestGateway;
const canaries: string[] = [];

beforeAll(async () => {
  fakes = await startFakes(["steady"]);
  gateway = await startTestGateway({
    config: {
      // one pooled connection: a stalled stream that kept it would starve the next request
      suppliers: [{ ...openAISupplier("steady", fakes.steady.url), max_connections: 1 }],
      models: [{ id: "long", routes: [{ supplier: "steady", model: "steady-1" }] }],
      routing: { max_attempts: 1 },
    },
    env: ROUTING_ENV,
  });
});

afterAll(async () => {
  expect(await closeAndFindCanaries([gateway], Object.values(fakes), canaries)).toEqual([]);
});

describe("a streaming client that stops reading", () => {
  it("is cut off after idle_ms, the supplier's request aborted, and the request metered and billed", async () => {
    const { content } = canaryPrompt(canaries, "stall");
    // 64 MiB of chunks: far more than the sockets between here and the client hold
    fakes.steady.enqueue(behaviour.longStream(4096));
    const aborted = fakes.steady.nextAbort();
    const body = JSON.stringify(chatBody("long", content, true));
    const { port } = new URL(gateway.url);
    const socket = connect(Number(port), "127.0.0.1");
    let received = "";
    let closed = false;
    socket.once("data", (chunk: Buffer) => {
      received = chunk.toString("latin1");
      // reads the start, then nothing more
      socket.pause();
    });
    socket.on("close", () => {
      closed = true;
    });
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: lethe\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    const started = Date.now();
    await aborted;
    // well before the supplier's total_ms (5 s here): idle_ms is 300 ms
    expect(Date.now() - started).toBeLessThan(4000);
    expect(received.startsWith("HTTP/1.1 200")).toBe(true);
    const requestId = /x-request-id: (\S+)/i.exec(received)?.[1] ?? null;
    const record = await recordOf(gateway, requestId);
    expect(record).toMatchObject({ status: 499, error_code: "LETHE_CLIENT_STALLED", supplier: "steady" });
    // what was relayed is counted and billed
    expect(record.output_tokens).toBeGreaterThan(0);
    expect(record.cost_micros).toBeGreaterThanOrEqual(0);
    socket.resume();
    for (let turn = 0; turn < 100 && !closed; turn++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(closed).toBe(true);

    // the supplier's one connection is free again
    const next = await postRaw(
      gateway,
      "/v1/chat/completions",
      chatBody("long", canaryPrompt(canaries, "after").content),
    );
    expect(next.status).toBe(200);
  });
});

describe("a client that never reads a large JSON answer", () => {
  it("is cut off after idle_ms rather than holding its connection and the answer", async () => {
    const { content } = canaryPrompt(canaries, "json-stall");
    // 40 MB of answer: far more than the loopback sockets between here and the client hold
    fakes.steady.enqueue(behaviour.oversized(40_000_000));
    const body = JSON.stringify(chatBody("long", content));
    const { port } = new URL(gateway.url);
    const socket = connect(Number(port), "127.0.0.1");
    let received = 0;
    let head = "";
    let closed = false;
    socket.on("data", (chunk: Buffer) => {
      if (received === 0) {
        head = chunk.toString("latin1", 0, 200);
        // reads the start, then nothing more for a while
        socket.pause();
      }
      received += chunk.length;
    });
    socket.on("close", () => {
      closed = true;
    });
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: lethe\r\nauthorization: Bearer ${gateway.key}\r\n` +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    // the answer starts once the gateway has the supplier's whole 40 MB (slower on a busy machine)
    for (let turn = 0; turn < 1_000 && received === 0 && !closed; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // idle_ms is 300 ms: long past it, the client reads what reached its socket
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    socket.resume();
    for (let turn = 0; turn < 150 && !closed; turn++) await new Promise((resolve) => setTimeout(resolve, 20));
    socket.destroy();
    expect(head.startsWith("HTTP/1.1 200")).toBe(true);
    // the gateway closed the connection: the client got only what was in flight
    expect(closed).toBe(true);
    expect(received).toBeLessThan(40_000_000);
  });
});

describe("a streaming client that reads slowly but steadily", () => {
  it("is not cut while one large event takes it longer than idle_ms to read", async () => {
    const { content } = canaryPrompt(canaries, "steady");
    // 2 MB in one event, read at about 1.3 MB/s: well over idle_ms (300 ms) for the whole event
    fakes.steady.enqueue(behaviour.bigEvent(2_000_000));
    const body = JSON.stringify(chatBody("long", content, true));
    const { port } = new URL(gateway.url);
    const socket = connect(Number(port), "127.0.0.1");
    const parts: Buffer[] = [];
    await new Promise<void>((resolve) => {
      socket.on("data", (chunk: Buffer) => {
        parts.push(chunk);
        socket.pause();
        setTimeout(() => socket.resume(), 50);
        // the chunked body's last chunk: the stream is over
        if (chunk.toString("latin1").endsWith("\r\n0\r\n\r\n")) resolve();
      });
      socket.on("close", () => resolve());
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: lethe\r\nauthorization: Bearer ${gateway.key}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
    socket.destroy();
    const received = Buffer.concat(parts).toString("utf8");
    expect(received).toContain("data: [DONE]\n\n");
    // the slices were cut between whole characters: no replacement character anywhere
    expect(received).not.toContain("\uFFFD");
    const requestId = /x-request-id: (\S+)/i.exec(received)?.[1] ?? null;
    expect(await recordOf(gateway, requestId)).toMatchObject({ status: 200, error_code: null });
  });
});

describe("requests cut at the shutdown deadline", () => {
  it("end in their client's format and are recorded as cut by the shutdown before the process flushes and exits", async () => {
    const own = await startFakes(["hanging"]);
    const draining = await startTestGateway({
      config: {
        suppliers: [openAISupplier("hanging", own.hanging.url, { timeouts: { idle_ms: 10_000, total_ms: 20_000 } })],
        models: [{ id: "slow", routes: [{ supplier: "hanging", model: "hanging-1" }] }],
        shutdown: { drain_delay_ms: 0, deadline_ms: 300 },
      },
      env: ROUTING_ENV,
    });
    // the start of an answer, then silence: the stream is still open when the deadline cuts it
    own.hanging.enqueue(behaviour.hangMidStream());
    const { content } = canaryPrompt(canaries, "shutdown");
    const response = await fetch(`${draining.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${draining.key}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody("slow", content, true)),
    });
    expect(response.status).toBe(200);
    const reading = response.text().catch(() => "cut");
    // and a JSON request whose supplier has not answered yet
    own.hanging.enqueue(behaviour.slowFirstByte(10_000));
    const waiting = fetch(`${draining.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${draining.key}`, "content-type": "application/json" },
      body: JSON.stringify(chatBody("slow", content, false)),
    });
    await vi.waitFor(() => expect(own.hanging.requests).toHaveLength(2), { timeout: 5_000, interval: 10 });
    // a client that stops reading a long answer: its stream waits for room when the deadline comes
    own.hanging.enqueue(behaviour.longStream(1_000));
    const port = Number(new URL(draining.url).port);
    const rawRequest = (body: string, sent = body.length) => {
      const socket = connect(port, "127.0.0.1");
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${draining.key}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, sent)}`,
      );
      let received = "";
      // a connection the gateway closes may end in a reset: what was received is what counts
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString("latin1");
      });
      const ended = new Promise<string>((resolve) => socket.once("close", () => resolve(received)));
      return { socket, ended };
    };
    const stalled = rawRequest(JSON.stringify(chatBody("slow", content, true)));
    await vi.waitFor(() => expect(own.hanging.requests).toHaveLength(3), { timeout: 5_000, interval: 10 });
    stalled.socket.pause();
    // and a client whose body is still on its way at the deadline, and arrives after it
    const lateBody = JSON.stringify(chatBody("slow", content, false));
    const late = rawRequest(lateBody, 10);
    // its headers were taken (a connection not yet accepted when the listener closes is reset)
    await vi.waitFor(() => expect(draining.running.gateway.openExchanges).toBe(4), { timeout: 5_000, interval: 2 });
    const closing = draining.running.close();
    await vi.waitFor(() => expect(draining.running.gateway.inFlight.closed).toBe(true), {
      timeout: 5_000,
      interval: 2,
    });
    late.socket.write(lateBody.slice(10));
    await closing;
    // the stream's client is told why it ended, in an error event, not left with a broken connection
    const streamed = await reading;
    expect(streamed).toContain('"code":"LETHE_SHUTTING_DOWN"');
    const answered = await waiting;
    expect(answered.status).toBe(503);
    expect(((await answered.json()) as { error: { code: string } }).error.code).toBe("LETHE_SHUTTING_DOWN");
    const stopped = draining
      .logText()
      .split("\n")
      .find((line) => line.includes('"server_stopped"'));
    expect(stopped).toContain('"flushed_records":4');
    // the late body was never sent on: its client was told the gateway is shutting down
    expect(own.hanging.requests).toHaveLength(3);
    expect(await late.ended).toMatch(/^HTTP\/1\.1 503[\s\S]*"code":"LETHE_SHUTTING_DOWN"/);
    // a paused socket reports no close: it is let go
    stalled.socket.destroy();
    // the gateway's store is closed: the records are read from its file
    const database = new Database(path.join(draining.dataDir, SQLITE_FILE), { readonly: true });
    const records = database.prepare("SELECT streamed, status, error_code FROM request_metadata ORDER BY ts").all();
    database.close();
    // the stalled client's connection was closed by the gateway, not by its client
    expect(records).toEqual([
      { streamed: 1, status: 200, error_code: "LETHE_SHUTTING_DOWN" },
      { streamed: 0, status: 503, error_code: "LETHE_SHUTTING_DOWN" },
      { streamed: 1, status: 200, error_code: "LETHE_SHUTTING_DOWN" },
      { streamed: 0, status: 503, error_code: "LETHE_SHUTTING_DOWN" },
    ]);
    await draining.close();
    await own.hanging.close();
    expect(await findCanaries(canaries, { dataDir: draining.dataDir, texts: { log: draining.logText() } })).toEqual([]);
  });
});
