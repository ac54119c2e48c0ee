/**
 * When the database last left a bounded query unanswered (a server that stopped answering
 * without closing its connections), shared by everything that can do without it for a
 * while: cached keys serve without their re-check, holds fall back to memory. Each
 * caller finding it out for itself would cost each request every caller's whole wait
 * again (a key re-check's 2 s after a hold's 5 s). A refused connection fails at once and
 * needs none of this.
 */
export class DatabaseSilence {
  private until = 0;

  /** A bounded query went unanswered: the database counts as silent for `ms`. */
  noteUnanswered(ms: number): void {
    const until = Date.now() + ms;
    if (until > this.until) this.until = until;
  }

  /** True while the last unanswered query is recent; one caller per interval then asks again. */
  get silent(): boolean {
    return this.until !== 0 && Date.now() < this.until;
  }
}
