import type { AccountId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";

/**
 * The first this many bytes of every body are free: small requests (nearly all) never touch
 * the budget, and RPM bounds what they hold together.
 */
export const FREE_BYTES_PER_BODY = 1024 * 1024;

/**
 * Bounds the request bytes one account has in this process's memory at once. A body is
 * read whole, then parsed, and both live until its request ends; TPM and credit are
 * checked only once it is parsed. Without a bound, one key sending 120 bodies of 32 MiB at
 * once within its RPM took the gateway to 3.3 GB. Bytes past each body's first
 * FREE_BYTES_PER_BODY count against `perAccountBytes`; a body that would go over is refused
 * with 429 (retry shortly) as it arrives, and what it held is given back.
 */
export class BodyBudget {
  private readonly held = new Map<AccountId, number>();
  /** Bytes held for every account together. */
  private total = 0;

  constructor(
    private readonly perAccountBytes: number,
    /**
     * Bytes held for all accounts together: each account's share alone let many accounts
     * together take the process anywhere (three accounts' large bodies at once: 1.7 GB).
     * A body costs about five times its size in memory while its request runs: the bytes
     * received, their text, the parse, and the request sent on.
     */
    private readonly totalBytes = Number.POSITIVE_INFINITY,
  ) {}

  /**
   * Counts a body's growth from `before` to `after` bytes for `account`; returns the bytes
   * now held for this body, or throws LETHE_RATE_LIMITED when the account has no room.
   */
  grow(account: AccountId, before: number, after: number): number {
    if (after <= FREE_BYTES_PER_BODY) return 0;
    const adding = after - Math.max(before, FREE_BYTES_PER_BODY);
    const total = (this.held.get(account) ?? 0) + adding;
    if (total > this.perAccountBytes) {
      throw new LetheError(
        "LETHE_RATE_LIMITED",
        "Too many large request bodies from this account are in progress at once; retry shortly.",
        { retryAfterSeconds: 1 },
      );
    }
    if (this.total + adding > this.totalBytes) {
      throw new LetheError(
        "LETHE_RATE_LIMITED",
        "Too many large request bodies are in progress on this gateway at once; retry shortly.",
        { retryAfterSeconds: 1 },
      );
    }
    this.held.set(account, total);
    this.total += adding;
    return after - FREE_BYTES_PER_BODY;
  }

  /** Gives back what a body held, when its request ended (or its body was refused). */
  release(account: AccountId, bytes: number): void {
    if (bytes <= 0) return;
    this.total -= bytes;
    const left = (this.held.get(account) ?? 0) - bytes;
    if (left > 0) this.held.set(account, left);
    else this.held.delete(account);
  }

  /** Bytes held for all accounts together now (tests). */
  get heldInAll(): number {
    return this.total;
  }

  /** Bytes held for `account` now (tests). */
  heldBy(account: AccountId): number {
    return this.held.get(account) ?? 0;
  }
}
