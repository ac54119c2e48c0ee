import { describe, expect, it } from "vitest";
import { estimateInputTokens } from "../src/metering/count-tokens.js";
import {
  DOCUMENT_INPUT_TOKENS_BOUND,
  IMAGE_INPUT_TOKENS_BOUND,
  mediaInputTokens,
  PDF_TOKENS_PER_PAGE,
} from "../src/metering/media-tokens.js";

/** Images and documents, which the tokenizer cannot read, counted for metering and for credit holds. */

const onePagePdf = Buffer.from("%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF").toString("base64");
/** No readable page object (kept in a compressed object stream): guessed at a page per 50 KB. */
const opaquePdf = Buffer.alloc(120_000, 7).toString("base64");

const user = (content: unknown[]) => [{ role: "user", content }];

describe("mediaInputTokens", () => {
  it("counts images and referenced documents at their bound, whatever the count", () => {
    const messages = user([
      { type: "image_url", image_url: { url: "https://example.test/a.png" } },
      { type: "image", source: { type: "url", url: "https://example.test/b.png" } },
      { type: "document", source: { type: "url", url: "https://example.test/c.pdf" } },
      { type: "file", file: { file_id: "file-abc" } },
    ]);
    const expected = 2 * IMAGE_INPUT_TOKENS_BOUND + 2 * DOCUMENT_INPUT_TOKENS_BOUND;
    expect(mediaInputTokens(messages, "estimate")).toBe(expected);
    expect(mediaInputTokens(messages, "bound")).toBe(expected);
  });

  it("estimates an inline PDF by its pages (Anthropic's base64 source, OpenAI's file_data data URL)", () => {
    const anthropic = user([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: onePagePdf } },
    ]);
    const openai = user([
      { type: "file", file: { filename: "a.pdf", file_data: `data:application/pdf;base64,${onePagePdf}` } },
    ]);
    expect(mediaInputTokens(anthropic, "estimate")).toBe(PDF_TOKENS_PER_PAGE);
    expect(mediaInputTokens(openai, "estimate")).toBe(PDF_TOKENS_PER_PAGE);
    const opaque = user([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: opaquePdf } },
    ]);
    expect(mediaInputTokens(opaque, "estimate")).toBe(3 * PDF_TOKENS_PER_PAGE);
  });

  it("bounds an inline document at a token a byte of its base64, and leaves it out where the body's size bounds it", () => {
    const messages = user([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: opaquePdf } },
    ]);
    expect(mediaInputTokens(messages, "bound")).toBe(Math.min(DOCUMENT_INPUT_TOKENS_BOUND, opaquePdf.length));
    expect(mediaInputTokens(messages, "bound", false)).toBe(0);
    expect(mediaInputTokens(user([{ type: "image", source: { type: "url", url: "u" } }]), "bound", false)).toBe(
      IMAGE_INPUT_TOKENS_BOUND,
    );
  });

  it("looks inside tool results, and ignores what is not media", () => {
    const messages = user([
      { type: "tool_result", tool_use_id: "t", content: [{ type: "image", source: { type: "url", url: "u" } }] },
      { type: "text", text: "hello" },
      { type: "document", source: { type: "text", media_type: "text/plain", data: "read by the tokenizer" } },
      null,
      "stray",
    ]);
    expect(mediaInputTokens(messages, "estimate")).toBe(IMAGE_INPUT_TOKENS_BOUND);
    expect(mediaInputTokens("not messages", "estimate")).toBe(0);
  });
});

describe("estimateInputTokens", () => {
  it("meters a request's media with its text, so an answer without usage is not billed as text alone", () => {
    const text = { model: "m", messages: [{ role: "user", content: "Describe this." }] };
    const withImage = {
      model: "m",
      messages: user([
        { type: "text", text: "Describe this." },
        { type: "image_url", image_url: { url: "https://example.test/a.png" } },
      ]),
    };
    expect(estimateInputTokens(withImage)).toBe(estimateInputTokens(text) + IMAGE_INPUT_TOKENS_BOUND);
  });
});
