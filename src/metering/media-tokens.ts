/**
 * Input tokens of what the tokenizer cannot read: images and documents other than plain
 * text. A supplier counts them by their pixels and pages, which Lethe does not decode, so
 * they are counted here at the most a supplier counts one (images, documents sent by
 * reference) or from a PDF's page count (documents sent inline).
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
 * Tokens a PDF page is counted at: Anthropic reads each page as its text and an image of
 * it, 1,500 to 3,000 tokens a page by its documentation.
 */
export const PDF_TOKENS_PER_PAGE = 2_000;

/** Pages Anthropic reads of a PDF at most (a longer one is refused). */
const PDF_MAX_PAGES = 100;

/**
 * The most input tokens a document not sent as plain text is counted at: a PDF of
 * PDF_MAX_PAGES pages. A document sent by reference (Anthropic's `url` or `file` source,
 * OpenAI's `file_id`) is a few bytes of the body, which then bounds nothing.
 */
export const DOCUMENT_INPUT_TOKENS_BOUND = PDF_MAX_PAGES * PDF_TOKENS_PER_PAGE;

/**
 * A PDF's pages where its page objects can be read: `/Type /Page` (not `/Pages`), outside
 * compressed object streams. A PDF that keeps them compressed is guessed at a page per
 * 50 KB, a rough size of a page with its fonts.
 */
const PAGE_OBJECT = /\/Type\s*\/Page(?![A-Za-z])/g;
const BYTES_PER_UNREADABLE_PAGE = 50_000;

function pdfPages(base64: string): number {
  const pdf = Buffer.from(base64, "base64");
  let pages = 0;
  for (const _ of pdf.toString("latin1").matchAll(PAGE_OBJECT)) pages++;
  if (pages === 0) pages = Math.ceil(pdf.length / BYTES_PER_UNREADABLE_PAGE);
  return Math.min(PDF_MAX_PAGES, Math.max(1, pages));
}

/**
 * How media are counted: `estimate`, an inline PDF by its pages (metering a supplier's
 * answer that came without usage, a local count_tokens); `bound`, an inline one at a token
 * a byte of its base64, as the body's size bounds everything else, up to
 * DOCUMENT_INPUT_TOKENS_BOUND (a credit reservation, which must not fall short).
 */
export type MediaCount = "estimate" | "bound";

const IMAGE_PARTS = new Set(["image_url", "image", "input_image"]);
const REFERENCED_SOURCES = new Set(["url", "file"]);

/**
 * Input tokens of the media in a request's messages: image parts (OpenAI `image_url`,
 * Anthropic `image`), Anthropic `document` blocks other than text, OpenAI `file` parts,
 * tool results' own blocks included. `inline: false` leaves out the documents whose bytes
 * are in the body (its size already bounds them): what the body's size does not bound.
 */
export function mediaInputTokens(messages: unknown, count: MediaCount, inline = true): number {
  if (!Array.isArray(messages)) return 0;
  let tokens = 0;
  for (const message of messages) {
    const content = (message as { content?: unknown } | null)?.content;
    // most messages are a string: one check each
    if (Array.isArray(content)) tokens += mediaIn(content, count, inline);
  }
  return tokens;
}

function mediaIn(parts: unknown[], count: MediaCount, inline: boolean): number {
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
      if (REFERENCED_SOURCES.has(source.type as string)) tokens += DOCUMENT_INPUT_TOKENS_BOUND;
      else if (source.type === "base64" && inline) tokens += inlineDocument(source.data, count);
    } else if (type === "file" && typeof file === "object" && file !== null) {
      if (file.file_data === undefined) tokens += DOCUMENT_INPUT_TOKENS_BOUND;
      else if (inline) tokens += inlineDocument(dataUrlPayload(file.file_data), count);
    }
    // an Anthropic tool_result holds blocks of its own
    else if (type === "tool_result" && Array.isArray(content)) tokens += mediaIn(content, count, inline);
  }
  return tokens;
}

function inlineDocument(base64: unknown, count: MediaCount): number {
  if (typeof base64 !== "string") return 0;
  if (count === "bound") return Math.min(DOCUMENT_INPUT_TOKENS_BOUND, base64.length);
  return pdfPages(base64) * PDF_TOKENS_PER_PAGE;
}

/** OpenAI's `file_data` is a data URL (`data:application/pdf;base64,...`); its base64 part. */
function dataUrlPayload(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const comma = value.startsWith("data:") ? value.indexOf(",") : -1;
  return comma === -1 ? value : value.slice(comma + 1);
}
