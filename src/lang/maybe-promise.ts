// The request path answers synchronously whenever its state is in memory (a cached key,
// a cached balance, in-process rate limits) and goes async only for a store or Redis.
// An `await` or a `.then` on a value that is already there still costs a promise and a
// microtask per step; at several steps per request that was a fifth of its CPU.

/** A value now, or a promise of it when it must be fetched. */
export type MaybePromise<T> = T | Promise<T>;

/** Applies `next` to `value` at once when it is there, after it resolves when it is a promise. */
export function after<T, U>(value: MaybePromise<T>, next: (value: T) => MaybePromise<U>): MaybePromise<U> {
  return value instanceof Promise ? value.then(next) : next(value);
}
