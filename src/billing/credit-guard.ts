import type { AccountId, RequestId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import type { MaybePromise } from "../lang/maybe-promise.js";
import type { EventLog } from "../logging/event-log.js";
import { BatchWriter } from "../store/batch-writer.js";
import type { CreditHoldStore } from "../store/credit-hold-store.js";
import type { Debit } from "../store/ledger-store.js";
import type { Store } from "../store/store.js";
import { type AccountCredit, newAccountCredit } from "./account-credit.js";
import { SharedFigures } from "./shared-figures.js";

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
  /** Replicas sharing PostgreSQL: keeps each account's fallback figure current as balances move. */
  private readonly figures: SharedFigures | null;

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
    this.figures = shared === null ? null : new SharedFigures(this.accounts, shared.holds, changes);
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
      credit = newAccountCredit();
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
    this.figures?.watch();
    // what this replica spent in memory while the database could not hold is unknown to it:
    // a hold it grants on top of that must still fit (once those charges are written, it knows)
    if (taken.available < credit.reserved + credit.sharedPending) {
      shared.holds.release([taken.holdId]).catch(() => {});
      throw insufficient();
    }
    return { accountId, amountMicros: taken.amount, settled: false, holdId: taken.holdId };
  }

  /** Stops keeping fallback figures current: the gateway is closing. */
  stopWatching(): void {
    this.figures?.stop(true);
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
