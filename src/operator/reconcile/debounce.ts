// A debouncer with a maximum wait: a burst of triggers runs the task once, `delayMs` after the last trigger but
// never later than `maxWaitMs` after the first, so a steady trickle of changes still gets compiled. Runs never
// overlap: a trigger during a run schedules one more run after it.
import type { Clock } from "../../tokens/clock.ts";
import type { TimerHandle, Timers } from "../kube/timers.ts";

export interface Debouncer {
  /** Asks for a run. */
  trigger(): void;
  /** Runs now if a run is pending (or running: waits for it and any follow-up). */
  flush(): Promise<void>;
  /** Cancels pending runs; waits for a running one. */
  close(): Promise<void>;
}

export interface DebouncerOptions {
  readonly delayMs: number;
  readonly maxWaitMs: number;
  readonly run: () => void | Promise<void>;
  /** Called when `run` throws or rejects. */
  readonly onError?: (error: unknown) => void;
  readonly clock: Clock;
  readonly timers: Timers;
}

export function createDebouncer(options: DebouncerOptions): Debouncer {
  const { delayMs, clock, timers } = options;
  const maxWaitMs = Math.max(delayMs, options.maxWaitMs);
  let timer: TimerHandle | undefined;
  let firstTriggerMs: number | undefined;
  let running: Promise<void> | undefined;
  let pendingAfterRun = false;
  let closed = false;

  const schedule = (): void => {
    if (closed) return;
    const nowMs = clock.now();
    firstTriggerMs ??= nowMs;
    const dueMs = Math.min(nowMs + delayMs, firstTriggerMs + maxWaitMs);
    timers.clearTimeout(timer);
    timer = timers.setTimeout(fire, dueMs - nowMs);
  };

  const fire = (): void => {
    timer = undefined;
    if (closed) return;
    if (running !== undefined) {
      pendingAfterRun = true;
      return;
    }
    firstTriggerMs = undefined;
    running = (async () => {
      try {
        await options.run();
      } catch (error) {
        options.onError?.(error);
      }
    })().finally(() => {
      running = undefined;
      if (pendingAfterRun) {
        pendingAfterRun = false;
        schedule();
      }
    });
  };

  return {
    trigger() {
      if (running !== undefined && timer === undefined) {
        pendingAfterRun = true;
        return;
      }
      schedule();
    },
    async flush() {
      while (timer !== undefined || running !== undefined || pendingAfterRun) {
        if (running !== undefined) {
          await running;
          continue;
        }
        if (pendingAfterRun) {
          pendingAfterRun = false;
          timers.clearTimeout(timer);
          timer = undefined;
          fire();
          continue;
        }
        timers.clearTimeout(timer);
        fire();
      }
    },
    async close() {
      closed = true;
      timers.clearTimeout(timer);
      timer = undefined;
      pendingAfterRun = false;
      await running;
    },
  };
}
