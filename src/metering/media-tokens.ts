import { base64DataUrl } from "../formats/surface/data-url.js";
import { PDF_MAX_PAGES, pdfPages } from "./pdf-pages.js";

/**
 * Input tokens of what the tokenizer cannot read: images and documents other than plain
 * text. A supplier counts them by their pixels and pages, which Lethe does not decode, so
 * they are counted here at the most a supplier counts one for a credit hold, and a PDF
 * sent inline by its pages, where they can be read, for an estimate.
 */

/**
 * The most input tokens one image is counted at by the suppliers Lethe speaks to: Anthropic
 * counts about 1,600 for its largest images (width × height / 750), OpenAI's patch-counted
 * models up to 1,536 patches times a model multiplier of at most 1.72 (2,642), its
 * tile-counted ones 1,105. An image sent by URL is a few bytes of the body, so the body's
 * size does not bound it, and the tokenizer sees no text in it: without this bound an
 * account short of credit could send images for nearly nothing reserved.
 */
export const IMAGE_INPUT_TOKENS_BOUND = 2_700;

/**
 * Tokens a PDF page is estimated at: Anthropic reads each page as its text and an image
 * of it, 1,500 to 3,000 tokens a page of text by its documentation, and the page image.
 */
export const PDF_TOKENS_PER_PAGE = 2_000;

/** A PDF page held at 3,000 tokens of text, the most Anthropic documents, and its image (about 1,600). */
export const PDF_PAGE_TOKENS_BOUND = 4_600;

/**
 * A document not sent as plain text, for a credit hold: a PDF of PDF_MAX_PAGES pages at
 * PDF_PAGE_TOKENS_BOUND; as an estimate, at PDF_TOKENS_PER_PAGE. A document sent by
 * reference (Anthropic's `url` or `file` source, OpenAI's `file_id`) is counted so too.
 */
export const DOCUMENT_INPUT_TOKENS_BOUND = PDF_MAX_PAGES * PDF_PAGE_TOKENS_BOUND;
export const DOCUMENT_INPUT_TOKENS_ESTIMATE = PDF_MAX_PAGES * PDF_TOKENS_PER_PAGE;

/** A PDF without readable page objects is estimated at a page per 50 KB (a page with its fonts). */
const BYTES_PER_UNREADABLE_PAGE = 50_000;

/**
 * How media are counted: `estimate`, as metering may (an answer that came without usage,
 * a local count_tokens); `bound`, at the most a supplier counts them, as a credit hold
 * must, so that Lethe's estimate never exceeds what was held, nor does a supplier's count
 * of an ordinary document (a PDF's pages of very dense text may exceed 3,000 tokens each).
 */
export type MediaCount = "estimate" | "bound";

const IMAGE_PARTS = new Set(["image_url", "image", "input_image"]);
const REFERENCED_SOURCES = new Set(["url", "file"]);

/**
 * Input tokens of the media in a request's messages: image parts (OpenAI `image_url`,
 * Anthropic `image`), Anthropic `document` blocks other than text, OpenAI `file` parts,
 * tool results' own blocks included.
 */
export function mediaInputTokens(messages: unknown, count: MediaCount): number {
  if (!Array.isArray(messages)) return 0;
  let tokens = 0;
  for (const message of messages) {
    const content = (message as { content?: unknown } | null)?.content;
    // most messages are a string: one check each
    if (Array.isArray(content)) tokens += mediaIn(content, count);
  }
  return tokens;
}

function mediaIn(parts: unknown[], count: MediaCount): number {
  let tokens = 0;
  for (const part of parts) {
    if (typeof part !== "object" || part === null) continue;
    const { type, content, source, file } = part as {
      type?: unknown;
      content?: unknown;
      source?: { type?: unknown; data?: unknown };
      file?: { file_id?: unknown; file_data?: unknown };
    };
    if (typeof type === "string" && IMAGE_PARTS.has(type)) tokens += IMAGE_INPUT_TOKENS_BOUND;
    else if (type === "document" && typeof source === "object" && source !== null) {
      // text and content sources are read by the tokenizer (count-tokens.ts)
      if (REFERENCED_SOURCES.has(source.type as string)) tokens += unreadDocument(count);
      else if (source.type === "base64") tokens += inlineDocument(source, source.data, count);
    } else if (type === "file" && typeof file === "object" && file !== null) {
      if (file.file_data === undefined) tokens += unreadDocument(count);
      else tokens += inlineDocument(file, dataUrlPayload(file.file_data), count);
    }
    // an Anthropic tool_result holds blocks of its own
    else if (type === "tool_result" && Array.isArray(content)) tokens += mediaIn(content, count);
  }
  return tokens;
}

function unreadDocument(count: MediaCount): number {
  return count === "bound" ? DOCUMENT_INPUT_TOKENS_BOUND : DOCUMENT_INPUT_TOKENS_ESTIMATE;
}

/**
 * A PDF sent inline. Its credit hold is the longest PDF a supplier reads: its pages are
 * read from the file only as an estimate (pdf-pages.ts), which a PDF written to mislead
 * (its page tree behind comments, filters or escapes a reader takes in its stride) can
 * bring below its true count, and a hold must not fall short. The estimate is its pages
 * at PDF_TOKENS_PER_PAGE, or, when none can be read, a page per 50 KB.
 */
function inlineDocument(holder: object, base64: unknown, count: MediaCount): number {
  if (typeof base64 !== "string") return 0;
  if (count === "bound") return DOCUMENT_INPUT_TOKENS_BOUND;
  const { pages, bytes } = readPdf(holder, base64);
  const estimated = pages > 0 ? pages : Math.ceil(bytes / BYTES_PER_UNREADABLE_PAGE);
  return Math.min(PDF_MAX_PAGES, Math.max(1, estimated)) * PDF_TOKENS_PER_PAGE;
}

/**
 * A request's PDF may be estimated more than once (a local count_tokens, the estimate an
 * answer without usage is billed by, a translated stream's first event): read once, by
 * the object that holds it in the parsed body, which lives as long as the request.
 */
const readPdfs = new WeakMap<object, { pages: number; bytes: number }>();

function readPdf(holder: object, base64: string): { pages: number; bytes: number } {
  let read = readPdfs.get(holder);
  if (read === undefined) {
    const pdf = Buffer.from(base64, "base64");
    read = { pages: pdfPages(pdf), bytes: pdf.length };
    // the client's document, decoded: wiped once read, as request bodies are (docs/zdr.md)
    pdf.fill(0);
    readPdfs.set(holder, read);
  }
  return read;
}

/** OpenAI's `file_data`: a data URL (`data:application/pdf;base64,...`), or bare base64. */
function dataUrlPayload(value: unknown): unknown {
  return typeof value === "string" ? (base64DataUrl(value)?.payload ?? value) : value;
}
