// A stall watchdog: fires once when nothing was seen for `timeoutMs`. Cheap to kick on every watch line (it
// only records the time); one timer re-arms itself for the remaining quiet period.
import type { Clock } from "../../tokens/clock.ts";
import type { TimerHandle, Timers } from "./timers.ts";

export interface Watchdog {
  /** Something arrived: the quiet period starts again. */
  kick(): void;
  /** Stops watching; `onStall` will not run after this. */
  stop(): void;
}

/** Starts a watchdog that calls `onStall` once after `timeoutMs` without a `kick()`. */
export function startWatchdog(options: {
  readonly timeoutMs: number;
  readonly onStall: (quietMs: number) => void;
  readonly clock: Clock;
  readonly timers: Timers;
}): Watchdog {
  const { timeoutMs, onStall, clock, timers } = options;
  let lastMs = clock.now();
  let handle: TimerHandle | undefined;
  let stopped = false;
  const check = (): void => {
    handle = undefined;
    if (stopped) return;
    const quietMs = clock.now() - lastMs;
    if (quietMs >= timeoutMs) {
      stopped = true;
      onStall(quietMs);
      return;
    }
    handle = timers.setTimeout(check, timeoutMs - quietMs);
  };
  handle = timers.setTimeout(check, timeoutMs);
  return {
    kick() {
      lastMs = clock.now();
    },
    stop() {
      stopped = true;
      timers.clearTimeout(handle);
      handle = undefined;
    },
  };
}
