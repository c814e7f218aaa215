// Time and timers as dependencies of the operator's loops (backoff, watchdog, debounce, lease renewal), so
// unit tests drive them with a manual clock instead of sleeping.
import type { Clock } from "../../tokens/clock.ts";

/** An opaque handle of a scheduled callback. */
export type TimerHandle = object;

/** Schedules callbacks; the real one is Node's timers. */
export interface Timers {
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
}

/** Node's timers, unreferenced so a pending backoff or watchdog never keeps a process alive on its own. */
export const systemTimers: Timers = {
  setTimeout(callback, delayMs) {
    const handle = setTimeout(callback, Math.max(0, delayMs));
    handle.unref();
    return handle;
  },
  clearTimeout(handle) {
    if (handle !== undefined) clearTimeout(handle as NodeJS.Timeout);
  },
};

/** A clock and timers that move only when told to: tests advance time and due callbacks run in order. */
export interface ManualTimers extends Timers, Clock {
  /** Moves time forward by `ms`, running every callback that falls due, in due order. */
  advance(ms: number): void;
  /** Callbacks scheduled and not yet run or cleared. */
  pending(): number;
}

/** Creates {@link ManualTimers} starting at `startMs` (epoch milliseconds). */
export function createManualTimers(startMs: number = Date.UTC(2030, 0, 1)): ManualTimers {
  let nowMs = startMs;
  let sequence = 0;
  const scheduled = new Map<object, { dueMs: number; order: number; callback: () => void }>();
  return {
    now: () => nowMs,
    setTimeout(callback, delayMs) {
      const handle = {};
      scheduled.set(handle, { dueMs: nowMs + Math.max(0, delayMs), order: sequence++, callback });
      return handle;
    },
    clearTimeout(handle) {
      if (handle !== undefined) scheduled.delete(handle);
    },
    advance(ms) {
      const targetMs = nowMs + ms;
      for (;;) {
        let next: [object, { dueMs: number; order: number; callback: () => void }] | undefined;
        for (const entry of scheduled) {
          if (entry[1].dueMs > targetMs) continue;
          if (
            next === undefined ||
            entry[1].dueMs < next[1].dueMs ||
            (entry[1].dueMs === next[1].dueMs && entry[1].order < next[1].order)
          ) {
            next = entry;
          }
        }
        if (next === undefined) break;
        scheduled.delete(next[0]);
        nowMs = Math.max(nowMs, next[1].dueMs);
        next[1].callback();
      }
      nowMs = targetMs;
    },
    pending: () => scheduled.size,
  };
}

/** Resolves after `delayMs`, or at once when `signal` aborts (never rejects). */
export function sleep(timers: Timers, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      timers.clearTimeout(handle);
      resolve();
    };
    const handle = timers.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
