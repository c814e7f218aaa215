// The revocation relay's pure parts: the per-replica log (what each write of the relay Lease carries, bounds,
// expiry, chunking of bursts, taking over an earlier run's Lease), the annotation format and Lease names. The
// Lease traffic itself is exercised on a real API server by test/k8s/fleet.test.ts.
import { describe, expect, it } from "vitest";
import {
  createRevocationLog,
  decodeRevocationBatches,
  encodeRevocationBatches,
  maxRelayCapacity,
  revocationRelayName,
  type RelayWrite,
} from "../../src/operator/distribute/revocation-relay.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";

const fp = (i: number): string => fingerprintToken(`token-${i}`);
const fps = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => fp(from + i));
const flat = (write: RelayWrite | undefined): string[] =>
  write?.batches.flatMap((batch) => batch.fingerprints) ?? [];
const minute = 60_000;

describe("revocation log", () => {
  it("writes new fingerprints grouped by time, then nothing until more arrive", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 10 });
    expect(log.next()).toBeUndefined();
    const seq = log.add([fp(1), fp(2)], 1_000);
    log.add([fp(3)], 2_000);
    const write = log.next();
    expect(write?.batches).toEqual([
      { at: 1_000, fingerprints: [fp(1), fp(2)] },
      { at: 2_000, fingerprints: [fp(3)] },
    ]);
    expect(write?.upTo).toBeGreaterThan(seq);
    log.written(write?.upTo ?? 0);
    expect(log.published()).toBe(write?.upTo);
    expect(log.next()).toBeUndefined();
    // The next write carries the earlier ones along (readers that relisted see them too).
    log.add([fp(4)], 3_000);
    expect(flat(log.next())).toEqual([fp(1), fp(2), fp(3), fp(4)]);
  });

  it("moves a fingerprint revoked again to the end with its new time", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 10 });
    log.add([fp(1), fp(2)], 1_000);
    log.written(log.next()?.upTo ?? 0);
    log.add([fp(1)], 5_000);
    expect(log.next()?.batches).toEqual([
      { at: 1_000, fingerprints: [fp(2)] },
      { at: 5_000, fingerprints: [fp(1)] },
    ]);
  });

  it("writes a burst larger than the capacity in successive versions, each carrying new ones", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 4 });
    const seq = log.add(fps(0, 10), 1_000);
    const seen: string[][] = [];
    for (let write = log.next(); write !== undefined; write = log.next()) {
      seen.push(flat(write));
      log.written(write.upTo);
    }
    expect(seen).toEqual([fps(0, 4), fps(4, 8), fps(6, 10)]);
    expect(log.published()).toBe(seq);
    // Memory: only what a later write could still carry stays.
    expect(log.size()).toBe(4);
  });

  it("drops what is older than the retention", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 10 });
    log.add([fp(1)], 0);
    log.add([fp(2)], 10 * minute);
    log.written(log.next()?.upTo ?? 0);
    log.add([fp(3)], 16 * minute);
    log.prune(16 * minute);
    expect(flat(log.next())).toEqual([fp(2), fp(3)]);
    log.prune(40 * minute);
    expect(log.next()).toBeUndefined();
    expect(log.size()).toBe(0);
  });

  it("keeps an earlier run's entries (older than anything new) without writing them on their own", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 10 });
    log.add([fp(3)], 3_000);
    log.adopt([
      { at: 1_000, fingerprints: [fp(1), fp(3)] },
      { at: 2_000, fingerprints: [fp(2)] },
    ]);
    expect(log.next()?.batches).toEqual([
      { at: 1_000, fingerprints: [fp(1)] },
      { at: 2_000, fingerprints: [fp(2)] },
      { at: 3_000, fingerprints: [fp(3)] },
    ]);
    const fresh = createRevocationLog({ retentionMs: 15 * minute, capacity: 10 });
    fresh.adopt([{ at: 1_000, fingerprints: [fp(1)] }]);
    expect(fresh.next()).toBeUndefined();
  });

  it("bounds the capacity so a Lease annotation stays far below 256 KiB", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 1_000_000 });
    // Worst case: every fingerprint revoked at its own moment.
    for (let i = 0; i < maxRelayCapacity + 100; i++) log.add([fp(i)], 1_700_000_000_000 + i);
    const write = log.next();
    expect(flat(write)).toHaveLength(maxRelayCapacity);
    expect(Buffer.byteLength(encodeRevocationBatches(write?.batches ?? []))).toBeLessThan(200 * 1024);
  });
});

describe("relay annotation and names", () => {
  it("round-trips batches and drops anything that is not a fingerprint", () => {
    const batches = [{ at: 1_000, fingerprints: [fp(1), fp(2)] }];
    expect(decodeRevocationBatches(encodeRevocationBatches(batches))).toEqual(batches);
    const hostile = JSON.stringify({
      batches: [
        { at: 1, fingerprints: [fp(1), "a-raw-token", 42, "x".repeat(43) + "!"] },
        { at: "soon", fingerprints: [fp(2)] },
        { at: 2, fingerprints: "nope" },
        { at: 3, fingerprints: ["not-a-fingerprint"] },
        null,
        7,
        "batch",
      ],
    });
    expect(decodeRevocationBatches(hostile)).toEqual([{ at: 1, fingerprints: [fp(1)] }]);
    for (const junk of [undefined, 7, "{", "null", '{"batches":{}}']) {
      expect(decodeRevocationBatches(junk)).toEqual([]);
    }
  });

  it("names a replica's Lease after the election Lease and a DNS-safe identity", () => {
    expect(revocationRelayName("phantomgate-operator", "phantomgate-operator-7d9f-a")).toBe(
      "phantomgate-operator-revocations-phantomgate-operator-7d9f-a",
    );
    expect(revocationRelayName("pg", "Host_Name.example.")).toBe("pg-revocations-host-name.example");
    expect(revocationRelayName("pg", "__")).toBe("pg-revocations-replica");
    expect(revocationRelayName("pg", "a".repeat(400)).length).toBeLessThanOrEqual(253);
  });
});
