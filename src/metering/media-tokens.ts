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

/** Pages Anthropic reads of a PDF at most (a longer one is refused). */
const PDF_MAX_PAGES = 100;

/**
 * A document not sent as plain text whose pages Lethe cannot count: one sent by reference
 * (Anthropic's `url` or `file` source, OpenAI's `file_id`), a few bytes of the body, or a
 * PDF that keeps its page objects compressed. Counted as a PDF of PDF_MAX_PAGES pages: at
 * most (the bound, for credit holds), or at PDF_TOKENS_PER_PAGE (the estimate).
 */
export const DOCUMENT_INPUT_TOKENS_BOUND = PDF_MAX_PAGES * PDF_PAGE_TOKENS_BOUND;
export const DOCUMENT_INPUT_TOKENS_ESTIMATE = PDF_MAX_PAGES * PDF_TOKENS_PER_PAGE;

/**
 * A PDF's page objects (`/Type /Page`, not `/Pages`), where they are not inside compressed
 * object streams; counted up to PDF_MAX_PAGES. 0 when none can be read.
 */
const PAGE_OBJECT = /\/Type\s*\/Page(?![A-Za-z])/g;

function readablePages(pdf: Buffer): number {
  const text = pdf.toString("latin1");
  PAGE_OBJECT.lastIndex = 0;
  let pages = 0;
  while (pages < PDF_MAX_PAGES && PAGE_OBJECT.exec(text) !== null) pages++;
  return pages;
}

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
      else if (source.type === "base64") tokens += inlineDocument(source.data, count);
    } else if (type === "file" && typeof file === "object" && file !== null) {
      if (file.file_data === undefined) tokens += unreadDocument(count);
      else tokens += inlineDocument(dataUrlPayload(file.file_data), count);
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
function inlineDocument(base64: unknown, count: MediaCount): number {
  if (typeof base64 !== "string") return 0;
  const pdf = Buffer.from(base64, "base64");
  const pages = readablePages(pdf);
  if (count === "bound") return pages === 0 ? DOCUMENT_INPUT_TOKENS_BOUND : pages * PDF_PAGE_TOKENS_BOUND;
  const estimated = pages > 0 ? pages : Math.ceil(pdf.length / BYTES_PER_UNREADABLE_PAGE);
  return Math.min(PDF_MAX_PAGES, Math.max(1, estimated)) * PDF_TOKENS_PER_PAGE;
}

/** OpenAI's `file_data` is a data URL (`data:application/pdf;base64,...`); its base64 part. */
function dataUrlPayload(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const comma = value.startsWith("data:") ? value.indexOf(",") : -1;
  return comma === -1 ? value : value.slice(comma + 1);
}
