import type { AccountId, RequestId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import type { MaybePromise } from "../lang/maybe-promise.js";
import type { EventLog } from "../logging/event-log.js";
import { BatchWriter } from "../store/batch-writer.js";
import type { CreditHoldStore } from "../store/credit-hold-store.js";
import type { Debit } from "../store/ledger-store.js";
import type { Store } from "../store/store.js";

/** Credit held for one request in flight, released when it settles. */
export interface Reservation {
  accountId: AccountId;
  amountMicros: number;
  settled: boolean;
  /** The database hold behind it, when replicas share the database. */
  holdId: string | null;
}

/** Replicas sharing a database hold credit there, not in one process's memory. */
export interface SharedHolds {
  holds: CreditHoldStore;
  /** How long a hold counts if its replica dies before charging it. */
  ttlMs: number;
}

interface AccountCredit {
  /** Balance as last read from the store, or null when it must be read again. */
  stored: number | null;
  /** The last balance ever read (kept through invalidations, for when the database is away). */
  known: number | null;
  /** Charges settled here but not yet written to the store. */
  pending: number;
  /** Held in this process's memory by requests in flight. */
  reserved: number;
  /**
   * Replicas sharing PostgreSQL: the credit the database said was left after this process's
   * latest hold there (every replica's holds counted), less the fallback charges written
   * since. What a hold falls back on when the database cannot take one.
   */
  sharedAvailable: number | null;
  /** Replicas sharing PostgreSQL: charges of memory holds (taken while it could not hold) not yet written. */
  sharedPending: number;
  /** Holds asked of the database so far, counted as they start. */
  holdsStarted: number;
  /** `holdsStarted` when `sharedAvailable` was last set: a hold started after it reads a newer database. */
  sharedSetAt: number;
  /** Holds asked of the database and not answered yet. */
  holdsInFlight: number;
  /** Moves on whatever could make a read of the database disagree with `sharedAvailable`: holds starting or answered, memory charges written. */
  sharedEvents: number;
  /** When (Date.now()) this replica last asked the database for a hold for the account. */
  lastHeldAt: number;
}

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

function insufficient(): LetheError {
  return new LetheError("LETHE_INSUFFICIENT_CREDIT", "This account does not have enough credit for this request.");
}

/**
 * Guards spending: before a request is forwarded it reserves the request's estimated
 * cost against the account's available credit (stored balance − unwritten charges −
 * reservations); on completion it settles to the metered cost and releases the rest.
 * Charges are written to the ledger in batches, off the request path. An account can
 * go below zero only by what requests in flight cost beyond their reservation.
 */
export class CreditGuard {
  private readonly accounts = new Map<AccountId, AccountCredit>();
  private readonly ledger: BatchWriter<Debit>;
  private seenCounter: number;
  /** Database holds to set to their charges, sent together once per event-loop turn. */
  private resizing: { holdId: string; amount: number }[] = [];
  /** Replicas sharing PostgreSQL: the timer that keeps fallback figures current, while some account has one. */
  private refreshTimer: NodeJS.Timeout | null = null;
  /** The change counter the fallback figures were last read at. */
  private refreshedCounter = Number.NaN;
  private refreshing = false;
  private stopped = false;

  constructor(
    private readonly store: Store,
    log: EventLog,
    flushIntervalMs: number,
    /** Moves when another process changed balances (the store's feed: PostgreSQL's NOTIFY, SQLite's revision). */
    private readonly changes: () => number = () => store.changeCounter(),
    private readonly shared: SharedHolds | null = null,
    /**
     * Charges that trigger a write without waiting for the interval. Under load a charge
     * then lives a few milliseconds instead of up to the interval: short-lived objects
     * die in V8's young generation instead of filling the old one (RSS).
     */
    flushBatch = Number.POSITIVE_INFINITY,
  ) {
    this.seenCounter = changes();
    this.ledger = new BatchWriter<Debit>({
      flushIntervalMs,
      batchSize: flushBatch,
      // one transaction per batch: the balances must move with their entries
      chunkSize: Number.POSITIVE_INFINITY,
      write: (batch) => store.ledger.debit(batch),
      onWritten: (batch) => this.written(batch),
      onFailed: (unwritten) => log.event("ledger_flush_failed", { records: unwritten }),
    });
  }

  private credit(accountId: AccountId): AccountCredit {
    let credit = this.accounts.get(accountId);
    if (credit === undefined) {
      credit = {
        stored: null,
        known: null,
        pending: 0,
        reserved: 0,
        sharedAvailable: null,
        sharedPending: 0,
        holdsStarted: 0,
        sharedSetAt: 0,
        holdsInFlight: 0,
        sharedEvents: 0,
        lastHeldAt: 0,
      };
      this.accounts.set(accountId, credit);
    }
    return credit;
  }

  /** Forgets the cached balance of an account this process just changed (top-ups through the admin API). */
  forget(accountId: AccountId): void {
    const credit = this.accounts.get(accountId);
    if (credit !== undefined) credit.stored = null;
  }

  /** What the account may still spend now. */
  async available(accountId: AccountId): Promise<number> {
    const counter = this.changes();
    if (counter !== this.seenCounter) {
      // another process (a top-up from the CLI) changed balances: read them again
      this.seenCounter = counter;
      for (const credit of this.accounts.values()) credit.stored = null;
    }
    const credit = this.credit(accountId);
    if (credit.stored === null) {
      try {
        credit.stored = await this.store.ledger.balance(accountId);
        credit.known = credit.stored;
      } catch {
        // the database is away: spend against the last balance seen, or refuse if none
        if (credit.known === null) {
          throw new LetheError("LETHE_METERING_UNAVAILABLE", "Credit cannot be checked right now; retry shortly.", {
            retryAfterSeconds: 5,
          });
        }
        return credit.known - credit.pending - credit.reserved;
      }
    }
    return credit.stored - credit.pending - credit.reserved;
  }

  /**
   * Reserves credit for a request. `upperBound` is tried first (cheap, generous);
   * when it does not fit, `exact` is computed and tried. Throws 402 when neither fits.
   */
  reserve(accountId: AccountId, upperBound: number, exact: () => number): MaybePromise<Reservation> {
    if (this.shared !== null) return this.reserveShared(accountId, upperBound, exact, this.shared);
    // the balance is cached and nothing changed since: hold at once (or throw 402), without a read
    if (this.changes() === this.seenCounter && this.accounts.get(accountId)?.stored != null) {
      return this.holdInMemory(accountId, upperBound, exact);
    }
    return this.reserveInMemory(accountId, upperBound, exact);
  }

  /** The single-process reservation, once the balance was read. */
  private async reserveInMemory(accountId: AccountId, upperBound: number, exact: () => number): Promise<Reservation> {
    await this.available(accountId);
    return this.holdInMemory(accountId, upperBound, exact);
  }

  /**
   * Checks and holds in one synchronous step: reservations racing each other (a burst
   * of requests) must each see the others' holds, or they overdraw.
   */
  private holdInMemory(accountId: AccountId, upperBound: number, exact: () => number): Reservation {
    const credit = this.credit(accountId);
    const available = (credit.stored ?? credit.known ?? 0) - credit.pending - credit.reserved;
    return this.holdAgainst(credit, accountId, available, upperBound, exact);
  }

  private holdAgainst(
    credit: AccountCredit,
    accountId: AccountId,
    available: number,
    upperBound: number,
    exact: () => number,
  ): Reservation {
    let amount = upperBound;
    if (amount > available) amount = exact();
    if (amount > 0 && amount > available) throw insufficient();
    if (amount === 0 && available < 0) throw insufficient();
    credit.reserved += amount;
    return { accountId, amountMicros: amount, settled: false, holdId: null };
  }

  /** The shared-database reservation: a hold row taken under the account's lock (free requests hold nothing). */
  private async reserveShared(
    accountId: AccountId,
    upperBound: number,
    exact: () => number,
    shared: SharedHolds,
  ): Promise<Reservation> {
    if (upperBound === 0) return { accountId, amountMicros: 0, settled: false, holdId: null };
    const credit = this.credit(accountId);
    const started = ++credit.holdsStarted;
    credit.holdsInFlight++;
    credit.sharedEvents++;
    credit.lastHeldAt = Date.now();
    let taken: { holdId: string; amount: number; available: number } | null;
    try {
      taken = await shared.holds.hold(accountId, upperBound, exact, credit.lastHeldAt, shared.ttlMs);
    } catch {
      // the database is away, or too slow to answer (its pool full, the account row locked):
      // hold in this process's memory against what it last said was left, as a single
      // replica would; charges queue until it answers again
      credit.holdsInFlight--;
      credit.sharedEvents++;
      return this.holdAgainstShared(accountId, upperBound, exact);
    }
    credit.holdsInFlight--;
    credit.sharedEvents++;
    if (taken === null) throw insufficient();
    // remembered for the fallback above. Concurrent holds answer in any order: an answer to a
    // hold started after the current value was set saw a newer database (top-ups and charges
    // written included) and replaces it; an older one can only lower it
    credit.sharedAvailable =
      credit.sharedAvailable === null || started > credit.sharedSetAt
        ? taken.available
        : Math.min(credit.sharedAvailable, taken.available);
    credit.sharedSetAt = credit.holdsStarted;
    this.watchShared();
    // what this replica spent in memory while the database could not hold is unknown to it:
    // a hold it grants on top of that must still fit (once those charges are written, it knows)
    if (taken.available < credit.reserved + credit.sharedPending) {
      shared.holds.release([taken.holdId]).catch(() => {});
      throw insufficient();
    }
    return { accountId, amountMicros: taken.amount, settled: false, holdId: taken.holdId };
  }

  /** Starts keeping fallback figures current (refreshShared), once some account has one. */
  private watchShared(): void {
    if (this.refreshTimer !== null || this.stopped) return;
    this.refreshTimer = setInterval(() => this.refreshShared(), SHARED_REFRESH_MS);
    this.refreshTimer.unref();
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
  private refreshShared(): void {
    const shared = this.shared;
    if (shared === null || this.refreshing) return;
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
      this.stopWatching(false);
      return;
    }
    this.refreshing = true;
    this.readShared(shared, [...seen.keys()], seen, now)
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
  private async readShared(
    shared: SharedHolds,
    ids: AccountId[],
    seen: Map<AccountId, { events: number; quiet: boolean }>,
    now: number,
  ): Promise<void> {
    for (let start = 0; start < ids.length; start += SHARED_REFRESH_CHUNK) {
      const left = await shared.holds.available(ids.slice(start, start + SHARED_REFRESH_CHUNK), now);
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
  stopWatching(forGood = true): void {
    if (forGood) this.stopped = true;
    if (this.refreshTimer !== null) clearInterval(this.refreshTimer);
    this.refreshTimer = null;
  }

  /**
   * The shared-database fallback. Never against the stored balance, which a database that
   * is merely slow would still give: it ignores every hold in flight, this replica's own
   * included. The charges of earlier memory holds count against it until they are written.
   * Refuses (503) for an account this replica never held for.
   */
  private holdAgainstShared(accountId: AccountId, upperBound: number, exact: () => number): Reservation {
    const credit = this.credit(accountId);
    if (credit.sharedAvailable === null) {
      throw new LetheError("LETHE_METERING_UNAVAILABLE", "Credit cannot be checked right now; retry shortly.", {
        retryAfterSeconds: 5,
      });
    }
    return this.holdAgainst(
      credit,
      accountId,
      credit.sharedAvailable - credit.sharedPending - credit.reserved,
      upperBound,
      exact,
    );
  }

  /** Releases the reservation and charges what the request really cost. */
  settle(reservation: Reservation, costMicros: number, requestId: RequestId): void {
    if (reservation.settled) return;
    reservation.settled = true;
    if (reservation.holdId !== null && costMicros <= 0) {
      // nothing to charge: the hold just goes
      this.shared?.holds.release([reservation.holdId]).catch(() => {});
      return;
    }
    const credit = this.credit(reservation.accountId);
    if (reservation.holdId === null) credit.reserved -= reservation.amountMicros;
    else if (costMicros !== reservation.amountMicros) this.resizeHold(reservation.holdId, costMicros);
    if (costMicros <= 0) return;
    credit.pending += costMicros;
    if (this.shared !== null && reservation.holdId === null) credit.sharedPending += costMicros;
    this.ledger.add({
      accountId: reservation.accountId,
      amountMicros: costMicros,
      requestId,
      ts: Date.now(),
      holdId: reservation.holdId,
    });
  }

  /**
   * Sets a settled request's database hold to its charge, which it stands for until the
   * charge is written: at its estimate, the holds of a client's quick succession of requests
   * kept the account's credit from every replica (402s with credit to spare) until the flush;
   * and a request that cost more than its estimate (no max_tokens, a supplier overrunning it)
   * left every replica admitting requests against credit it had already spent.
   */
  private resizeHold(holdId: string, amount: number): void {
    const shared = this.shared;
    if (shared === null) return;
    if (this.resizing.length === 0) {
      setImmediate(() => {
        const holds = this.resizing;
        this.resizing = [];
        // best effort: a hold not resized still goes with its written charge
        shared.holds.resize(holds).catch(() => {});
      });
    }
    this.resizing.push({ holdId, amount });
  }

  /** Charges in the ledger now: no longer pending against their accounts. */
  private written(batch: Debit[]): void {
    for (const debit of batch) {
      const credit = this.credit(debit.accountId);
      credit.pending -= debit.amountMicros;
      // read the balance again rather than lower it: a read made between the commit and this
      // answer (SQLite's writer thread, PostgreSQL's pool) already counts these charges
      credit.stored = null;
      if (credit.known !== null) credit.known -= debit.amountMicros;
      // a charge held in memory during an outage, now in the balance: no longer pending, and
      // not in the database's last word on what was left either
      if (this.shared !== null && debit.holdId === null) {
        credit.sharedEvents++;
        credit.sharedPending -= debit.amountMicros;
        if (credit.sharedAvailable !== null) credit.sharedAvailable -= debit.amountMicros;
      }
    }
  }

  /** Charges settled but not yet written, the batch being written included. */
  get pendingCount(): number {
    return this.ledger.pending;
  }

  /** Whether a batch of charges is being written now. */
  get writing(): boolean {
    return this.ledger.writing;
  }

  /** Writes queued charges to the ledger; a failed write keeps them for the next try. */
  flush(): Promise<void> {
    return this.ledger.flush();
  }

  /** Flushes until nothing is queued (or writing keeps failing, or `until` passed); used on shutdown. */
  drain(until?: number): Promise<void> {
    return this.ledger.drain(until);
  }
}
