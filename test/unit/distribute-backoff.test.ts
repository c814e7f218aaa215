// Reconnect backoff of the control-plane source: capped exponential with full jitter.
import { describe, expect, it } from "vitest";
import { backoffDelayMs, defaultBackoff } from "../../src/gateway/sources/control-plane-source.ts";

const policy = { baseMs: 500, capMs: 10_000 };

describe("backoffDelayMs", () => {
  it("stays in [0, min(cap, base·2^attempt)) for the extremes of the random source", () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** attempt);
      expect(backoffDelayMs(attempt, policy, () => 0)).toBe(0);
      const high = backoffDelayMs(attempt, policy, () => 0.999_999_999);
      expect(high).toBeLessThan(ceiling);
      expect(high).toBeGreaterThanOrEqual(ceiling - 1);
      // Even a random source that returns 1 (Math.random never does) cannot reach the ceiling.
      expect(backoffDelayMs(attempt, policy, () => 1)).toBeLessThan(ceiling);
    }
  });

  it("doubles the ceiling per attempt until the cap", () => {
    const top = (attempt: number): number => backoffDelayMs(attempt, policy, () => 0.999_999_999) + 1;
    expect([0, 1, 2, 3, 4, 5, 6].map(top)).toEqual([500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    expect(top(1_000)).toBe(10_000);
    expect(top(-3)).toBe(500);
  });

  it("spreads real random delays over the whole window (full jitter)", () => {
    const samples = Array.from({ length: 2_000 }, () => backoffDelayMs(10, policy));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...samples)).toBeLessThan(policy.capMs);
    expect(samples.filter((s) => s < policy.capMs / 4).length).toBeGreaterThan(300);
    expect(samples.filter((s) => s > (policy.capMs * 3) / 4).length).toBeGreaterThan(300);
  });

  it("defaults to 0.5 s doubling up to a 10 s cap", () => {
    expect(defaultBackoff).toEqual({ baseMs: 500, capMs: 10_000 });
  });
});
