// Exponential backoff with jitter for every retry loop of the operator (watch restarts, lease retries, writes).

/** How delays grow. */
export interface BackoffPolicy {
  /** First delay. */
  readonly initialMs: number;
  /** Delays never exceed this. */
  readonly maxMs: number;
  /** Growth per attempt. Default 2. */
  readonly factor?: number;
  /**
   * Share of each delay that is randomised, 0..1: a delay is drawn from [base·(1−jitter), base], so replicas
   * that failed together do not retry together. Default 0.5.
   */
  readonly jitter?: number;
}

/** A backoff sequence; `reset()` after a success starts again from `initialMs`. */
export interface Backoff {
  /** The delay before the next attempt (and counts the attempt). */
  next(): number;
  reset(): void;
  /** Attempts since the last reset. */
  readonly attempts: number;
}

/** Creates a backoff sequence; `random` (0 ≤ x < 1) is injectable for tests. */
export function createBackoff(policy: BackoffPolicy, random: () => number = Math.random): Backoff {
  const factor = policy.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, policy.jitter ?? 0.5));
  let attempts = 0;
  return {
    next() {
      // Capped exponent: factor^attempts overflows to Infinity long before it matters, but stay finite.
      const base = Math.min(policy.maxMs, policy.initialMs * factor ** Math.min(attempts, 64));
      attempts += 1;
      return Math.round(base * (1 - jitter) + base * jitter * random());
    },
    reset() {
      attempts = 0;
    },
    get attempts() {
      return attempts;
    },
  };
}
