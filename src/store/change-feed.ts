/**
 * How a store tells every process sharing it that keys, accounts or balances
 * changed. `counter` is read synchronously on the request path; `announce` runs
 * after a write that others must see.
 */
export interface ChangeFeed {
  counter(): number;
  announce(): Promise<void>;
}

/** A feed with nothing to announce (SQLite's data_version already moves for other connections). */
export function quietFeed(counter: () => number): ChangeFeed {
  return { counter, announce: async () => {} };
}
