import type { AccountId } from "../config/ids.js";
import type { CreditHoldStore } from "../store/credit-hold-store.js";
import type { AccountCredit } from "./account-credit.js";

/** How often a replica sharing PostgreSQL looks whether balances moved, to read its fallback figures again. */
const SHARED_REFRESH_MS = 250;
/**
 * How long after its last hold here an account keeps a fallback figure: it is read again
 * on every balance move while kept, and an account this replica no longer serves is not
 * worth a query each time; without one, an outage refuses it (503), as one never held for.
 */
const SHARED_FIGURE_TTL_MS = 10 * 60_000;
/** Accounts read again in one query. */
const SHARED_REFRESH_CHUNK = 1_000;

/**
 * Replicas sharing PostgreSQL: keeps what each account has left, as the database last said,
 * current while balances move, for the credit guard to hold against when the database
 * cannot take a hold (credit-guard.ts, holdAgainstShared).
 */
export class SharedFigures {
  private timer: NodeJS.Timeout | null = null;
  /** The change counter the figures were last read at. */
  private refreshedCounter = Number.NaN;
  private refreshing = false;
  private stopped = false;

  constructor(
    private readonly accounts: Map<AccountId, AccountCredit>,
    private readonly holds: CreditHoldStore,
    /** Moves when another process changed balances (PostgreSQL's NOTIFY; every read while not listening). */
    private readonly changes: () => number,
  ) {}

  /** Starts keeping fallback figures current, once some account has one (a hold was answered). */
  watch(): void {
    if (this.timer !== null || this.stopped) return;
    this.timer = setInterval(() => this.refresh(), SHARED_REFRESH_MS);
    this.timer.unref();
  }

  /**
   * Replicas sharing PostgreSQL: when balances moved (another replica's charges, a top-up),
   * reads again what the database says each account held here has left. Without it, the
   * figure a replica falls back on in an outage was the one its own last hold read, however
   * long ago: every replica's spending since went uncounted, and an account went below zero
   * by all of it. A read that overlapped this replica's own holds or written memory charges
   * can only lower the figure (it may have missed them); otherwise it replaces it, top-ups
   * included. An account with no hold here for SHARED_FIGURE_TTL_MS gives its figure up.
   */
  private refresh(): void {
    if (this.refreshing) return;
    const counter = this.changes();
    if (counter === this.refreshedCounter) return;
    const now = Date.now();
    const seen = new Map<AccountId, { events: number; quiet: boolean }>();
    for (const [accountId, credit] of this.accounts) {
      if (credit.sharedAvailable === null) continue;
      if (now - credit.lastHeldAt > SHARED_FIGURE_TTL_MS && credit.holdsInFlight === 0) {
        credit.sharedAvailable = null;
        continue;
      }
      seen.set(accountId, { events: credit.sharedEvents, quiet: credit.holdsInFlight === 0 });
    }
    if (seen.size === 0) {
      this.stop(false);
      return;
    }
    this.refreshing = true;
    this.read([...seen.keys()], seen, now)
      .then(() => {
        this.refreshedCounter = counter;
      })
      // the database is away: the figures stand, and the next tick asks again
      .catch(() => {})
      .finally(() => {
        this.refreshing = false;
      });
  }

  /** Reads the accounts' figures a chunk at a time (one pooled connection, not the pool's every one), applying each as it comes. */
  private async read(
    ids: AccountId[],
    seen: Map<AccountId, { events: number; quiet: boolean }>,
    now: number,
  ): Promise<void> {
    for (let start = 0; start < ids.length; start += SHARED_REFRESH_CHUNK) {
      const left = await this.holds.available(ids.slice(start, start + SHARED_REFRESH_CHUNK), now);
      for (const [accountId, available] of left) {
        const credit = this.accounts.get(accountId);
        const before = seen.get(accountId);
        if (credit === undefined || before === undefined || credit.sharedAvailable === null) continue;
        const untouched = before.quiet && credit.sharedEvents === before.events;
        credit.sharedAvailable = untouched ? available : Math.min(credit.sharedAvailable, available);
      }
    }
  }

  /** Stops keeping fallback figures current: none is left, or the gateway is closing (`for good`). */
  stop(forGood: boolean): void {
    if (forGood) this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
