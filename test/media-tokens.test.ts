import { describe, expect, it } from "vitest";
import { estimateInputTokens } from "../src/metering/count-tokens.js";
import {
  DOCUMENT_INPUT_TOKENS_BOUND,
  DOCUMENT_INPUT_TOKENS_ESTIMATE,
  IMAGE_INPUT_TOKENS_BOUND,
  mediaInputTokens,
  PDF_PAGE_TOKENS_BOUND,
  PDF_TOKENS_PER_PAGE,
} from "../src/metering/media-tokens.js";

/** Images and documents, which the tokenizer cannot read, counted for metering and for credit holds. */

const onePagePdf = Buffer.from("%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF").toString("base64");
/** No readable page object (kept in a compressed object stream): guessed at a page per 50 KB. */
const opaquePdf = Buffer.alloc(120_000, 7).toString("base64");

const user = (content: unknown[]) => [{ role: "user", content }];

describe("mediaInputTokens", () => {
  it("counts images at their bound, and documents by reference as the longest PDF (bound) or its estimate", () => {
    const messages = user([
      { type: "image_url", image_url: { url: "https://example.test/a.png" } },
      { type: "image", source: { type: "url", url: "https://example.test/b.png" } },
      { type: "document", source: { type: "url", url: "https://example.test/c.pdf" } },
      { type: "file", file: { file_id: "file-abc" } },
    ]);
    expect(mediaInputTokens(messages, "estimate")).toBe(
      2 * IMAGE_INPUT_TOKENS_BOUND + 2 * DOCUMENT_INPUT_TOKENS_ESTIMATE,
    );
    expect(mediaInputTokens(messages, "bound")).toBe(2 * IMAGE_INPUT_TOKENS_BOUND + 2 * DOCUMENT_INPUT_TOKENS_BOUND);
  });

  it("counts an inline PDF by its pages (Anthropic's base64 source, OpenAI's file_data data URL)", () => {
    const anthropic = user([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: onePagePdf } },
    ]);
    const openai = user([
      { type: "file", file: { filename: "a.pdf", file_data: `data:application/pdf;base64,${onePagePdf}` } },
    ]);
    // a data URL with parameters (a name) is a data URL all the same
    const named = user([{ type: "file", file: { file_data: `data:application/PDF;name=a.pdf;base64,${onePagePdf}` } }]);
    for (const messages of [anthropic, openai, named]) {
      expect(mediaInputTokens(messages, "estimate")).toBe(PDF_TOKENS_PER_PAGE);
      // a hold does not trust what the file says of its pages
      expect(mediaInputTokens(messages, "bound")).toBe(DOCUMENT_INPUT_TOKENS_BOUND);
    }
  });

  it("estimates a PDF by its pages whatever its size, and holds any at the longest a supplier reads", () => {
    const blankPages = Buffer.from(`%PDF-1.4\n${"<< /Type /Page >>\n".repeat(100)}%%EOF`).toString("base64");
    const blank = user([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: blankPages } },
    ]);
    expect(mediaInputTokens(blank, "estimate")).toBe(100 * PDF_TOKENS_PER_PAGE);
    expect(mediaInputTokens(blank, "bound")).toBe(100 * PDF_PAGE_TOKENS_BOUND);
    const scan = Buffer.concat([Buffer.from("%PDF-1.4\n<< /Type /Page >>\n"), Buffer.alloc(1_500_000, 1)]).toString(
      "base64",
    );
    const scanned = user([{ type: "document", source: { type: "base64", media_type: "application/pdf", data: scan } }]);
    expect(mediaInputTokens(scanned, "estimate")).toBe(PDF_TOKENS_PER_PAGE);
    expect(mediaInputTokens(scanned, "bound")).toBe(DOCUMENT_INPUT_TOKENS_BOUND);
  });

  it("bounds a PDF whose pages cannot be read as the longest, and estimates it at a page per 50 KB", () => {
    const messages = user([
      { type: "document", source: { type: "base64", media_type: "application/pdf", data: opaquePdf } },
    ]);
    expect(mediaInputTokens(messages, "bound")).toBe(DOCUMENT_INPUT_TOKENS_BOUND);
    expect(mediaInputTokens(messages, "estimate")).toBe(3 * PDF_TOKENS_PER_PAGE);
  });

  it("never estimates above its bound, so no charge Lethe estimates exceeds what was held", () => {
    const cases = [onePagePdf, opaquePdf, Buffer.alloc(10_000_000, 3).toString("base64")];
    for (const data of cases) {
      const messages = user([{ type: "document", source: { type: "base64", media_type: "application/pdf", data } }]);
      expect(mediaInputTokens(messages, "estimate")).toBeLessThanOrEqual(mediaInputTokens(messages, "bound"));
    }
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
