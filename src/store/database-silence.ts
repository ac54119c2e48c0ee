/**
 * When the database last left a bounded query unanswered (a server that stopped answering
 * without closing its connections), shared by everything that can do without it for a
 * while: cached keys serve without their periodic re-check, holds fall back to memory. Each
 * caller finding it out for itself would cost each request every caller's whole wait
 * again (a key re-check's 2 s after a hold's 5 s). A refused connection fails at once and
 * needs none of this.
 */
export class DatabaseSilence {
  private until = 0;
  /** The key change counter when the silence began, or null when no change feed was heard. */
  private heardAtStart: number | null = null;

  constructor(
    /**
     * The store's key change counter while its change feed hears the database, else null:
     * a notice that comes during a silence (a revocation) shows the database answers, and
     * one slow query (a dead pooled connection) must not hide it.
     */
    private readonly heard: () => number | null = () => null,
  ) {}

  /** A bounded query went unanswered: the database counts as silent for `ms`. */
  noteUnanswered(ms: number): void {
    const now = Date.now();
    if (now >= this.until) this.heardAtStart = this.heard();
    if (now + ms > this.until) this.until = now + ms;
  }

  /** True while the last unanswered query is recent; one caller per interval then asks again. */
  get silent(): boolean {
    return this.until !== 0 && Date.now() < this.until;
  }

  /** True when the change feed announced a key change since the silence began. */
  get changedSince(): boolean {
    if (this.heardAtStart === null) return false;
    const heard = this.heard();
    return heard !== null && heard !== this.heardAtStart;
  }
}
