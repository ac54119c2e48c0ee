import { inflateSync } from "node:zlib";

/** Pages Anthropic reads of a PDF at most (a longer one is refused). */
export const PDF_MAX_PAGES = 100;

const PAGE_OBJECT = /\/Type\s*\/Page(?![A-Za-z#])/g;
// a page tree node's page count (an outline item's too: it can only raise the count)
const PAGE_COUNT = /\/Count\s+(\d+)(\s+\d+\s+R)?/g;
const OBJECT_STREAM = /\/Type\s*\/ObjStm(?![A-Za-z#])/g;
// a name written with `#xx` escapes (`/P#61ge` is `/Page`): decoded to see whether it hides one of ours
const ESCAPED_NAME = /\/[^\s/<>[\]()%{}]*#[0-9A-Fa-f]{2}[^\s/<>[\]()%{}]*/g;
const NAMES_READ = new Set(["/Type", "/Page", "/Pages", "/Count", "/ObjStm"]);
/** What one PDF's object streams may inflate to, together: a deflate bomb stops there. */
const INFLATED_BUDGET = 16 * 2 ** 20;
/** Object streams read at most: past them the PDF is not read (a hostile one may hold thousands). */
const MAX_OBJECT_STREAMS = 256;
/** Escaped names looked at at most: past them the PDF is not read (each costs a decode). */
const MAX_ESCAPED_NAMES = 4_096;

/**
 * An estimate of a PDF's pages, up to PDF_MAX_PAGES, or 0 when they cannot be read: for
 * metering's estimates, never for a credit hold (a PDF written to mislead can read as
 * fewer pages than a reader finds: comments or NUL between tokens, untyped objects). The
 * count is the larger of its page objects and the largest `/Count` of its page tree, in
 * the file itself and in its object streams (PDF 1.5's compressed objects, where pdfTeX
 * and qpdf keep the page tree), inflated. What is not read in full makes it unknown
 * rather than smaller, since a small readable count could sit beside the real tree: an
 * object stream that does not inflate (another filter, a bomb past the budget), a
 * `/Count` by reference, a name that hides `/Page` behind `#` escapes. Its cost is
 * bounded: each object stream is inflated once, within a budget, and the first failure
 * ends the reading.
 */
export function pdfPages(pdf: Buffer): number {
  const text = pdf.toString("latin1");
  let pages = pagesIn(text);
  if (pages === UNKNOWN) return 0;
  let budget = INFLATED_BUDGET;
  let streams = 0;
  OBJECT_STREAM.lastIndex = 0;
  for (let found = OBJECT_STREAM.exec(text); found !== null; found = OBJECT_STREAM.exec(text)) {
    if (++streams > MAX_OBJECT_STREAMS || budget <= 0) return 0;
    const stream = streamAfter(text, found.index);
    if (stream === null) return 0;
    let inflated: Buffer;
    try {
      inflated = inflateSync(pdf.subarray(stream.start, stream.end), { maxOutputLength: budget });
    } catch {
      return 0;
    }
    budget -= inflated.length;
    const inside = pagesIn(inflated.toString("latin1"));
    // an object stream may hold the document's own text (annotations, form fields): wiped once read
    inflated.fill(0);
    if (inside === UNKNOWN) return 0;
    pages = Math.max(pages, inside);
    // the next key is looked for past this stream: each stream is read once, the text scanned once
    OBJECT_STREAM.lastIndex = stream.end;
  }
  return Math.min(PDF_MAX_PAGES, pages);
}

const UNKNOWN = -1;

function pagesIn(text: string): number {
  ESCAPED_NAME.lastIndex = 0;
  let escaped = 0;
  for (let name = ESCAPED_NAME.exec(text); name !== null; name = ESCAPED_NAME.exec(text)) {
    if (++escaped > MAX_ESCAPED_NAMES) return UNKNOWN;
    const decoded = name[0].replace(/#([0-9A-Fa-f]{2})/g, (_, hex: string) =>
      String.fromCharCode(Number.parseInt(hex, 16)),
    );
    if (NAMES_READ.has(decoded)) return UNKNOWN;
  }
  let objects = 0;
  PAGE_OBJECT.lastIndex = 0;
  while (objects < PDF_MAX_PAGES && PAGE_OBJECT.exec(text) !== null) objects++;
  let counted = 0;
  PAGE_COUNT.lastIndex = 0;
  for (let count = PAGE_COUNT.exec(text); count !== null; count = PAGE_COUNT.exec(text)) {
    // `/Count 7 0 R`: the count is in object 7, not 7
    if (count[2] !== undefined) return UNKNOWN;
    counted = Math.max(counted, Number(count[1]));
  }
  return Math.max(objects, counted);
}

/** Where the stream after a dictionary key at `at` starts and ends; null when there is none. */
function streamAfter(text: string, at: number): { start: number; end: number } | null {
  const keyword = text.indexOf("stream", at);
  if (keyword === -1) return null;
  let start = keyword + "stream".length;
  if (text[start] === "\r") start++;
  if (text[start] === "\n") start++;
  const end = text.indexOf("endstream", start);
  return end === -1 ? null : { start, end };
}
