/** What a process knows of one account's credit (credit-guard.ts); the shared fields serve replicas sharing PostgreSQL. */
export interface AccountCredit {
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

export function newAccountCredit(): AccountCredit {
  return {
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
}
