// The post-swap collection: only after large snapshots, once per burst of swaps, cancelled on close.
import { afterEach, describe, expect, it, vi } from "vitest";
import { createCollector, LARGE_SNAPSHOT_ROUTES } from "../../src/gateway/runtime/memory.ts";

afterEach(() => {
  vi.useRealTimers();
});

describe("createCollector", () => {
  it("collects once, after the delay, for a burst of large swaps", () => {
    vi.useFakeTimers();
    const gc = vi.fn();
    const collector = createCollector(gc, 1000);
    collector.afterSwap(LARGE_SNAPSHOT_ROUTES);
    vi.advanceTimersByTime(500);
    collector.afterSwap(LARGE_SNAPSHOT_ROUTES * 10);
    expect(gc).not.toHaveBeenCalled();
    vi.advanceTimersByTime(500);
    expect(gc).toHaveBeenCalledTimes(1);
    collector.afterSwap(LARGE_SNAPSHOT_ROUTES);
    vi.advanceTimersByTime(1000);
    expect(gc).toHaveBeenCalledTimes(2);
  });

  it("leaves small snapshots to V8", () => {
    vi.useFakeTimers();
    const gc = vi.fn();
    const collector = createCollector(gc, 1000);
    collector.afterSwap(LARGE_SNAPSHOT_ROUTES - 1);
    vi.advanceTimersByTime(5000);
    expect(gc).not.toHaveBeenCalled();
  });

  it("does nothing without gc, and close cancels a pending collection", () => {
    vi.useFakeTimers();
    createCollector(undefined, 1000).afterSwap(LARGE_SNAPSHOT_ROUTES);
    const gc = vi.fn();
    const collector = createCollector(gc, 1000);
    collector.afterSwap(LARGE_SNAPSHOT_ROUTES);
    collector.close();
    vi.advanceTimersByTime(5000);
    expect(gc).not.toHaveBeenCalled();
  });
});
