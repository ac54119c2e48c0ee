import { EventEmitter, once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * An OpenAI-compatible fake for the scale-out tests: answers with fixed, known usage
 * (so costs are exact), and holds every stream after its first words until the test
 * opens the gate, so a test can have hundreds of streams in flight at a moment it
 * chooses, without sleeping. Synthetic content only; it echoes nothing it receives.
 */
export interface GatedOpenAISupplier {
  /** Base URL for a supplier config, ending with `/v1`. */
  url: string;
  /** Streams sent their first words and wait for the gate now. */
  readonly heldStreams: number;
  /** Requests answered completely so far. */
  readonly answered: number;
  /** Holds streams from now on (the gate starts open). */
  closeGate(): void;
  /** Lets every held stream, and every later one, finish. */
  openGate(): void;
  /** Resolves once `count` streams are held at the gate. */
  whenHeld(count: number): Promise<void>;
  close(): Promise<void>;
}

/** The usage the fake reports on every answer: small, so max_tokens can bound it. */
export const GATED_USAGE = { prompt: 10, completion: 20 };

const CREATED = 1_700_000_000;

function chunk(id: string, delta: Record<string, unknown>, finishReason: string | null): string {
  const body = {
    id,
    object: "chat.completion.chunk",
    created: CREATED,
    model: "gated-upstream",
    choices: [{ index: 0, delta, finish_reason: finishReason }],
    usage: null,
  };
  return `data: ${JSON.stringify(body)}\n\n`;
}

function usage(): Record<string, number> {
  return {
    prompt_tokens: GATED_USAGE.prompt,
    completion_tokens: GATED_USAGE.completion,
    total_tokens: GATED_USAGE.prompt + GATED_USAGE.completion,
  };
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  for await (const part of request) parts.push(part as Buffer);
  try {
    return JSON.parse(Buffer.concat(parts).toString("utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** Starts the fake on 127.0.0.1 with an ephemeral port. */
export async function startGatedOpenAISupplier(): Promise<GatedOpenAISupplier> {
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let gateOpen = true;
  let held = 0;
  let answered = 0;
  let sequence = 0;

  const server = createServer((request, response) => {
    void readJson(request).then(async (body) => {
      const id = `chatcmpl-gated${++sequence}`;
      if (body.stream !== true) {
        response.writeHead(200, { "content-type": "application/json" }).end(
          JSON.stringify({
            id,
            object: "chat.completion",
            created: CREATED,
            model: "gated-upstream",
            choices: [{ index: 0, message: { role: "assistant", content: "Fixed answer." }, finish_reason: "stop" }],
            usage: usage(),
          }),
        );
        answered++;
        return;
      }
      response.writeHead(200, { "content-type": "text/event-stream" });
      response.write(chunk(id, { role: "assistant", content: "" }, null));
      response.write(chunk(id, { content: "Fixed " }, null));
      if (!gateOpen) {
        held++;
        events.emit("held");
        await once(events, "open");
        held--;
      }
      if (response.destroyed) return;
      response.write(chunk(id, { content: "answer." }, null));
      response.write(chunk(id, {}, "stop"));
      const tail = { id, object: "chat.completion.chunk", created: CREATED, model: "gated-upstream", choices: [] };
      response.write(`data: ${JSON.stringify({ ...tail, usage: usage() })}\n\n`);
      response.end("data: [DONE]\n\n");
      answered++;
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    get heldStreams() {
      return held;
    },
    get answered() {
      return answered;
    },
    closeGate() {
      gateOpen = false;
    },
    openGate() {
      gateOpen = true;
      events.emit("open");
    },
    async whenHeld(count) {
      while (held < count) await once(events, "held");
    },
    async close() {
      gateOpen = true;
      events.emit("open");
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
