import { describe, expect, it } from "vitest";
import type { RequestId } from "../src/config/ids.js";
import { LetheError } from "../src/errors/lethe-error.js";
import { UsageFallback } from "../src/formats/surface/usage-fallback.js";
import { countTextsTokens, MAX_COUNTED_CHARACTERS } from "../src/metering/count-tokens.js";
import { Exchange } from "../src/metering/exchange.js";
import { readSse } from "../src/suppliers/http/read-sse.js";
import type { UpstreamResponse } from "../src/suppliers/http/supplier-http-client.js";

/**
 * What a broken or hostile supplier's stream may make the gateway hold: bounded per stream,
 * whatever it sends and for however long (each of these once ran the gateway out of heap).
 */
describe("stream memory bounds", () => {
  it("keeps at most the tokenizer's share of a stream's output while no usage comes, and counts the rest", () => {
    const fallback = new UsageFallback();
    const piece = "word ".repeat(200);
    const pieces: string[] = [];
    for (let index = 0; index < 4_000; index++) {
      fallback.add(piece);
      pieces.push(piece);
    }
    // 4 M characters relayed, a quarter of a million kept
    expect(fallback.heldCharacters).toBeLessThanOrEqual(MAX_COUNTED_CHARACTERS);
    const exchange = new Exchange("req_bounds" as RequestId, "/v1/chat/completions", "openai");
    expect(fallback.settle(exchange, { messages: [{ role: "user", content: "hi" }] })).toBe(true);
    const whole = countTextsTokens(pieces);
    // the same count, but for rounding: the characters past the tokenizer's share are estimated either way
    expect(Math.abs((exchange.usage?.output ?? 0) - whole)).toBeLessThanOrEqual(whole / 1000);
  });

  it("counts a stream's output as one text, not delta by delta (a word split across deltas is one token)", () => {
    const text = "The gateway relays every answer as it arrives, and bills what it relayed. ".repeat(20);
    const fallback = new UsageFallback();
    // as Anthropic-style streams split text: a few characters a delta, mid-word
    for (let at = 0; at < text.length; at += 3 + (at % 5)) fallback.add(text.slice(at, at + 3 + (at % 5)));
    const exchange = new Exchange("req_split" as RequestId, "/v1/chat/completions", "openai");
    fallback.settle(exchange, { messages: [{ role: "user", content: "hi" }] });
    expect(exchange.usage?.output).toBe(countTextsTokens([text]));
  });

  /** A supplier's stream that repeats `piece` and never ends an event; `sent()` is what it wrote so far. */
  function endlessEvent(piece: string) {
    let sent = 0;
    const chunk = Buffer.from(piece);
    const response = {
      maxBytes: 6_000,
      async *stream() {
        for (let index = 0; index < 100_000; index++) {
          sent += chunk.length;
          yield chunk;
        }
      },
    } as unknown as UpstreamResponse;
    const read = async () => {
      for await (const _ of readSse(response)) {
        // no event ever ends
      }
    };
    return { read, sent: () => sent, size: chunk.length };
  }

  it("ends a stream whose event never ends once the bytes since the last event pass max_response_bytes", async () => {
    // an event of empty data lines that never ends: one character each to the parser's own bound
    const stream = endlessEvent("data:\n");
    await expect(stream.read()).rejects.toBeInstanceOf(LetheError);
    await expect(stream.read()).rejects.toMatchObject({ code: "LETHE_UPSTREAM_BAD_RESPONSE" });
    // cut at the byte bound, not after six times as many bytes (the parser counted characters of data)
    expect(stream.sent()).toBeLessThanOrEqual(2 * (6_000 + stream.size));
  });

  it("refuses an event larger than max_response_bytes that comes whole in one read", async () => {
    const response = (event: string) =>
      ({
        maxBytes: 6_000,
        async *stream() {
          yield Buffer.from(`data: {"small":1}\n\n${event}`);
        },
      }) as unknown as UpstreamResponse;
    const read = async (event: string) => {
      const data: string[] = [];
      for await (const message of readSse(response(event))) data.push(message.data);
      return data;
    };
    // 6,002 bytes in 2,002 characters: counted in bytes, as the bound is written
    await expect(read(`data: "${"€".repeat(2_000)}"\n\n`)).rejects.toMatchObject({
      code: "LETHE_UPSTREAM_BAD_RESPONSE",
    });
    expect(await read(`data: "${"x".repeat(5_990)}"\n\n`)).toHaveLength(2);
  });

  it("counts an unfinished event's bytes across the comments between its lines", async () => {
    // a comment after every data line: comments take nothing off what the event itself holds
    const stream = endlessEvent("data:\n:\n");
    await expect(stream.read()).rejects.toMatchObject({ code: "LETHE_UPSTREAM_BAD_RESPONSE" });
    expect(stream.sent()).toBeLessThanOrEqual(2 * 6_000);
  });
});
