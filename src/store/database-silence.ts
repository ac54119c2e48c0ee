/**
 * When the database last left a bounded query unanswered (a server that stopped answering
 * without closing its connections), shared by everything that can do without it for a
 * while: cached keys serve without their periodic re-check, holds fall back to memory. Each
 * caller finding it out for itself would cost each request every caller's whole wait
 * again (a key re-check's 2 s after a hold's 5 s). A refused connection fails at once and
 * needs none of this.
 */
/**
 * How long a silence lasts once a query went unanswered: cached keys serve without their
 * re-check, and holds for accounts the database answered for fall back to memory (an account
 * never answered for still asks). One caller per interval then asks again, and finds the
 * database back.
 */
const SILENCE_MS = 10_000;

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

  /** A bounded query went unanswered: the database counts as silent for SILENCE_MS. */
  noteUnanswered(): void {
    const now = Date.now();
    if (now >= this.until) this.heardAtStart = this.heard();
    this.until = now + SILENCE_MS;
  }

  /** True while the last unanswered query is recent; one caller per interval then asks again. */
  get silent(): boolean {
    return this.until !== 0 && Date.now() < this.until;
  }

  /**
   * Whether a key cached at change counter `cachedAt` may be served as it is during this
   * silence: no key change was announced since it was cached, neither before the silence
   * began nor during it (a revocation heard just before a hold timed out counts). Without a
   * feed that heard the database when the silence began, nothing tells of a change: yes.
   */
  servesCached(cachedAt: number): boolean {
    if (this.heardAtStart === null) return true;
    return cachedAt === this.heardAtStart && this.heard() === this.heardAtStart;
  }
}
