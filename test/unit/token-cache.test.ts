// Token cache: TTL bounds, negative caching, LRU bound, single-flight, revocation by fingerprint — on a manual clock.
// Token cache set: one bounded partition per auth server, resizing, retention, revocation and counters across them.
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createManualClock } from "../../src/tokens/clock.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import {
  cachePurpose,
  createTokenCache,
  createTokenCacheSet,
  DEFAULT_VALUE_BYTES,
  TOKEN_OVERHEAD_BYTES,
  type CacheFill,
} from "../../src/tokens/token-cache.ts";

const facts = cachePurpose<string>("as#1", "introspect");
const minted = cachePurpose<string>("as#1", "mint", "urn:api");

function positive(value: string, expiresAtMs: number | undefined, maxTtlSeconds = 300): CacheFill<string> {
  return { negative: false, value, expiresAtMs, maxTtlSeconds };
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: Error) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("token cache", () => {
  it("caps a positive entry at the token's exp when that comes first", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const entry = cache.set("fp", facts, positive("a", clock.now() + 30_000));
    expect(entry.expiresAtMs).toBe(clock.now() + 30_000);
    clock.advance(29_999);
    expect(cache.get("fp", facts)).toMatchObject({ negative: false, value: "a" });
    clock.advance(1);
    expect(cache.get("fp", facts)).toBeUndefined();
  });

  it("caps a positive entry at maxTtlSeconds when that comes first", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    cache.set("fp", facts, positive("a", clock.now() + 3_600_000, 60));
    clock.advance(59_999);
    expect(cache.get("fp", facts)).toBeDefined();
    clock.advance(1);
    expect(cache.get("fp", facts)).toBeUndefined();
    expect(cache.counts().entries).toBe(0);
  });

  it("does not store what is already expired or has a zero TTL, but still returns it", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    expect(cache.set("fp", facts, positive("a", clock.now() - 1)).negative).toBe(false);
    cache.set("fp", minted, positive("b", undefined, 0));
    expect(cache.get("fp", facts)).toBeUndefined();
    expect(cache.get("fp", minted)).toBeUndefined();
    expect(cache.counts().entries).toBe(0);
  });

  it("keeps inactive answers for negativeTtlSeconds and counts negative hits", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    cache.set("fp", facts, { negative: true, reason: "inactive", negativeTtlSeconds: 5 });
    clock.advance(4_999);
    expect(cache.get("fp", facts)).toEqual({
      negative: true,
      reason: "inactive",
      expiresAtMs: clock.now() + 1,
      bytes: DEFAULT_VALUE_BYTES,
    });
    clock.advance(1);
    expect(cache.get("fp", facts)).toBeUndefined();
    expect(cache.counts()).toMatchObject({ negativeHits: 1, misses: 1, hits: 0 });
  });

  it("replaces a cached answer with a fresh one for the same purpose, even an uncacheable one", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    cache.set("fp", facts, positive("a", undefined));
    cache.set("fp", facts, { negative: true, reason: "revoked", negativeTtlSeconds: 0 });
    expect(cache.get("fp", facts)).toBeUndefined();
    cache.set("fp", facts, { negative: true, reason: "revoked", negativeTtlSeconds: 10 });
    cache.set("fp", facts, positive("b", undefined));
    expect(cache.get("fp", facts)).toMatchObject({ value: "b" });
    expect(cache.counts().entries).toBe(1);
  });

  it("drops a token's expired entries under other purposes when it stores a new one", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const old = cachePurpose<string>("as#0", "mint", "urn:api"); // a purpose no request asks for any more
    cache.set("fp", old, positive("old", clock.now() + 10_000));
    cache.set("fp", minted, positive("live", clock.now() + 60_000));
    expect(cache.counts().entries).toBe(2);
    clock.advance(10_000);
    cache.set("fp", facts, positive("new", clock.now() + 60_000));
    expect(cache.counts().entries).toBe(2); // the expired one went; the live one stays
    expect(cache.get("fp", minted)).toMatchObject({ value: "live" });
  });

  it("is bounded: the least recently used token goes first", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 3, clock });
    for (const fp of ["a", "b", "c"]) cache.set(fp, facts, positive(fp, undefined));
    expect(cache.get("a", facts)).toBeDefined(); // a is now the most recent
    cache.set("d", facts, positive("d", undefined));
    expect(cache.get("b", facts)).toBeUndefined();
    for (const fp of ["a", "c", "d"]) expect(cache.get(fp, facts)).toBeDefined();
    expect(cache.counts()).toMatchObject({ entries: 3, evictions: 1 });
  });

  it("keeps garbage tokens' negative entries from evicting valid facts", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 4, maxNegativeEntries: 2, clock });
    cache.set("good", facts, positive("g", undefined));
    for (let i = 0; i < 100; i += 1) {
      cache.set(`garbage-${i}`, facts, { negative: true, reason: "inactive", negativeTtlSeconds: 30 });
    }
    expect(cache.get("good", facts)).toMatchObject({ value: "g" });
    expect(cache.counts().entries).toBe(3);
  });

  it("single-flight: N concurrent misses make one loader call and share its result", async () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    let calls = 0;
    const gate = deferred<CacheFill<string>>();
    const loader = (): Promise<CacheFill<string>> => {
      calls += 1;
      return gate.promise;
    };
    const waiters = Array.from({ length: 100 }, () => cache.resolve("fp", facts, loader));
    await Promise.resolve();
    gate.resolve(positive("shared", undefined));
    const entries = await Promise.all(waiters);
    expect(calls).toBe(1);
    for (const entry of entries) expect(entry).toMatchObject({ negative: false, value: "shared" });
    expect(cache.get("fp", facts)).toMatchObject({ value: "shared" });
  });

  it("single-flight: a failed load rejects every waiter and is not cached", async () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    let calls = 0;
    const gate = deferred<CacheFill<string>>();
    const failing = (): Promise<CacheFill<string>> => {
      calls += 1;
      return gate.promise;
    };
    const waiters = Array.from({ length: 10 }, () => cache.resolve("fp", facts, failing));
    gate.reject(new Error("AS down"));
    const settled = await Promise.allSettled(waiters);
    expect(calls).toBe(1);
    expect(settled.every((result) => result.status === "rejected")).toBe(true);
    expect(cache.get("fp", facts)).toBeUndefined();
    // The next miss tries again.
    await expect(
      cache.resolve("fp", facts, () => Promise.resolve(positive("ok", undefined))),
    ).resolves.toMatchObject({
      value: "ok",
    });
  });

  it("single-flight: a loader that throws synchronously leaves no stale flight", async () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const throwing = (): Promise<CacheFill<string>> => {
      throw new Error("boom");
    };
    await expect(cache.load("fp", facts, throwing)).rejects.toThrow("boom");
    await expect(
      cache.load("fp", facts, () => Promise.resolve(positive("ok", undefined))),
    ).resolves.toMatchObject({
      value: "ok",
    });
  });

  it("single-flight is per purpose: different purposes of one token load separately", async () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const [a, b] = await Promise.all([
      cache.resolve("fp", facts, () => Promise.resolve(positive("facts", undefined))),
      cache.resolve("fp", minted, () => Promise.resolve(positive("jwt", undefined))),
    ]);
    expect(a).toMatchObject({ value: "facts" });
    expect(b).toMatchObject({ value: "jwt" });
    expect(cache.counts().entries).toBe(2);
  });

  it("evicts every entry of a token by its fingerprint (revocation), and only that token's", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const revoked = fingerprintToken("revoked-token");
    const other = fingerprintToken("other-token");
    cache.set(revoked, facts, positive("f", undefined));
    cache.set(revoked, minted, positive("m", undefined));
    cache.set(other, facts, positive("o", undefined));
    expect(cache.evictFingerprint(revoked)).toBe(2);
    expect(cache.get(revoked, facts)).toBeUndefined();
    expect(cache.get(revoked, minted)).toBeUndefined();
    expect(cache.get(other, facts)).toBeDefined();
    expect(cache.counts()).toMatchObject({ entries: 1, evictions: 0, revocations: 2 });
  });

  it("a load in flight when its token is revoked hands out its result but does not store it", async () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const gate = deferred<CacheFill<string>>();
    const pending = cache.resolve("fp", facts, () => gate.promise);
    await Promise.resolve();
    cache.evictFingerprint("fp");
    gate.resolve(positive("before-revocation", undefined));
    await expect(pending).resolves.toMatchObject({ value: "before-revocation" });
    expect(cache.get("fp", facts)).toBeUndefined();
  });

  it("a request after the revocation does not join the load that started before it", async () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    const before = deferred<CacheFill<string>>();
    const after = deferred<CacheFill<string>>();
    const early = cache.resolve("fp", facts, () => before.promise);
    await Promise.resolve();
    cache.evictFingerprint("fp");
    let secondLoads = 0;
    const late = cache.resolve("fp", facts, () => {
      secondLoads += 1;
      return after.promise;
    });
    // The early load ends first; its end must not drop the later flight, which a third request joins.
    before.resolve(positive("before-revocation", undefined));
    await expect(early).resolves.toMatchObject({ value: "before-revocation" });
    const joined = cache.resolve("fp", facts, () => Promise.reject(new Error("joins, never loads")));
    after.resolve({ negative: true, reason: "revoked", negativeTtlSeconds: 10 });
    await expect(late).resolves.toMatchObject({ negative: true, reason: "revoked" });
    await expect(joined).resolves.toMatchObject({ negative: true, reason: "revoked" });
    expect(secondLoads).toBe(1);
    expect(cache.get("fp", facts)).toMatchObject({ negative: true, reason: "revoked" });
  });

  it("exports lookups by result, evictions by reason apart from them, and the entry gauge", async () => {
    const clock = createManualClock();
    const registry = new Registry();
    const cache = createTokenCache({ maxEntries: 1, clock, registry });
    cache.set("a", facts, positive("a", undefined));
    cache.get("a", facts);
    cache.get("a", minted);
    cache.set("b", facts, positive("b", undefined)); // evicts a
    cache.set("n", facts, { negative: true, reason: "inactive", negativeTtlSeconds: 10 });
    cache.get("n", facts);
    cache.evictFingerprint("b"); // revoked
    const text = await registry.metrics();
    // Only lookups under phantomgate_token_cache_total: its sum is the number of lookups.
    expect(text.split("\n").filter((line) => line.startsWith("phantomgate_token_cache_total{"))).toEqual([
      'phantomgate_token_cache_total{result="hit"} 1',
      'phantomgate_token_cache_total{result="miss"} 1',
      'phantomgate_token_cache_total{result="negative_hit"} 1',
    ]);
    expect(text).toContain('phantomgate_token_cache_evictions_total{reason="capacity"} 1');
    expect(text).toContain('phantomgate_token_cache_evictions_total{reason="revoked"} 1');
    expect(text).toContain("phantomgate_token_cache_entries 1");
  });
});

describe("token cache set", () => {
  const factsOf = (as: string) => cachePurpose<string>(`${as}#1`, "introspect");
  const a = factsOf("a");
  const b = factsOf("b");

  function metricLine(text: string, prefix: string): number {
    const line = text.split("\n").find((candidate) => candidate.startsWith(`${prefix} `));
    return Number(line?.slice(prefix.length + 1));
  }

  async function scrape(registry: Registry) {
    const text = await registry.metrics();
    return {
      hit: metricLine(text, 'phantomgate_token_cache_total{result="hit"}'),
      miss: metricLine(text, 'phantomgate_token_cache_total{result="miss"}'),
      negativeHit: metricLine(text, 'phantomgate_token_cache_total{result="negative_hit"}'),
      eviction: metricLine(text, 'phantomgate_token_cache_evictions_total{reason="capacity"}'),
      entries: metricLine(text, "phantomgate_token_cache_entries"),
    };
  }

  it("bounds each partition on its own: a full one evicts its own oldest token, never another's", () => {
    const caches = createTokenCacheSet({ clock: createManualClock() });
    const small = caches.partition("a", 2);
    const large = caches.partition("b", 100);
    for (const fp of ["x", "y"]) large.set(fp, b, positive(fp, undefined));
    for (const fp of ["x", "y", "z"]) small.set(fp, a, positive(fp, undefined));
    expect(small.get("x", a)).toBeUndefined();
    expect(small.get("y", a)).toBeDefined();
    expect(small.get("z", a)).toBeDefined();
    expect(large.get("x", b)).toMatchObject({ value: "x" });
    expect(large.get("y", b)).toMatchObject({ value: "y" });
    expect(caches.counts()).toMatchObject({ entries: 4, evictions: 1 });
  });

  it("returns the same partition while the bound is unchanged, and a new empty one when it changes", () => {
    const caches = createTokenCacheSet({ clock: createManualClock() });
    const first = caches.partition("a", 10);
    first.set("fp", a, positive("facts", undefined));
    expect(caches.partition("a", 10)).toBe(first);
    const resized = caches.partition("a", 20);
    expect(resized).not.toBe(first);
    expect(resized.get("fp", a)).toBeUndefined();
    // The replaced partition was emptied too, so a runtime still holding it cannot serve stale facts.
    expect(first.peek("fp", a)).toBeUndefined();
    expect(caches.partition("a", 20)).toBe(resized);
    expect(caches.counts().entries).toBe(0);
  });

  it("a load in flight in a replaced partition hands out its result but stores nothing", async () => {
    const caches = createTokenCacheSet({ clock: createManualClock() });
    const first = caches.partition("a", 10);
    const gate = deferred<CacheFill<string>>();
    const pending = first.resolve("fp", a, () => gate.promise);
    await Promise.resolve();
    caches.partition("a", 20);
    gate.resolve(positive("late", undefined));
    await expect(pending).resolves.toMatchObject({ value: "late" });
    expect(first.peek("fp", a)).toBeUndefined();
    expect(caches.counts().entries).toBe(0);
  });

  it("retain drops the partitions of auth servers that are gone and keeps the others", () => {
    const caches = createTokenCacheSet({ clock: createManualClock() });
    const kept = caches.partition("a", 10);
    const dropped = caches.partition("b", 10);
    kept.set("fp", a, positive("a", undefined));
    dropped.set("fp", b, positive("b", undefined));
    caches.retain(new Set(["a"]));
    expect(caches.counts().entries).toBe(1);
    expect(caches.partition("a", 10)).toBe(kept);
    expect(kept.get("fp", a)).toMatchObject({ value: "a" });
    const recreated = caches.partition("b", 10);
    expect(recreated).not.toBe(dropped);
    expect(recreated.get("fp", b)).toBeUndefined();
  });

  it("evicts a token by fingerprint in every partition (revocation) and returns the total dropped", () => {
    const caches = createTokenCacheSet({ clock: createManualClock() });
    const first = caches.partition("a", 10);
    const second = caches.partition("b", 10);
    const revoked = fingerprintToken("revoked-token");
    const other = fingerprintToken("other-token");
    first.set(revoked, a, positive("f", undefined));
    first.set(revoked, minted, positive("m", undefined));
    second.set(revoked, b, positive("f", undefined));
    second.set(other, b, positive("o", undefined));
    expect(caches.evictFingerprint(revoked)).toBe(3);
    expect(first.get(revoked, a)).toBeUndefined();
    expect(second.get(revoked, b)).toBeUndefined();
    expect(second.get(other, b)).toBeDefined();
    expect(caches.evictFingerprint(revoked)).toBe(0);
    expect(caches.counts()).toMatchObject({ entries: 1, evictions: 0, revocations: 3 });
  });

  it("clear empties every partition but keeps them", () => {
    const caches = createTokenCacheSet({ clock: createManualClock() });
    const first = caches.partition("a", 10);
    first.set("fp", a, positive("a", undefined));
    caches.partition("b", 10).set("fp", b, positive("b", undefined));
    caches.clear();
    expect(caches.counts().entries).toBe(0);
    expect(caches.partition("a", 10)).toBe(first);
  });

  it("exports one set of metrics summed over partitions; counters never go backwards on retain or resize", async () => {
    const registry = new Registry();
    const caches = createTokenCacheSet({ clock: createManualClock(), registry });
    const first = caches.partition("a", 1);
    const second = caches.partition("b", 10);
    first.set("x", a, positive("x", undefined));
    first.get("x", a); // hit
    first.set("y", a, positive("y", undefined)); // evicts x
    first.get("x", a); // miss
    second.set("n", b, { negative: true, reason: "inactive", negativeTtlSeconds: 10 });
    second.get("n", b); // negative hit
    second.set("p", b, positive("p", undefined));
    second.get("p", b); // hit
    expect(await scrape(registry)).toEqual({ hit: 2, miss: 1, negativeHit: 1, eviction: 1, entries: 3 });

    caches.retain(new Set(["a"])); // drops b
    expect(await scrape(registry)).toEqual({ hit: 2, miss: 1, negativeHit: 1, eviction: 1, entries: 1 });

    const resized = caches.partition("a", 5); // replaces a
    expect(await scrape(registry)).toEqual({ hit: 2, miss: 1, negativeHit: 1, eviction: 1, entries: 0 });

    resized.get("y", a); // miss: the resize dropped it
    resized.set("y", a, positive("y", undefined));
    resized.get("y", a); // hit
    expect(await scrape(registry)).toEqual({ hit: 3, miss: 2, negativeHit: 1, eviction: 1, entries: 1 });

    caches.retain(new Set());
    expect(await scrape(registry)).toEqual({ hit: 3, miss: 2, negativeHit: 1, eviction: 1, entries: 0 });
  });
});

describe("token cache byte bound", () => {
  const big = (value: string, bytes: number): CacheFill<string> => ({
    negative: false,
    value,
    expiresAtMs: undefined,
    maxTtlSeconds: 300,
    bytes,
  });
  const perToken = (bytes: number): number => TOKEN_OVERHEAD_BYTES + bytes;

  it("evicts least recently used tokens once their estimated bytes pass maxBytes, well before maxEntries", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 1_000, maxBytes: 5 * perToken(60_000), clock });
    for (let i = 0; i < 10; i++) cache.set(`fp${i}`, facts, big(`v${i}`, 60_000));
    expect(cache.bytes()).toBeLessThanOrEqual(5 * perToken(60_000));
    expect(cache.counts()).toMatchObject({ entries: 5, evictions: 5 });
    expect(cache.peek("fp4", facts)).toBeUndefined();
    expect(cache.peek("fp5", facts)).toMatchObject({ value: "v5" });
    // A token used recently is kept over an older one.
    cache.get("fp5", facts);
    cache.set("fp10", facts, big("v10", 60_000));
    expect(cache.peek("fp5", facts)).toMatchObject({ value: "v5" });
    expect(cache.peek("fp6", facts)).toBeUndefined();
  });

  it("counts every purpose of a token, and gives the bytes back on expiry, replacement, revocation and clear", () => {
    const clock = createManualClock();
    const cache = createTokenCache({ maxEntries: 10, clock });
    cache.set("fp", facts, big("facts", 1_000));
    cache.set("fp", minted, big("jwt", 800));
    expect(cache.bytes()).toBe(TOKEN_OVERHEAD_BYTES + 1_800);
    cache.set("fp", minted, big("jwt2", 900));
    expect(cache.bytes()).toBe(TOKEN_OVERHEAD_BYTES + 1_900);
    cache.set("other", facts, { negative: true, reason: "inactive", negativeTtlSeconds: 5 });
    expect(cache.bytes()).toBe(2 * TOKEN_OVERHEAD_BYTES + 1_900 + DEFAULT_VALUE_BYTES);
    clock.advance(5_000);
    expect(cache.get("other", facts)).toBeUndefined();
    expect(cache.bytes()).toBe(TOKEN_OVERHEAD_BYTES + 1_900);
    cache.evictFingerprint("fp");
    expect(cache.bytes()).toBe(0);
    cache.set("fp", facts, big("facts", 1_000));
    cache.clear();
    expect(cache.bytes()).toBe(0);
  });

  it("gives up cached refusals before valid tokens, in any partition: garbage tokens cannot push facts out", () => {
    const clock = createManualClock();
    const caches = createTokenCacheSet({ clock, maxBytes: 100 * perToken(2_000) + 10_000 });
    const valid = caches.partition("valid", 1_000);
    const flooded = caches.partition("flooded", 1_000);
    for (let i = 0; i < 100; i++) valid.set(`v${i}`, facts, big(`v${i}`, 2_000));
    // 250 refused garbage tokens at another auth server, and 250 at the same one.
    for (let i = 0; i < 250; i++) {
      flooded.set(`g${i}`, facts, { negative: true, reason: "inactive", negativeTtlSeconds: 60 });
      valid.set(`h${i}`, facts, { negative: true, reason: "inactive", negativeTtlSeconds: 60 });
    }
    let kept = 0;
    for (let i = 0; i < 100; i++) if (valid.peek(`v${i}`, facts) !== undefined) kept += 1;
    expect(kept).toBe(100);
    expect(caches.counts().bytes).toBeLessThanOrEqual(100 * perToken(2_000) + 10_000);
  });

  it("shares one budget across a set's partitions: the partition holding the most gives way, and a dropped one frees its share", async () => {
    const clock = createManualClock();
    const registry = new Registry();
    const caches = createTokenCacheSet({ clock, registry, maxBytes: 10 * perToken(10_000) });
    const busy = caches.partition("busy", 1_000);
    const quiet = caches.partition("quiet", 1_000);
    for (let i = 0; i < 3; i++) quiet.set(`q${i}`, facts, big(`q${i}`, 10_000));
    for (let i = 0; i < 20; i++) busy.set(`b${i}`, facts, big(`b${i}`, 10_000));
    // The busy partition pushed out its own oldest tokens, not the quiet one's.
    expect(quiet.counts().entries).toBe(3);
    expect(busy.counts().entries).toBe(7);
    expect(caches.counts().bytes).toBeLessThanOrEqual(10 * perToken(10_000));
    // Resizing the busy partition drops it: its bytes no longer count against the quiet one.
    caches.partition("busy", 500);
    for (let i = 3; i < 10; i++) quiet.set(`q${i}`, facts, big(`q${i}`, 10_000));
    expect(quiet.counts().entries).toBe(10);
    expect(await registry.getSingleMetricAsString("phantomgate_token_cache_bytes")).toContain(
      `phantomgate_token_cache_bytes ${10 * perToken(10_000)}`,
    );
  });
});
