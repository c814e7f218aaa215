// The token cache: token facts and the upstream tokens derived from them, keyed by token fingerprint, bounded
// (LRU), expiring no later than the token, with single-flight loading and eviction by fingerprint for revocation.
// It never holds authorization decisions: scopes are checked against the cached facts on every request.
//
// Layout: an LRU of buckets keyed by fingerprint, each bucket a small map purpose → entry. A purpose names what
// was cached and for whom (`<auth server scope>\0introspect`, `…\0mint\0<audience>…`); purposes are built once
// per route, so a hit costs the fingerprint's SHA-256, one LRU get and one Map get, with no string building.
// Revocation drops the whole bucket. Inactive answers live in a second, smaller LRU so a flood of garbage
// tokens cannot push valid facts out.
//
// The gateway keeps one such cache per auth server (a `TokenCacheSet` partition bounded by that AuthServer's
// `cache.maxEntries`), so one busy auth server cannot push another's tokens out; revocation and metrics span
// every partition. The SDK uses a single cache on its own.
//
// Bytes are bounded too: every value comes with an estimate of its size (its claims and tokens), and the
// partitions of a set share one byte budget. A count alone would let tokens with large claims (group lists,
// 64 KiB introspection answers) take gigabytes; over the budget, cached refusals go first (from any partition),
// then the least recently used tokens of the partition holding the most bytes.
import { LRUCache } from "lru-cache";
import type { Registry } from "prom-client";
import type { Clock } from "./clock.ts";
import { registerTokenCacheMetrics, type TokenCacheCounts } from "./metrics.ts";

declare const purposeValue: unique symbol;

/**
 * Names one kind of cached value for a token. A plain string at run time; the type parameter ties the purpose
 * to the type of the value stored under it, so `get` needs no casts at the call site.
 */
export type CachePurpose<V> = string & { readonly [purposeValue]?: V };

/** Builds a purpose from parts (joined with NUL, which cannot occur in ids, audiences or scope names). */
export function cachePurpose<V>(...parts: readonly string[]): CachePurpose<V> {
  return parts.join("\0");
}

/** A cached value, or a cached "inactive". `expiresAtMs` is when it stops being served (epoch ms). */
export type CacheEntry<V> =
  | { readonly negative: false; readonly value: V; readonly expiresAtMs: number }
  | { readonly negative: true; readonly reason: string; readonly expiresAtMs: number };

/**
 * What a loader produced. Positive values live until min(`expiresAtMs`, now + `maxTtlSeconds`): `expiresAtMs` is
 * the token's `exp` (or an earlier bound). Inactive results live `negativeTtlSeconds`. A lifetime ≤ 0 is
 * returned to the waiting callers but not stored.
 */
export type CacheFill<V> =
  | {
      readonly negative: false;
      readonly value: V;
      readonly expiresAtMs: number | undefined;
      readonly maxTtlSeconds: number;
      /** Estimated bytes the value holds beyond what other entries of the token share ({@link DEFAULT_VALUE_BYTES}). */
      readonly bytes?: number;
    }
  | { readonly negative: true; readonly reason: string; readonly negativeTtlSeconds: number };

/** Bytes counted for each cached token besides its values: its key, LRU node, bucket and entry objects. */
export const TOKEN_OVERHEAD_BYTES = 1_024;
/** Bytes counted for a value stored without an estimate, and for a refusal. */
export const DEFAULT_VALUE_BYTES = 256;

/** A byte bound shared by caches (the partitions of a set): what they hold together, and who holds it. */
export interface ByteBudget {
  readonly limitBytes: number;
  usedBytes: number;
  readonly members: Set<BudgetMember>;
}

interface BudgetMember {
  bytes(): number;
  /** Drops the least recently used cached refusal; false when there is none. */
  evictRefusal(): boolean;
  /** Drops the least recently used token with active entries; false when there is none. */
  evictOldest(): boolean;
}

function createByteBudget(limitBytes: number): ByteBudget {
  return { limitBytes, usedBytes: 0, members: new Set() };
}

/**
 * Makes the budget hold: cached refusals go first, from any member (a flood of garbage tokens at one auth server
 * must not push valid facts out, there or at another); then the least recently used tokens of the member holding
 * the most bytes.
 */
function makeRoom(budget: ByteBudget): void {
  for (const member of budget.members) {
    while (budget.usedBytes > budget.limitBytes && member.evictRefusal());
  }
  while (budget.usedBytes > budget.limitBytes) {
    let largest: BudgetMember | undefined;
    let most = 0;
    for (const member of budget.members) {
      const bytes = member.bytes();
      if (bytes > most) {
        most = bytes;
        largest = member;
      }
    }
    if (largest?.evictOldest() !== true) return;
  }
}

export interface TokenCacheOptions {
  /** Bound on cached tokens with active entries (each token holds one entry per auth server and purpose). */
  readonly maxEntries: number;
  /** Bound on tokens with inactive entries; defaults to a quarter of `maxEntries`. */
  readonly maxNegativeEntries?: number;
  /** The byte budget this cache shares (a set's); without one, the cache has its own of `maxBytes` (or none). */
  readonly budget?: ByteBudget;
  /** The cache's own byte bound when it shares no budget. */
  readonly maxBytes?: number;
  readonly clock: Clock;
  /** Registers the token cache metrics (see `registerTokenCacheMetrics`) when given. */
  readonly registry?: Registry;
}

/** A bounded, expiring, single-flight cache of token facts. */
export interface TokenCache {
  /** Looks up an unexpired entry and counts a hit, negative hit or miss. */
  get<V>(fingerprint: string, purpose: CachePurpose<V>): CacheEntry<V> | undefined;
  /** Like `get`, without counting: for lookups nested inside a request that was already counted. */
  peek<V>(fingerprint: string, purpose: CachePurpose<V>): CacheEntry<V> | undefined;
  /** Stores a loader's result (replacing any entry for that purpose) and returns the entry. */
  set<V>(fingerprint: string, purpose: CachePurpose<V>, fill: CacheFill<V>): CacheEntry<V>;
  /**
   * Runs `loader` unless a load for the same fingerprint and purpose is already in flight, in which case the
   * caller joins it: N concurrent misses make one call. A failed load is not cached and rejects every waiter.
   * Does not look in the cache first (pair it with `get`/`peek`).
   */
  load<V>(
    fingerprint: string,
    purpose: CachePurpose<V>,
    loader: () => Promise<CacheFill<V>>,
  ): Promise<CacheEntry<V>>;
  /** Whether a load for this fingerprint and purpose is in flight (a `load` now would join it). */
  loading(fingerprint: string, purpose: CachePurpose<unknown>): boolean;
  /** `get`, else `load`. */
  resolve<V>(
    fingerprint: string,
    purpose: CachePurpose<V>,
    loader: () => Promise<CacheFill<V>>,
  ): Promise<CacheEntry<V>>;
  /**
   * Drops every entry for a token (revocation) and keeps loads in flight for it from storing their result.
   * Returns the number of entries dropped.
   */
  evictFingerprint(fingerprint: string): number;
  /** Drops everything. */
  clear(): void;
  /** Current counters (also exported as metrics when a registry was given). */
  counts(): TokenCacheCounts;
  /** Estimated bytes held. */
  bytes(): number;
  /** Leaves its budget (a dropped partition): its entries no longer count, and it no longer makes room. */
  detach(): void;
}

type StoredEntry = CacheEntry<unknown> & { readonly bytes: number };

/** One token's entries, by purpose, with the bytes they are counted for (overhead included). */
class Bucket extends Map<string, StoredEntry> {
  bytes = TOKEN_OVERHEAD_BYTES;
}

interface Flight {
  readonly promise: Promise<CacheEntry<unknown>>;
  /** Set when the token was revoked while loading: the result is handed out but not stored. */
  revoked: boolean;
}

/**
 * Creates a token cache. The gateway holds one per auth server (see {@link createTokenCacheSet}); inside a cache,
 * purposes keep apart what was cached and for which auth server settings.
 */
export function createTokenCache(options: TokenCacheOptions): TokenCache {
  const { clock } = options;
  const maxEntries = Math.max(1, options.maxEntries);
  const maxNegativeEntries = Math.max(1, options.maxNegativeEntries ?? Math.ceil(maxEntries / 4));
  let hits = 0;
  let misses = 0;
  let negativeHits = 0;
  let evictions = 0;
  let revocations = 0;
  let entries = 0;
  let bytes = 0;
  const budget = options.budget ?? createByteBudget(options.maxBytes ?? Number.POSITIVE_INFINITY);
  let attached = true;

  function account(delta: number): void {
    bytes += delta;
    if (attached) budget.usedBytes += delta;
  }

  const onDispose = (bucket: Bucket, _fingerprint: string, reason: LRUCache.DisposeReason): void => {
    entries -= bucket.size;
    account(-bucket.bytes);
    if (reason === "evict") evictions += bucket.size;
  };
  // Bounded by count through maxSize (each token counts 1) rather than `max`: with `max`, lru-cache allocates
  // its index arrays for the full bound up front (~3 MiB at the default 100,000 tokens, per AuthServer
  // partition); with maxSize they grow with the tokens actually cached. Eviction order is the same.
  const one = (): number => 1;
  const positive = new LRUCache<string, Bucket>({
    maxSize: maxEntries,
    sizeCalculation: one,
    dispose: onDispose,
  });
  const negative = new LRUCache<string, Bucket>({
    maxSize: maxNegativeEntries,
    sizeCalculation: one,
    dispose: onDispose,
  });
  const flights = new Map<string, Flight>();

  function dropEntry(bucket: Bucket, purpose: string): boolean {
    const entry = bucket.get(purpose);
    if (entry === undefined) return false;
    bucket.delete(purpose);
    bucket.bytes -= entry.bytes;
    account(-entry.bytes);
    entries -= 1;
    return true;
  }

  function removePurpose(store: LRUCache<string, Bucket>, fingerprint: string, purpose: string): void {
    const bucket = store.peek(fingerprint);
    if (bucket === undefined || !dropEntry(bucket, purpose)) return;
    if (bucket.size === 0) store.delete(fingerprint);
  }

  function find(store: LRUCache<string, Bucket>, fingerprint: string, purpose: string, nowMs: number) {
    const entry = store.get(fingerprint)?.get(purpose);
    if (entry === undefined) return undefined;
    if (entry.expiresAtMs > nowMs) return entry;
    removePurpose(store, fingerprint, purpose);
    return undefined;
  }

  function lookup<V>(fingerprint: string, purpose: CachePurpose<V>): CacheEntry<V> | undefined {
    const nowMs = clock.now();
    // Entries are stored only as CacheEntry<V> under a CachePurpose<V>, so the widening cast is sound.
    return (find(positive, fingerprint, purpose, nowMs) ?? find(negative, fingerprint, purpose, nowMs)) as
      CacheEntry<V> | undefined;
  }

  function get<V>(fingerprint: string, purpose: CachePurpose<V>): CacheEntry<V> | undefined {
    const entry = lookup(fingerprint, purpose);
    if (entry === undefined) misses += 1;
    else if (entry.negative) negativeHits += 1;
    else hits += 1;
    return entry;
  }

  function store<V>(
    fingerprint: string,
    purpose: CachePurpose<V>,
    fill: CacheFill<V>,
    keep: boolean,
  ): CacheEntry<V> {
    const nowMs = clock.now();
    const entry: CacheEntry<V> & { readonly bytes: number } = fill.negative
      ? {
          negative: true,
          reason: fill.reason,
          expiresAtMs: nowMs + fill.negativeTtlSeconds * 1000,
          bytes: DEFAULT_VALUE_BYTES,
        }
      : {
          negative: false,
          value: fill.value,
          expiresAtMs: Math.min(
            nowMs + fill.maxTtlSeconds * 1000,
            fill.expiresAtMs ?? Number.POSITIVE_INFINITY,
          ),
          bytes: fill.bytes ?? DEFAULT_VALUE_BYTES,
        };
    // A fresh answer always replaces what was cached for this purpose, even when it is not itself cacheable.
    removePurpose(positive, fingerprint, purpose);
    removePurpose(negative, fingerprint, purpose);
    if (!keep || entry.expiresAtMs <= nowMs) return entry;
    const target = entry.negative ? negative : positive;
    let bucket = target.get(fingerprint);
    if (bucket === undefined) {
      bucket = new Bucket();
      account(bucket.bytes);
      target.set(fingerprint, bucket);
    } else {
      // Entries under purposes no request asks for any more (a changed AuthServer or route) are dropped once
      // expired, rather than kept until the token leaves the cache.
      for (const [other, held] of bucket) {
        if (held.expiresAtMs <= nowMs) dropEntry(bucket, other);
      }
    }
    bucket.set(purpose, entry);
    bucket.bytes += entry.bytes;
    account(entry.bytes);
    entries += 1;
    if (budget.usedBytes > budget.limitBytes) makeRoom(budget);
    return entry;
  }

  function load<V>(
    fingerprint: string,
    purpose: CachePurpose<V>,
    loader: () => Promise<CacheFill<V>>,
  ): Promise<CacheEntry<V>> {
    const flightKey = `${fingerprint}\n${purpose}`;
    const pending = flights.get(flightKey);
    if (pending !== undefined) return pending.promise as Promise<CacheEntry<V>>;
    // The loader starts on the next microtask, after the flight is registered, so even a loader that throws
    // synchronously cannot leave a stale flight behind.
    const promise = Promise.resolve()
      .then(loader)
      .then((fill) => store(fingerprint, purpose, fill, !flight.revoked))
      // A revocation may have dropped this flight and a later request started another: leave that one be.
      .finally(() => {
        if (flights.get(flightKey) === flight) flights.delete(flightKey);
      });
    const flight: Flight = { promise, revoked: false };
    flights.set(flightKey, flight);
    return promise;
  }

  const member: BudgetMember = {
    bytes: () => bytes,
    evictRefusal: () => negative.pop() !== undefined,
    evictOldest: () => positive.pop() !== undefined,
  };
  budget.members.add(member);

  if (options.registry !== undefined) {
    registerTokenCacheMetrics(options.registry, () => ({
      hits,
      misses,
      negativeHits,
      evictions,
      revocations,
      entries,
      bytes,
    }));
  }

  return {
    get,
    peek: lookup,
    set: (fingerprint, purpose, fill) => store(fingerprint, purpose, fill, true),
    load,
    loading: (fingerprint, purpose) => flights.has(`${fingerprint}\n${purpose}`),
    resolve(fingerprint, purpose, loader) {
      const entry = get(fingerprint, purpose);
      return entry === undefined ? load(fingerprint, purpose, loader) : Promise.resolve(entry);
    },
    evictFingerprint(fingerprint) {
      const dropped = (positive.peek(fingerprint)?.size ?? 0) + (negative.peek(fingerprint)?.size ?? 0);
      positive.delete(fingerprint);
      negative.delete(fingerprint);
      revocations += dropped;
      // Revocations are rare and flights few (only concurrent misses), so a scan is cheaper than an index.
      const prefix = `${fingerprint}\n`;
      // A revoked flight finishes for those already waiting, but nothing is stored from it and no later request
      // joins it: a request that arrives after the revocation asks the AS again.
      for (const [key, flight] of flights) {
        if (!key.startsWith(prefix)) continue;
        flight.revoked = true;
        flights.delete(key);
      }
      return dropped;
    },
    clear() {
      positive.clear();
      negative.clear();
      for (const flight of flights.values()) flight.revoked = true;
      flights.clear();
    },
    counts: () => ({ hits, misses, negativeHits, evictions, revocations, entries, bytes }),
    bytes: () => bytes,
    detach() {
      if (!attached) return;
      budget.members.delete(member);
      budget.usedBytes -= bytes;
      attached = false;
    },
  };
}

export interface TokenCacheSetOptions {
  readonly clock: Clock;
  /** The bytes all partitions may hold together (estimated); unbounded when absent. */
  readonly maxBytes?: number;
  /**
   * Registers the token cache metrics (see `registerTokenCacheMetrics`) once for the whole set
   * (summed over its partitions) when given.
   */
  readonly registry?: Registry;
}

/** One bounded token cache per auth server, with revocation, clearing and counters across all of them. */
export interface TokenCacheSet {
  /**
   * The partition of auth server `id`, bounded at `maxEntries` tokens: the existing one while its bound is
   * unchanged, else a new, empty one that replaces it.
   */
  partition(id: string, maxEntries: number): TokenCache;
  /** Drops the partitions of auth servers not in `ids` (those that are gone). */
  retain(ids: ReadonlySet<string>): void;
  /** Drops every entry for a token in every partition (revocation); returns the total number dropped. */
  evictFingerprint(fingerprint: string): number;
  /** Drops everything in every partition (partitions and counters stay). */
  clear(): void;
  /** Counters summed over the partitions, including those already dropped or replaced. */
  counts(): TokenCacheCounts;
}

interface Partition {
  readonly maxEntries: number;
  readonly cache: TokenCache;
}

/** Creates the gateway's set of per-auth-server token caches. */
export function createTokenCacheSet(options: TokenCacheSetOptions): TokenCacheSet {
  const { clock } = options;
  const partitions = new Map<string, Partition>();
  const budget = createByteBudget(options.maxBytes ?? Number.POSITIVE_INFINITY);
  // Counters of partitions already dropped or replaced: the exported totals never go backwards.
  let retiredHits = 0;
  let retiredMisses = 0;
  let retiredNegativeHits = 0;
  let retiredEvictions = 0;
  let retiredRevocations = 0;

  function retire(partition: Partition): void {
    const counts = partition.cache.counts();
    retiredHits += counts.hits;
    retiredMisses += counts.misses;
    retiredNegativeHits += counts.negativeHits;
    retiredEvictions += counts.evictions;
    retiredRevocations += counts.revocations;
    // Frees its entries now (a runtime still finishing a request may hold it a little longer), and keeps loads
    // in flight from storing into it: their waiters still get the result. Entries dropped here are not counted
    // as evictions, as with `clear`.
    partition.cache.clear();
    partition.cache.detach();
  }

  function counts(): TokenCacheCounts {
    let hits = retiredHits;
    let misses = retiredMisses;
    let negativeHits = retiredNegativeHits;
    let evictions = retiredEvictions;
    let revocations = retiredRevocations;
    let entries = 0;
    let bytes = 0;
    for (const { cache } of partitions.values()) {
      const partition = cache.counts();
      hits += partition.hits;
      misses += partition.misses;
      negativeHits += partition.negativeHits;
      evictions += partition.evictions;
      revocations += partition.revocations;
      entries += partition.entries;
      bytes += partition.bytes;
    }
    return { hits, misses, negativeHits, evictions, revocations, entries, bytes };
  }

  if (options.registry !== undefined) registerTokenCacheMetrics(options.registry, counts);

  return {
    partition(id, maxEntries) {
      const current = partitions.get(id);
      if (current?.maxEntries === maxEntries) return current.cache;
      // lru-cache fixes its `max` at construction, so a new bound means a new partition: resizing drops that
      // auth server's cached facts once (the next request for each token goes to the AS again).
      if (current !== undefined) retire(current);
      const cache = createTokenCache({ maxEntries, clock, budget });
      partitions.set(id, { maxEntries, cache });
      return cache;
    },
    retain(ids) {
      for (const [id, partition] of partitions) {
        if (ids.has(id)) continue;
        retire(partition);
        partitions.delete(id);
      }
    },
    evictFingerprint(fingerprint) {
      let dropped = 0;
      for (const { cache } of partitions.values()) dropped += cache.evictFingerprint(fingerprint);
      return dropped;
    },
    clear() {
      for (const { cache } of partitions.values()) cache.clear();
    },
    counts,
  };
}
