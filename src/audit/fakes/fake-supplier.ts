import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { anthropicWire } from "./anthropic-wire.js";
import { type FakeRequest, readFakeRequest } from "./fake-request.js";
import { openAIWire } from "./openai-wire.js";
import type { WireDialect } from "./wire-dialect.js";

/** How the fake answers one request; the audit picks it before sending each request. */
export type FakeBehaviour =
  | "ok"
  /** A normal answer with reasoning, whether or not the request asked for it. */
  | "ok-reasoning"
  | { status: number }
  | "reset-mid-stream"
  /** Drops the connection before any answer. */
  | "reset-before-answer"
  /** A 200 whose body is not JSON (and holds the prompt). */
  | "not-json"
  | "hang-mid-stream"
  | "hang-before-headers"
  | "error-mid-stream"
  | "garbage-mid-stream";

/** A fake supplier the audit drives: a real HTTP server on loopback speaking one wire format. */
export interface FakeSupplier {
  /** The `base_url` to configure for it. */
  url: string;
  /** How the next requests are answered, one behaviour each; later ones are answered normally. */
  next(...behaviours: FakeBehaviour[]): void;
  /** Forgets behaviours no request used (a path that never reached the supplier leaves one behind). */
  reset(): void;
  /** Inference requests received so far. */
  readonly received: number;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 8 * 1024 * 1024;

async function readBody(request: IncomingMessage): Promise<Record<string, unknown> | null> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return null;
    parts.push(chunk as Buffer);
  }
  try {
    const parsed: unknown = JSON.parse(Buffer.concat(parts).toString("utf8"));
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** Answers one inference request the way `behaviour` says. */
function answer(response: ServerResponse, dialect: WireDialect, asked: FakeRequest, chosen: FakeBehaviour): void {
  const request = chosen === "ok-reasoning" ? { ...asked, reasoning: true } : asked;
  const behaviour = chosen === "ok-reasoning" ? "ok" : chosen;
  if (typeof behaviour === "object") {
    sendJson(response, behaviour.status, dialect.errorBody(behaviour.status, request.echo));
    return;
  }
  // the caller gives up or the gateway times out: the fake just stays silent
  if (behaviour === "hang-before-headers") return;
  if (behaviour === "reset-before-answer") {
    response.socket?.destroy();
    return;
  }
  if (behaviour === "not-json") {
    response.writeHead(200, { "content-type": "application/json" }).end(`{"answer": ${request.echo}`);
    return;
  }
  if (!request.stream) {
    if (behaviour === "ok") sendJson(response, 200, dialect.json(request));
    else response.socket?.destroy();
    return;
  }
  const { head, tail } = dialect.events(request);
  response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  response.write(head.join(""));
  switch (behaviour) {
    case "ok":
      response.end(tail.join(""));
      return;
    case "reset-mid-stream":
      // destroy once the first events are on the wire, so they reach the gateway first
      response.write("", () => response.socket?.destroy());
      return;
    case "hang-mid-stream":
      return;
    case "error-mid-stream":
      response.end(dialect.errorEvent(request.echo));
      return;
    case "garbage-mid-stream":
      response.end(dialect.garbageEvent(request.echo));
      return;
  }
}

/** Starts a fake supplier of the given wire format on 127.0.0.1 and an ephemeral port. */
export async function startFakeSupplier(format: "openai" | "anthropic"): Promise<FakeSupplier> {
  const dialect = format === "openai" ? openAIWire : anthropicWire;
  const queue: FakeBehaviour[] = [];
  let received = 0;
  const server = createServer(async (request, response) => {
    const path = (request.url ?? "").split("?")[0] ?? "";
    const body = await readBody(request);
    if (request.method !== "POST" || body === null) return sendJson(response, 400, dialect.errorBody(400, ""));
    if (path === dialect.countTokensPath) return sendJson(response, 200, { input_tokens: 42 });
    if (!dialect.paths.includes(path)) return sendJson(response, 404, dialect.errorBody(404, ""));
    received++;
    answer(response, dialect, readFakeRequest(body), queue.shift() ?? "ok");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: format === "openai" ? `${origin}/v1` : origin,
    next(...behaviours) {
      queue.push(...behaviours);
    },
    reset() {
      queue.length = 0;
    },
    get received() {
      return received;
    },
    async close() {
      // hanging answers hold their sockets open: drop them so close() can finish
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
