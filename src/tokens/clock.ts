// Time as a dependency: token expiry, cache TTLs and backoff read this clock so tests can move time without sleeping.

/** A source of wall-clock time. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

/** The real clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** A clock that moves only when told to: for tests and simulations. */
export interface ManualClock extends Clock {
  /** Moves time forward by `ms` milliseconds. */
  advance(ms: number): void;
  /** Jumps to an absolute time (epoch milliseconds). */
  set(epochMs: number): void;
}

/** Creates a {@link ManualClock} starting at `startMs` (epoch milliseconds). */
export function createManualClock(startMs: number = Date.UTC(2030, 0, 1)): ManualClock {
  let nowMs = startMs;
  return {
    now: () => nowMs,
    advance(ms) {
      nowMs += ms;
    },
    set(epochMs) {
      nowMs = epochMs;
    },
  };
}
