// Backoff, stall watchdog and debounce of the operator's loops, on manual time.
import { describe, expect, it } from "vitest";
import { createBackoff } from "../../src/operator/kube/backoff.ts";
import { createManualTimers } from "../../src/operator/kube/timers.ts";
import { startWatchdog } from "../../src/operator/kube/watchdog.ts";
import { createDebouncer } from "../../src/operator/reconcile/debounce.ts";

describe("backoff", () => {
  it("doubles up to the cap, with the upper end of the jitter range when random() is ~1", () => {
    const backoff = createBackoff({ initialMs: 100, maxMs: 1_000, jitter: 0.5 }, () => 0.999999);
    expect(Array.from({ length: 6 }, () => backoff.next())).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    expect(backoff.attempts).toBe(6);
  });

  it("draws each delay from [base·(1−jitter), base]", () => {
    const low = createBackoff({ initialMs: 1_000, maxMs: 60_000, jitter: 0.5 }, () => 0);
    expect([low.next(), low.next(), low.next()]).toEqual([500, 1_000, 2_000]);
    const none = createBackoff({ initialMs: 1_000, maxMs: 60_000, jitter: 0 }, () => 0);
    expect([none.next(), none.next()]).toEqual([1_000, 2_000]);
  });

  it("starts again after reset()", () => {
    const backoff = createBackoff({ initialMs: 10, maxMs: 1_000, jitter: 0 });
    backoff.next();
    backoff.next();
    backoff.reset();
    expect(backoff.attempts).toBe(0);
    expect(backoff.next()).toBe(10);
  });

  it("stays finite after very many attempts", () => {
    const backoff = createBackoff({ initialMs: 250, maxMs: 30_000, jitter: 0 });
    for (let i = 0; i < 5_000; i++) backoff.next();
    expect(backoff.next()).toBe(30_000);
  });
});

describe("stall watchdog", () => {
  it("fires once after the quiet period, measured from the last kick", () => {
    const timers = createManualTimers();
    const stalls: number[] = [];
    const watchdog = startWatchdog({
      timeoutMs: 1_000,
      clock: timers,
      timers,
      onStall: (quiet) => stalls.push(quiet),
    });
    timers.advance(900);
    watchdog.kick();
    timers.advance(900);
    expect(stalls).toEqual([]);
    timers.advance(100);
    expect(stalls).toEqual([1_000]);
    timers.advance(10_000);
    expect(stalls).toHaveLength(1);
    expect(timers.pending()).toBe(0);
  });

  it("never fires after stop()", () => {
    const timers = createManualTimers();
    let stalled = false;
    const watchdog = startWatchdog({
      timeoutMs: 500,
      clock: timers,
      timers,
      onStall: () => (stalled = true),
    });
    watchdog.stop();
    timers.advance(5_000);
    expect(stalled).toBe(false);
    expect(timers.pending()).toBe(0);
  });

  it("uses one timer however often it is kicked", () => {
    const timers = createManualTimers();
    const watchdog = startWatchdog({ timeoutMs: 1_000, clock: timers, timers, onStall: () => undefined });
    for (let i = 0; i < 100; i++) {
      timers.advance(5);
      watchdog.kick();
    }
    expect(timers.pending()).toBe(1);
    watchdog.stop();
  });
});

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe("debouncer", () => {
  it("runs a burst once, delayMs after the last trigger", async () => {
    const timers = createManualTimers();
    let runs = 0;
    const debouncer = createDebouncer({
      delayMs: 100,
      maxWaitMs: 1_000,
      clock: timers,
      timers,
      run: () => {
        runs++;
      },
    });
    for (let i = 0; i < 5; i++) {
      debouncer.trigger();
      timers.advance(50);
    }
    expect(runs).toBe(0);
    timers.advance(50);
    await settle();
    expect(runs).toBe(1);
    timers.advance(1_000);
    await settle();
    expect(runs).toBe(1);
  });

  it("runs at maxWaitMs while triggers keep coming", async () => {
    const timers = createManualTimers();
    const runAt: number[] = [];
    const start = timers.now();
    const debouncer = createDebouncer({
      delayMs: 100,
      maxWaitMs: 1_000,
      clock: timers,
      timers,
      run: () => void runAt.push(timers.now() - start),
    });
    for (let i = 0; i < 30; i++) {
      debouncer.trigger();
      timers.advance(60);
      await settle();
    }
    expect(runAt[0]).toBe(1_000);
    expect(runAt.length).toBeGreaterThanOrEqual(1);
    await debouncer.close();
  });

  it("never overlaps runs: a trigger during a run schedules exactly one more", async () => {
    const timers = createManualTimers();
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    let release: () => void = () => undefined;
    const debouncer = createDebouncer({
      delayMs: 10,
      maxWaitMs: 100,
      clock: timers,
      timers,
      run: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        runs++;
        await new Promise<void>((resolve) => (release = resolve));
        active--;
      },
    });
    debouncer.trigger();
    timers.advance(10);
    await settle();
    expect(runs).toBe(1);
    debouncer.trigger();
    debouncer.trigger();
    timers.advance(100);
    await settle();
    expect(runs).toBe(1);
    release();
    await settle();
    timers.advance(10);
    await settle();
    expect(runs).toBe(2);
    release();
    await settle();
    expect(maxActive).toBe(1);
    await debouncer.close();
  });

  it("flush() runs a pending run at once; errors go to onError", async () => {
    const timers = createManualTimers();
    const errors: unknown[] = [];
    const debouncer = createDebouncer({
      delayMs: 10_000,
      maxWaitMs: 10_000,
      clock: timers,
      timers,
      run: () => {
        throw new Error("boom");
      },
      onError: (error) => errors.push(error),
    });
    debouncer.trigger();
    await debouncer.flush();
    expect(errors).toHaveLength(1);
    expect(timers.pending()).toBe(0);
  });
});
