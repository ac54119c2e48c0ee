import type { IncomingHttpHeaders } from "node:http";
import type { AccountId, KeyId } from "../config/ids.js";
import { LetheError } from "../errors/lethe-error.js";
import { boundInTime } from "../lang/bound-in-time.js";
import type { MaybePromise } from "../lang/maybe-promise.js";
import type { AccountRecord, KeyRecord, Store } from "../store/store.js";
import { isWellFormedKey, KeyHasher } from "./api-key.js";

/** Who is calling, as far as the metadata plane needs to know. */
export interface AuthContext {
  accountId: AccountId;
  keyId: KeyId;
  zdrRequired: boolean;
  /** The account's limits; null means the configured defaults. */
  rpm: number | null;
  tpm: number | null;
  /** The key's own limits, on top of its account's; null for none. */
  keyRpm: number | null;
  keyTpm: number | null;
}

interface CacheEntry {
  key: KeyRecord;
  context: AuthContext;
  cachedAt: number;
  /** The change counter when cached; a different counter means "check the database again". */
  counter: number;
}

const MAX_CACHED_KEYS = 50_000;

/**
 * How long a re-check of a key seen valid before may keep its request waiting: a database
 * that stops answering without closing its connections would otherwise hold every
 * request; past it the cached answer serves, as when the database is away.
 */
const STORE_WAIT_MS = 2_000;

/**
 * Reads the caller's key from `Authorization: Bearer` or `x-api-key`. An Authorization
 * header of another scheme (an ingress's Basic auth) or empty leaves `x-api-key` to
 * speak; it is refused only when there is no `x-api-key` to use instead.
 */
export function extractApiKey(headers: IncomingHttpHeaders): string {
  const authorization = headers.authorization;
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match?.[1]) return match[1];
  }
  const apiKey = headers["x-api-key"];
  if (typeof apiKey === "string" && apiKey.trim() !== "") return apiKey.trim();
  if (authorization !== undefined) {
    throw new LetheError("LETHE_INVALID_API_KEY", "The Authorization header must be 'Bearer <key>'.");
  }
  throw new LetheError(
    "LETHE_MISSING_API_KEY",
    "No API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
  );
}

/**
 * Turns an API key into an AuthContext. Valid keys are cached in memory by their
 * HMAC; the cache is dropped whenever the store reports a change from another
 * process, so a revocation is effective on the next request.
 */
export class Authenticator {
  private readonly cache = new Map<string, CacheEntry>();
  /**
   * Look-ups on their way, by key hash and the change counter they started under: the
   * requests that find a key due for a re-check at the same moment (every connection of a
   * busy client, once a second on PostgreSQL) share one trip to the database.
   */
  private readonly pending = new Map<string, { counter: number; lookUp: Promise<AuthContext> }>();
  /** Moves on `invalidate()`: a look-up that started before keeps its answer out of the cache. */
  private generation = 0;
  /**
   * The last credential headers each connection sent and its key's HMAC: a client on a
   * kept-alive connection sends the same header every time, and HMAC-SHA256 is the
   * dearest step of a cached authentication. Dropped with the connection.
   */
  private readonly perConnection = new WeakMap<
    object,
    { authorization: string | undefined; apiKey: string | string[] | undefined; keyHash: string }
  >();

  constructor(
    private readonly store: Store,
    private readonly hasher: KeyHasher,
    /** Moves when another process changed keys or accounts (the store's feed: PostgreSQL's NOTIFY, SQLite's revision). */
    private readonly changes: () => number = () => store.keyChangeCounter(),
    /** How long a cached key is trusted without a change notice; short when replicas share a database. */
    private readonly maxAgeMs = Number.POSITIVE_INFINITY,
  ) {}

  /** Drops every cached key; called after this process itself revokes or changes keys. */
  invalidate(): void {
    this.cache.clear();
    // a look-up on its way may have read the key before the change: it is not shared, and
    // its answer is not cached (SQLite's counter does not move for this process's own writes)
    this.pending.clear();
    this.generation++;
  }

  /**
   * Authenticates `headers`; `connection` (the socket) lets a kept-alive client skip
   * re-hashing its key. A cached key answers at once; otherwise the store is asked.
   */
  authenticate(
    headers: IncomingHttpHeaders,
    connection?: object,
    /**
     * Called before a key not in the cache is looked up (what guessing causes), and may
     * refuse by throwing or rejecting: the auth throttle counts the look-up as a failure in
     * advance, so a burst of guesses cannot all be in flight before any has failed.
     */
    admit?: () => MaybePromise<void>,
  ): MaybePromise<AuthContext> {
    const keyHash = this.keyHashOf(headers, connection);
    const counter = this.changes();
    // the map is keyed by the hash itself, so a hit is an exact match
    const cached = this.cache.get(keyHash);
    if (cached !== undefined && this.isFresh(cached, counter)) return cached.context;
    if (cached === undefined) return this.sharedLookUp(keyHash, counter, undefined, admit);
    // the database left a query unanswered lately (this re-check's, or a credit hold's): a
    // cached key is served as it is, unless a change was announced since it was cached (a
    // revocation, say), the feed hearing it being the database answering
    const silence = this.store.silence;
    if (silence.silent && silence.servesCached(cached.counter)) return cached.context;
    const lookUp = this.sharedLookUp(keyHash, counter, cached);
    return boundInTime(lookUp, STORE_WAIT_MS, () => {
      silence.noteUnanswered();
      return cached.context;
    });
  }

  /**
   * The caller's context when its key is cached and needs no re-check: what `authenticate`
   * answers at once, without the look-up path (callers skip building what that needs).
   */
  cachedContext(headers: IncomingHttpHeaders, connection?: object): AuthContext | undefined {
    const cached = this.cache.get(this.keyHashOf(headers, connection));
    return cached !== undefined && this.isFresh(cached, this.changes()) ? cached.context : undefined;
  }

  private isFresh(cached: CacheEntry, counter: number): boolean {
    return (
      cached.counter === counter &&
      (this.maxAgeMs === Number.POSITIVE_INFINITY || Date.now() - cached.cachedAt < this.maxAgeMs)
    );
  }

  /**
   * One look-up per key and change counter at a time; a change since it started needs its own.
   * `admit` is asked once per look-up, not per request that joins one: a burst of requests
   * with one good key the cache lost (a restart, an admin change) is one look-up, one
   * reservation of the auth throttle, and none of them refused for it.
   */
  private sharedLookUp(
    keyHash: string,
    counter: number,
    cached: CacheEntry | undefined,
    admit?: () => MaybePromise<void>,
  ): Promise<AuthContext> {
    const pending = this.pending.get(keyHash);
    if (pending !== undefined && pending.counter === counter) return pending.lookUp;
    // a refusal thrown here (the throttle, synchronously) registers no look-up
    const admitted = admit?.();
    const lookUp =
      admitted instanceof Promise
        ? admitted.then(() => this.lookUp(keyHash, counter, cached))
        : this.lookUp(keyHash, counter, cached);
    const entry = { counter, lookUp };
    this.pending.set(keyHash, entry);
    const done = () => {
      if (this.pending.get(keyHash) === entry) this.pending.delete(keyHash);
    };
    lookUp.then(done, done);
    return lookUp;
  }

  private async lookUp(keyHash: string, counter: number, cached: CacheEntry | undefined): Promise<AuthContext> {
    const generation = this.generation;
    let record: KeyRecord | undefined;
    let account: AccountRecord | undefined;
    try {
      record = await this.store.findKeyByHash(keyHash);
      account = record && (await this.store.findAccountById(record.accountId));
    } catch {
      // the database is away: a key seen valid before stays valid; an unknown one cannot be checked
      if (cached !== undefined) return cached.context;
      throw new LetheError("LETHE_METERING_UNAVAILABLE", "Keys cannot be checked right now; retry shortly.", {
        retryAfterSeconds: 5,
      });
    }
    if (record === undefined || !KeyHasher.equal(record.keyHash, keyHash)) {
      throw new LetheError("LETHE_INVALID_API_KEY", "The API key is not valid.");
    }
    if (record.revokedAt !== null) {
      this.cache.delete(keyHash);
      throw new LetheError("LETHE_REVOKED_API_KEY", "This API key has been revoked.");
    }
    if (account === undefined || account.deletedAt !== null)
      throw new LetheError("LETHE_INVALID_API_KEY", "The API key is not valid.");
    const context = toContext(record, account);
    // read before this process changed keys or accounts: good for this request, not for the next
    if (generation !== this.generation) return context;
    if (this.cache.size >= MAX_CACHED_KEYS) this.cache.clear();
    this.cache.set(keyHash, { key: record, context, cachedAt: Date.now(), counter });
    return context;
  }

  /** The HMAC of the caller's key, reused while a connection keeps sending the same header. */
  private keyHashOf(headers: IncomingHttpHeaders, connection: object | undefined): string {
    // both headers, as either may carry the key (x-api-key beside a Basic Authorization an
    // ingress adds): matching one alone could hand one client's key to the next on a
    // proxy's shared connection
    const authorization = headers.authorization;
    const apiKey = headers["x-api-key"];
    const seen = connection === undefined ? undefined : this.perConnection.get(connection);
    if (seen !== undefined && seen.authorization === authorization && seen.apiKey === apiKey) return seen.keyHash;
    const key = extractApiKey(headers);
    if (!isWellFormedKey(key)) throw new LetheError("LETHE_INVALID_API_KEY", "The API key is not valid.");
    const keyHash = this.hasher.hash(key);
    if (connection !== undefined) this.perConnection.set(connection, { authorization, apiKey, keyHash });
    return keyHash;
  }
}

function toContext(key: KeyRecord, account: AccountRecord): AuthContext {
  return {
    accountId: account.id,
    keyId: key.id,
    zdrRequired: account.zdrRequired,
    rpm: account.rpm,
    tpm: account.tpm,
    keyRpm: key.rpm,
    keyTpm: key.tpm,
  };
}
