import { base64DataUrl } from "../formats/surface/data-url.js";
import { PDF_MAX_PAGES, pdfPages } from "./pdf-pages.js";

/**
 * Input tokens of what the tokenizer cannot read: images and documents other than plain
 * text. A supplier counts them by their pixels and pages, which Lethe does not decode, so
 * they are counted here at the most a supplier counts one (images, documents sent by
 * reference) or from a PDF's page count (documents sent inline), where it can be read.
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

/** The most a PDF page is counted at: 3,000 tokens of text and its image at most (about 1,600). */
export const PDF_PAGE_TOKENS_BOUND = 4_600;

/**
 * A document not sent as plain text whose pages Lethe cannot count: one sent by reference
 * (Anthropic's `url` or `file` source, OpenAI's `file_id`), a few bytes of the body, or a
 * PDF whose pages cannot be read (pdf-pages.ts). Counted as a PDF of PDF_MAX_PAGES pages: at
 * most (the bound, for credit holds), or at PDF_TOKENS_PER_PAGE (the estimate).
 */
export const DOCUMENT_INPUT_TOKENS_BOUND = PDF_MAX_PAGES * PDF_PAGE_TOKENS_BOUND;
export const DOCUMENT_INPUT_TOKENS_ESTIMATE = PDF_MAX_PAGES * PDF_TOKENS_PER_PAGE;

/** A PDF without readable page objects is estimated at a page per 50 KB (a page with its fonts). */
const BYTES_PER_UNREADABLE_PAGE = 50_000;

/**
 * How media are counted: `estimate`, as metering may (an answer that came without usage,
 * a local count_tokens); `bound`, at the most a supplier counts them, as a credit hold
 * must, so that no charge, the supplier's or Lethe's estimate, exceeds what was held.
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
 * A PDF sent inline, by its readable pages: at most PDF_PAGE_TOKENS_BOUND a page (bound),
 * or PDF_TOKENS_PER_PAGE (estimate). One whose pages cannot be read is bound as the
 * longest PDF, and estimated at a page per 50 KB.
 */
function inlineDocument(holder: object, base64: unknown, count: MediaCount): number {
  if (typeof base64 !== "string") return 0;
  const { pages, bytes } = readPdf(holder, base64);
  if (count === "bound") return pages === 0 ? DOCUMENT_INPUT_TOKENS_BOUND : pages * PDF_PAGE_TOKENS_BOUND;
  const estimated = pages > 0 ? pages : Math.ceil(bytes / BYTES_PER_UNREADABLE_PAGE);
  return Math.min(PDF_MAX_PAGES, Math.max(1, estimated)) * PDF_TOKENS_PER_PAGE;
}

/**
 * A request's PDF is counted several times (its credit hold, a tighter count when credit
 * is short, the estimate an answer without usage is billed by): read once, by the object
 * that holds it in the parsed body, which lives as long as the request.
 */
const readPdfs = new WeakMap<object, { pages: number; bytes: number }>();

function readPdf(holder: object, base64: string): { pages: number; bytes: number } {
  let read = readPdfs.get(holder);
  if (read === undefined) {
    const pdf = Buffer.from(base64, "base64");
    read = { pages: pdfPages(pdf), bytes: pdf.length };
    readPdfs.set(holder, read);
  }
  return read;
}

/** OpenAI's `file_data`: a data URL (`data:application/pdf;base64,...`), or bare base64. */
function dataUrlPayload(value: unknown): unknown {
  return typeof value === "string" ? (base64DataUrl(value)?.payload ?? value) : value;
}
