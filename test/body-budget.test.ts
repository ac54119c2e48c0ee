import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountId } from "../src/config/ids.js";
import { DEFAULT_CONFIG_FILE } from "../src/config/load-config.js";
import { findCanaries, makeCanary } from "./support/canary.js";
import { removeDataDir, startTestGateway, type TestGateway } from "./support/gateway-harness.js";

/**
 * One key sending many large bodies at once: each was read whole and parsed before TPM or
 * credit could refuse it, and 120 bodies of 32 MiB took the gateway to 3.3 GB. An account's
 * bytes in memory are bounded: four bodies of the largest size, past every body's first MiB.
 */

const MAX_BODY = 2 * 1024 * 1024;
let gateway: TestGateway;
const canary = makeCanary("bigbody");

beforeAll(async () => {
  gateway = await startTestGateway({
    config: {
      ...(DEFAULT_CONFIG_FILE as object),
      limits: { rpm: 1_000_000, tpm: 1_000_000_000_000, max_body_bytes: MAX_BODY },
    },
  });
});

afterAll(async () => {
  await gateway.close();
  expect(await findCanaries([canary], { dataDir: gateway.dataDir, texts: { log: gateway.logText() } })).toEqual([]);
  await removeDataDir(gateway);
});

/** A chat body of exactly `size` bytes whose prompt is the canary and filler. */
function bodyOf(size: number): Buffer {
  const head = `{"model":"lethe-demo","messages":[{"role":"user","content":"${canary} `;
  const tail = `"}]}`;
  return Buffer.from(head + "x".repeat(size - head.length - tail.length) + tail);
}

/** What a socket receives until it closes or `settled` says enough. */
function answerOf(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      if (/\r\n\r\n[\s\S]*\}$/.test(text)) resolve(text);
    });
    socket.on("close", () => resolve(text));
  });
}

describe("an account's large bodies in memory at once", () => {
  it("are bounded: past the bound a body is refused with 429 as it arrives, and all is given back at the end", async () => {
    const { port } = new URL(gateway.url);
    const body = bodyOf(MAX_BODY - 1);
    const held = 10;
    const sockets = await Promise.all(
      Array.from(
        { length: held },
        () =>
          new Promise<Socket>((resolve) => {
            const socket = connect(Number(port), "127.0.0.1", () => resolve(socket));
          }),
      ),
    );
    const answers = sockets.map(answerOf);
    // every body but its last bytes: each holds about 1 MiB beyond its free first MiB
    for (const socket of sockets) {
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${gateway.key}\r\n` +
          `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`,
      );
      socket.write(body.subarray(0, body.length - 8));
    }
    const budget = gateway.running.gateway.bodies;
    const account = await gateway.running.gateway.store.findAccountByName("demo");
    const accountId = account?.id as AccountId;
    // until the gateway has read what was sent: eight bodies fit the 8 MiB, two were refused (their requests ended)
    const running = gateway.running.gateway;
    const full = 8 * (body.length - 8 - 1024 * 1024);
    const settled = () => running.openExchanges === 8 && budget.heldBy(accountId) === full;
    for (let turn = 0; turn < 500 && !settled(); turn++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(running.openExchanges).toBe(8);
    expect(budget.heldBy(accountId)).toBe(full);
    for (const socket of sockets) socket.end(body.subarray(body.length - 8));
    const texts = await Promise.all(answers);
    for (const socket of sockets) socket.destroy();
    const refused = texts.filter((text) => text.startsWith("HTTP/1.1 429"));
    const served = texts.filter((text) => text.startsWith("HTTP/1.1 200"));
    expect(refused).toHaveLength(2);
    expect(served).toHaveLength(8);
    for (const text of refused) {
      expect(text).toContain('"code":"LETHE_RATE_LIMITED"');
      expect(text).toMatch(/retry-after: 1/i);
    }
    // every request ended: nothing is held any more
    expect(budget.heldBy(accountId)).toBe(0);
  });
});

describe("large bodies of every account together", () => {
  it("are bounded too: eight bodies of the largest size, whichever accounts send them", async () => {
    const { port } = new URL(gateway.url);
    const body = bodyOf(MAX_BODY - 1);
    // four accounts, five bodies each: each account within its own 8 MiB, together past 16 MiB
    const keys = await Promise.all(["wide-1", "wide-2", "wide-3", "wide-4"].map((name) => gateway.createKey(name)));
    const senders = keys.flatMap(({ key }) => Array.from({ length: 5 }, () => key));
    const sockets = await Promise.all(
      senders.map(
        () =>
          new Promise<Socket>((resolve) => {
            const socket = connect(Number(port), "127.0.0.1", () => resolve(socket));
          }),
      ),
    );
    const answers = sockets.map(answerOf);
    sockets.forEach((socket, index) => {
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${senders[index]}\r\n` +
          `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`,
      );
      socket.write(body.subarray(0, body.length - 8));
    });
    const running = gateway.running.gateway;
    const perBody = body.length - 8 - 1024 * 1024;
    const settled = () => running.openExchanges === 16 && running.bodies.heldInAll === 16 * perBody;
    for (let turn = 0; turn < 500 && !settled(); turn++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(running.openExchanges).toBe(16);
    expect(running.bodies.heldInAll).toBe(16 * perBody);
    for (const socket of sockets) socket.end(body.subarray(body.length - 8));
    const texts = await Promise.all(answers);
    for (const socket of sockets) socket.destroy();
    expect(texts.filter((text) => text.startsWith("HTTP/1.1 200"))).toHaveLength(16);
    const refused = texts.filter((text) => text.startsWith("HTTP/1.1 429"));
    expect(refused).toHaveLength(4);
    for (const text of refused) expect(text).toContain("in progress on this gateway at once");
    expect(running.bodies.heldInAll).toBe(0);
  });
});
