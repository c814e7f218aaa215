// Token cache: TTL bounds, negative caching, LRU bound, single-flight, revocation by fingerprint — on a manual clock.
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createManualClock } from "../../src/tokens/clock.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import { cachePurpose, createTokenCache, type CacheFill } from "../../src/tokens/token-cache.ts";

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
    expect(cache.counts()).toMatchObject({ entries: 1, evictions: 2 });
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

  it("exports hit/miss/negative_hit/eviction counters and the entry gauge", async () => {
    const clock = createManualClock();
    const registry = new Registry();
    const cache = createTokenCache({ maxEntries: 1, clock, registry });
    cache.set("a", facts, positive("a", undefined));
    cache.get("a", facts);
    cache.get("a", minted);
    cache.set("b", facts, positive("b", undefined)); // evicts a
    cache.set("n", facts, { negative: true, reason: "inactive", negativeTtlSeconds: 10 });
    cache.get("n", facts);
    const text = await registry.metrics();
    expect(text).toContain('phantomgate_token_cache_total{result="hit"} 1');
    expect(text).toContain('phantomgate_token_cache_total{result="miss"} 1');
    expect(text).toContain('phantomgate_token_cache_total{result="negative_hit"} 1');
    expect(text).toContain('phantomgate_token_cache_total{result="eviction"} 1');
    expect(text).toContain("phantomgate_token_cache_entries 2");
  });
});
