// The revocation relay's pure parts: the per-replica log (what each write of the relay Lease carries, bounds,
// expiry, chunking of bursts, taking over an earlier run's Lease), the annotation format and Lease names. The
// Lease traffic itself is exercised on a real API server by test/k8s/fleet.test.ts.
import { describe, expect, it } from "vitest";
import {
  createRevocationLog,
  decodeRelayPosition,
  decodeRevocationBatches,
  encodeRevocationBatches,
  maxRelayCapacity,
  missedEntries,
  revocationRelayName,
  type RelayPosition,
  type RelayWrite,
} from "../../src/operator/distribute/revocation-relay.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";

const fp = (i: number): string => fingerprintToken(`token-${i}`);
const fps = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => fp(from + i));
const flat = (write: RelayWrite | undefined): string[] =>
  write?.batches.flatMap((batch) => batch.fingerprints) ?? [];
const minute = 60_000;
const RUN = "0123456789abcdef";
const at = (write: RelayWrite | undefined, run = RUN): RelayPosition | undefined =>
  write === undefined ? undefined : { run, since: write.since, upTo: write.upTo, prior: write.prior };

/** A small deterministic generator (mulberry32), so a failing sequence can be replayed. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

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

describe("relay positions: a reader learns that it missed entries", () => {
  it("numbers the versions of a burst so that skipping one shows, and reading each in turn does not", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 4 });
    log.add(fps(0, 10), 1_000);
    const writes: RelayWrite[] = [];
    for (let write = log.next(); write !== undefined; write = log.next()) {
      writes.push(write);
      log.written(write.upTo);
    }
    expect(writes.map((w) => [w.since, w.upTo])).toEqual([
      [0, 4],
      [4, 8],
      [6, 10],
    ]);
    expect(missedEntries(at(writes[0]), at(writes[1]))).toBe(false);
    expect(missedEntries(at(writes[1]), at(writes[2]))).toBe(false);
    // A reader whose watch restarted during the burst sees the first version, then only the last.
    expect(missedEntries(at(writes[0]), at(writes[2]))).toBe(true);
  });

  it("does not call a fingerprint revoked again, or one that expired after the reader saw it, a gap", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 3 });
    log.add(fps(0, 3), 0);
    const first = log.next();
    log.written(first?.upTo ?? 0);
    log.add([fp(0)], 1_000); // revoked again: moves to the end with a new number
    const second = log.next();
    log.written(second?.upTo ?? 0);
    expect(missedEntries(at(first), at(second))).toBe(false);
    log.add([fp(7)], 20 * minute);
    log.prune(20 * minute); // the first three expire
    const third = log.next();
    expect(flat(third)).toEqual([fp(7)]);
    expect(missedEntries(at(second), at(third))).toBe(false);
    // A reader that last saw the first version missed fp(0)'s second revocation, which has expired as well.
    expect(missedEntries(at(first), at(third))).toBe(false);
  });

  it("counts entries trimmed away as missed only until they would have expired", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 2 });
    log.add(fps(0, 6), 0);
    const versions: RelayWrite[] = [];
    for (let write = log.next(); write !== undefined; write = log.next()) {
      versions.push(write);
      log.written(write.upTo);
    }
    log.add([fp(9)], 10 * minute);
    log.prune(10 * minute);
    const soon = log.next();
    expect(missedEntries(at(versions[0]), at(soon))).toBe(true);
    log.add([fp(10)], 16 * minute);
    log.prune(16 * minute); // everything of the burst has expired: nothing missed is still due
    const later = log.next();
    expect(later?.since).toBe(0);
    expect(missedEntries(at(versions[0]), at(later))).toBe(false);
    // A Lease appearing after a reader's first list is judged from its start.
    const unseen = { run: "", since: 0, upTo: 0 };
    expect(missedEntries(unseen, at(versions[0]))).toBe(false);
    expect(missedEntries(unseen, at(soon))).toBe(true);
  });

  it("shows entries lost while the API server was away (more than the log holds unwritten)", () => {
    const log = createRevocationLog({ retentionMs: 15 * minute, capacity: 2, maxUnwritten: 2 });
    log.add([fp(0)], 0);
    const seen = log.next();
    log.written(seen?.upTo ?? 0);
    log.add(fps(1, 8), 1_000); // nothing can be written for a while; the oldest unwritten go
    log.prune(1_000);
    const next = log.next();
    expect(flat(next)).not.toContain(fp(1));
    expect(missedEntries(at(seen), at(next))).toBe(true);
  });

  it("judges a new run (the writer restarted) by whether its first versions went by unseen", () => {
    const old = { run: RUN, since: 10, upTo: 40 };
    expect(missedEntries(old, { run: "fedcba9876543210", since: 0, upTo: 3 })).toBe(false);
    expect(missedEntries(old, { run: "fedcba9876543210", since: 2, upTo: 5 })).toBe(true);
    // Nothing can be said without a previous position, or of a version written without one (an older writer).
    expect(missedEntries(undefined, { run: RUN, since: 500, upTo: 600 })).toBe(false);
    expect(missedEntries(old, undefined)).toBe(false);
    expect(missedEntries(undefined, undefined)).toBe(false);
  });

  it("holds in random histories: when no gap is reported, the versions a reader saw hold every recent revocation", () => {
    const retentionMs = 15 * minute;
    let reads = 0;
    let gaps = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const random = seeded(seed);
      const capacity = 1 + Math.floor(random() * 6);
      // Half the histories can lose unwritten entries to the log's bound; the others only to expiry.
      const tight = random() < 0.5;
      const options = {
        retentionMs,
        capacity,
        ...(tight ? { maxUnwritten: 1 + Math.floor(random() * 8) } : {}),
      };
      let run = 1;
      const runId = (n: number): string => n.toString(16).padStart(16, "0");
      let log = createRevocationLog(options);
      /** The writer's Lease: the last version written, and the run that wrote it. */
      let lease: { write: RelayWrite; run: string } | undefined;
      /** fingerprint → the newest revocation time a written version carried */
      const published = new Map<string, number>();
      const known = new Set<string>(); // what the reader's gateways were told
      /** fingerprint → the number of its newest revocation in the writer's current run */
      const numbered = new Map<string, number>();
      let last: RelayPosition | undefined;
      /** Since the reader's last read, every version was read and the API server was never away. */
      let clean = true;
      let now = 0;
      for (let step = 0; step < 80; step++) {
        now += Math.floor(random() * 4 * minute);
        if (random() < 0.1) {
          // The writer restarts under its identity: a new run takes over what its Lease holds.
          run += 1;
          numbered.clear();
          log = createRevocationLog(options);
          if (lease !== undefined) {
            log.adopt(lease.write.batches, {
              run: lease.run,
              since: lease.write.since,
              upTo: lease.write.upTo,
              prior: lease.write.prior,
            });
          }
        }
        const added = Array.from({ length: Math.floor(random() * 5) }, () => fp(Math.floor(random() * 30)));
        const lastSeq = log.add(added, now);
        added.forEach((f, i) => numbered.set(f, lastSeq - (added.length - 1 - i)));
        log.prune(now);
        if (random() < 0.2) {
          clean = false; // the API server was away: nothing written this time
          continue;
        }
        // Written until everything is published, as the relay's writer does.
        for (let write = log.next(); write !== undefined; write = log.next()) {
          log.written(write.upTo);
          lease = { write, run: runId(run) };
          for (const batch of write.batches) {
            for (const f of batch.fingerprints) published.set(f, Math.max(published.get(f) ?? 0, batch.at));
          }
          if (random() < 0.4) {
            clean = false; // the reader's watch missed this version
            continue;
          }
          const position: RelayPosition = {
            run: runId(run),
            since: write.since,
            upTo: write.upTo,
            prior: write.prior,
          };
          // The reader listed before the writer's first version: the relay judges a Lease it sees for the first
          // time from its start.
          const gap = missedEntries(last ?? { run: "", since: 0, upTo: 0 }, position);
          if (clean && !tight && gap) {
            throw new Error(`seed ${seed}: a gap reported to a reader that saw every version`);
          }
          reads += 1;
          if (gap) gaps += 1;
          last = position;
          clean = true;
          for (const f of flat(write)) known.add(f);
          for (const [f, when] of published) {
            if (when <= now - retentionMs || known.has(f)) continue;
            // Revoked again since: it moved to a later number and is due with the version that reaches it.
            if ((numbered.get(f) ?? 0) > write.upTo) continue;
            // A gap makes the gateways drop every cached token fact: whatever was revoked is refused again.
            if (gap) known.add(f);
            else throw new Error(`seed ${seed}: ${f.slice(0, 8)} (revoked at ${when}) silently missed`);
          }
        }
      }
    }
    // The histories exercise both outcomes.
    expect(reads).toBeGreaterThan(5_000);
    expect(gaps).toBeGreaterThan(100);
    expect(gaps).toBeLessThan(reads / 2);
  });

  it("carries what a restarted writer took over: readers behind the earlier run learn that they missed entries", () => {
    const earlier = createRevocationLog({ retentionMs: 15 * minute, capacity: 3 });
    earlier.add(fps(0, 8), 1_000);
    const versions: RelayWrite[] = [];
    for (let write = earlier.next(); write !== undefined; write = earlier.next()) {
      versions.push(write);
      earlier.written(write.upTo);
    }
    const lastOfEarlier = versions.at(-1);
    if (lastOfEarlier === undefined) throw new Error("nothing written");
    const earlierRun = "aaaaaaaaaaaaaaaa";
    const restarted = createRevocationLog({ retentionMs: 15 * minute, capacity: 4 });
    restarted.adopt(lastOfEarlier.batches, { run: earlierRun, ...lastOfEarlier });
    restarted.add([fp(10)], 2_000);
    const first = restarted.next();
    expect(first?.since).toBe(0);
    expect(first?.prior).toEqual({ run: earlierRun, since: lastOfEarlier.since });
    const newRun = (write: RelayWrite | undefined): RelayPosition | undefined =>
      write === undefined ? undefined : { run: "bbbbbbbbbbbbbbbb", ...write };
    const sawAll = { run: earlierRun, since: 0, upTo: lastOfEarlier.upTo };
    const sawFirst = { run: earlierRun, since: 0, upTo: versions[0]?.upTo ?? 0 };
    expect(missedEntries(sawAll, newRun(first))).toBe(false);
    expect(missedEntries(sawFirst, newRun(first))).toBe(true);
    // Once the taken-over entries are pushed out, even a reader just behind the earlier run's end missed some.
    restarted.written(first?.upTo ?? 0);
    restarted.add(fps(20, 24), 3_000);
    let later: RelayWrite | undefined;
    for (let write = restarted.next(); write !== undefined; write = restarted.next()) {
      later = write;
      restarted.written(write.upTo);
    }
    expect(later?.prior).toEqual({ run: earlierRun, since: lastOfEarlier.upTo });
    expect(missedEntries({ ...sawAll, upTo: lastOfEarlier.upTo - 1 }, newRun(later))).toBe(true);
    // A reader that knew a run the new one did not take over (two restarts unseen) missed some too.
    expect(missedEntries({ run: "cccccccccccccccc", since: 0, upTo: 99 }, newRun(first))).toBe(true);
  });
});

describe("relay annotation and names", () => {
  it("round-trips a position and refuses a malformed one", () => {
    const position = { run: RUN, since: 3, upTo: 9 };
    const text = encodeRevocationBatches([{ at: 1, fingerprints: [fp(1)] }], position);
    expect(decodeRelayPosition(text)).toEqual(position);
    expect(decodeRevocationBatches(text)).toEqual([{ at: 1, fingerprints: [fp(1)] }]);
    expect(decodeRelayPosition(encodeRevocationBatches([]))).toBeUndefined();
    const restarted = { ...position, prior: { run: "fedcba9876543210", since: 4 } };
    expect(decodeRelayPosition(encodeRevocationBatches([], restarted))).toEqual(restarted);
    for (const junk of [
      undefined,
      "{",
      "null",
      JSON.stringify({ run: "NOT-HEX!", since: 0, upTo: 1 }),
      JSON.stringify({ run: RUN, since: -1, upTo: 1 }),
      JSON.stringify({ run: RUN, since: 5, upTo: 1 }),
      JSON.stringify({ run: RUN, since: 1.5, upTo: 3 }),
      JSON.stringify({ run: RUN, since: "0", upTo: 3 }),
      JSON.stringify({ run: RUN, since: 0, upTo: 3, prior: { run: "x", since: 0 } }),
      JSON.stringify({ run: RUN, since: 0, upTo: 3, prior: { run: RUN, since: -2 } }),
      JSON.stringify({ run: RUN, since: 0, upTo: 3, prior: null }),
    ]) {
      expect(decodeRelayPosition(junk)).toBeUndefined();
    }
  });

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
