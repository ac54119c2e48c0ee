import { inflateSync } from "node:zlib";

/** Pages Anthropic reads of a PDF at most (a longer one is refused). */
export const PDF_MAX_PAGES = 100;

const PAGE_OBJECT = /\/Type\s*\/Page(?![A-Za-z])/g;
// a page tree node's page count (an outline item's too: it can only raise the count)
const PAGE_COUNT = /\/Count\s+(\d{1,9})/g;
const OBJECT_STREAM = /\/Type\s*\/ObjStm/g;
/** What one PDF's object streams may inflate to, together: a deflate bomb stops there. */
const INFLATED_BUDGET = 16 * 2 ** 20;

/**
 * The most pages a PDF can be read to have, up to PDF_MAX_PAGES: the larger of its page
 * objects and the largest `/Count` of its page tree, in the file itself and in its object
 * streams (PDF 1.5's compressed objects, where pdfTeX and qpdf keep the page tree),
 * inflated. 0 when nothing can be read. It errs high, never low, where it errs: an
 * incremental update that rewrites a page counts it twice, which a credit hold can afford.
 */
export function pdfPages(pdf: Buffer): number {
  const text = pdf.toString("latin1");
  let pages = pagesIn(text);
  let budget = INFLATED_BUDGET;
  OBJECT_STREAM.lastIndex = 0;
  for (let found = OBJECT_STREAM.exec(text); found !== null; found = OBJECT_STREAM.exec(text)) {
    if (pages >= PDF_MAX_PAGES || budget <= 0) break;
    const inflated = inflateStreamAfter(pdf, text, found.index, budget);
    if (inflated === null) continue;
    budget -= inflated.length;
    pages = Math.max(pages, pagesIn(inflated.toString("latin1")));
  }
  return Math.min(PDF_MAX_PAGES, pages);
}

function pagesIn(text: string): number {
  let objects = 0;
  PAGE_OBJECT.lastIndex = 0;
  while (objects < PDF_MAX_PAGES && PAGE_OBJECT.exec(text) !== null) objects++;
  let counted = 0;
  PAGE_COUNT.lastIndex = 0;
  for (let count = PAGE_COUNT.exec(text); count !== null; count = PAGE_COUNT.exec(text)) {
    counted = Math.max(counted, Number(count[1]));
  }
  return Math.max(objects, counted);
}

/**
 * The stream that follows a dictionary key at `at`, inflated (FlateDecode, as object
 * streams are); null when it is not deflated, is cut short or inflates past `budget`.
 */
function inflateStreamAfter(pdf: Buffer, text: string, at: number, budget: number): Buffer | null {
  const keyword = text.indexOf("stream", at);
  if (keyword === -1) return null;
  let start = keyword + "stream".length;
  if (text[start] === "\r") start++;
  if (text[start] === "\n") start++;
  const end = text.indexOf("endstream", start);
  if (end === -1) return null;
  try {
    return inflateSync(pdf.subarray(start, end), { maxOutputLength: budget });
  } catch {
    return null;
  }
}
