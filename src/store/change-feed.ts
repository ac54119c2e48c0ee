/**
 * What changed: `keys` for keys and accounts (revocations, limits, ZDR rules, erasures),
 * which the key cache must see; `balances` for ledger moves, which only balances depend on.
 */
export type ChangeKind = "keys" | "balances";

/**
 * How a store tells every process sharing it that keys, accounts or balances changed.
 * The counters are read synchronously on the request path; `announce` runs after a write
 * that others must see.
 */
export interface ChangeFeed {
  /** Moves on any change: keys, accounts or balances. */
  counter(): number;
  /**
   * Moves when keys or accounts changed, not on balance moves alone: every ledger flush
   * announces one, and a key cache dropped on each would send every request in flight
   * back to the database for its key (half the requests, in a scale-out bench).
   */
  keysCounter(): number;
  announce(kind: ChangeKind): Promise<void>;
}

/** A feed with nothing to announce (SQLite's data_version already moves for other connections). */
export function quietFeed(counter: () => number): ChangeFeed {
  return { counter, keysCounter: counter, announce: async () => {} };
}
