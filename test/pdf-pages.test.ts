import { deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { PDF_MAX_PAGES, pdfPages } from "../src/metering/pdf-pages.js";

/** PDFs written by hand, in the shapes writers make: plain objects, object streams, incremental updates. */

const pageTree = (count: number) => `<< /Type /Pages /Kids [] /Count ${count} >>`;
const page = "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>";

/** An object stream (PDF 1.5) holding `objects`, deflated as pdfTeX and qpdf write them. */
function objectStream(objects: string[]): Buffer {
  const body = deflateSync(Buffer.from(objects.join("\n")));
  return Buffer.concat([
    Buffer.from(
      `5 0 obj\n<< /Type /ObjStm /N ${objects.length} /First 0 /Filter /FlateDecode /Length ${body.length} >>\nstream\n`,
    ),
    body,
    Buffer.from("\nendstream\nendobj\n"),
  ]);
}

describe("pdfPages", () => {
  it("counts page objects written plainly, and reads the page tree's /Count", () => {
    const plain = Buffer.from(
      `%PDF-1.4\n1 0 obj ${pageTree(3)} endobj\n${[1, 2, 3].map((n) => `${n + 2} 0 obj ${page} endobj`).join("\n")}\n%%EOF`,
    );
    expect(pdfPages(plain)).toBe(3);
    // the page objects alone (no tree), or the tree alone
    expect(pdfPages(Buffer.from(`%PDF-1.4\n${page.repeat(7)}\n%%EOF`))).toBe(7);
    expect(pdfPages(Buffer.from(`%PDF-1.4\n${pageTree(42)}\n%%EOF`))).toBe(42);
  });

  it("reads a page tree kept in a deflated object stream, with no page object in sight", () => {
    const pdf = Buffer.concat([
      Buffer.from("%PDF-1.5\n"),
      objectStream([pageTree(40), ...Array.from({ length: 40 }, () => page)]),
      Buffer.from("%%EOF"),
    ]);
    expect(pdf.toString("latin1")).not.toContain("/Type /Page ");
    expect(pdfPages(pdf)).toBe(40);
  });

  it("errs high on an incremental update that rewrites one page plainly over an object stream of many", () => {
    const pdf = Buffer.concat([
      Buffer.from("%PDF-1.5\n"),
      objectStream([pageTree(100), ...Array.from({ length: 100 }, () => page)]),
      Buffer.from(`%%EOF\n7 0 obj ${page} endobj\n%%EOF`),
    ]);
    expect(pdfPages(pdf)).toBe(100);
  });

  it("stops at the most Anthropic reads, and says 0 when nothing can be read", () => {
    expect(pdfPages(Buffer.from(`%PDF-1.4\n${pageTree(5000)}\n%%EOF`))).toBe(PDF_MAX_PAGES);
    expect(pdfPages(Buffer.from(`%PDF-1.4\n${page.repeat(500)}`))).toBe(PDF_MAX_PAGES);
    expect(pdfPages(Buffer.alloc(100_000, 7))).toBe(0);
    // an object stream that is not deflate, or cut short, reads as nothing
    const broken = Buffer.from("%PDF-1.5\n5 0 obj << /Type /ObjStm >>\nstream\nnot deflate at all\nendstream\n%%EOF");
    expect(pdfPages(broken)).toBe(0);
    expect(pdfPages(Buffer.from("%PDF-1.5\n<< /Type /ObjStm >>\nstream\nx"))).toBe(0);
  });

  it("says 0, unknown, when anything is left unread, however small a count it could read beside it", () => {
    const tree = objectStream([pageTree(60), ...Array.from({ length: 60 }, () => page)]);
    // the same object stream under a filter it does not inflate (a PNG predictor's bytes, hex)
    const unreadable = Buffer.concat([
      Buffer.from("%PDF-1.5\n5 0 obj << /Type /ObjStm /Filter [/ASCIIHexDecode /FlateDecode] >>\nstream\n"),
      Buffer.from(tree.toString("hex")),
      Buffer.from("\nendstream\nendobj\n"),
    ]);
    const decoy = Buffer.from(`1 0 obj << /Type /Outlines /Count 1 >> endobj\n9 0 obj ${page} endobj\n%%EOF`);
    expect(pdfPages(Buffer.concat([unreadable, decoy]))).toBe(0);
    // a count by reference, and names that hide /Page and /ObjStm behind # escapes
    expect(pdfPages(Buffer.from(`%PDF-1.4\n<< /Type /Pages /Count 7 0 R >>\n${page}\n%%EOF`))).toBe(0);
    expect(pdfPages(Buffer.from(`%PDF-1.4\n<< /Type /P#61ge >>\n${page}\n%%EOF`))).toBe(0);
    expect(pdfPages(Buffer.from(`%PDF-1.5\n<< /Type /Obj#53tm >>\nstream\nx\nendstream\n${page}`))).toBe(0);
    // a name with an escape that hides nothing of the page tree leaves the count as it is
    expect(pdfPages(Buffer.from(`%PDF-1.4\n<< /BaseFont /Arial#20Bold >>\n${page}${page}\n%%EOF`))).toBe(2);
    // an object stream key with no stream after it
    expect(pdfPages(Buffer.from(`%PDF-1.5\n${page}\n${"<< /Type /ObjStm >> ".repeat(1000)}`))).toBe(0);
  });

  it("reads a stream many keys point to once, and counts what it holds", () => {
    const keys = Buffer.from("<< /Type /ObjStm >> ".repeat(50));
    const pdf = Buffer.concat([Buffer.from("%PDF-1.5\n"), keys, objectStream([pageTree(12)]), Buffer.from("%%EOF")]);
    expect(pdfPages(pdf)).toBe(12);
  });

  it("inflates no more than its budget: a deflate bomb is left unread, not expanded", () => {
    // a page count past 64 MB of spaces: read only if the whole were inflated
    const bomb = deflateSync(Buffer.concat([Buffer.alloc(64 * 2 ** 20, 32), Buffer.from(pageTree(77))]));
    const pdf = Buffer.concat([
      Buffer.from("%PDF-1.5\n5 0 obj << /Type /ObjStm /Filter /FlateDecode >>\nstream\n"),
      bomb,
      Buffer.from("\nendstream\n%%EOF"),
    ]);
    expect(pdfPages(pdf)).toBe(0);
  });
});
