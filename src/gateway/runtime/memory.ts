// Handing a replaced large snapshot's memory back promptly.
//
// A snapshot of 10,000 routes is ~12 MiB of objects once parsed, and receiving one allocates about as much again
// in transient strings and buffers. V8 collects the old generation only when it nears its current limit, so after
// a few large swaps the heap (and the process RSS) holds several generations of garbage. One full collection
// shortly after a large swap returns it. It costs one pause of a few tens of milliseconds per large swap, which
// is why small snapshots (the common case, and every file-mode edit) do not trigger it.
//
// `gc` exists when Node runs with --expose-gc, which bin/phantomgate.js adds for the gateway; without it this is a
// no-op and V8 collects on its own schedule.

/** Snapshots with at least this many routes trigger a collection after they are swapped in. */
export const LARGE_SNAPSHOT_ROUTES = 1_000;

/** Delay after the swap, so the stream handling and the last-known-good write have let go of their copies. */
export const COLLECT_DELAY_MS = 1_000;

export interface Collector {
  /** Call after a swap; collects once, COLLECT_DELAY_MS later, however many large swaps came in between. */
  afterSwap(routes: number): void;
  close(): void;
}

export function createCollector(
  gc: (() => void) | undefined = (globalThis as { gc?: () => void }).gc,
  delayMs = COLLECT_DELAY_MS,
): Collector {
  let timer: NodeJS.Timeout | undefined;
  return {
    afterSwap(routes) {
      if (gc === undefined || routes < LARGE_SNAPSHOT_ROUTES || timer !== undefined) return;
      timer = setTimeout(() => {
        timer = undefined;
        gc();
      }, delayMs);
      timer.unref();
    },
    close() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
