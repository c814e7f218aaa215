// Artificial latency for the demo AS (timeout tests): holds each request until its delay has passed or the gate opens.
/** Longest delay a Node timer can express; anything longer holds the request until the delay changes. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Waiter {
  readonly arrivedAtMs: number;
  readonly settle: (proceed: boolean) => void;
  timer?: NodeJS.Timeout;
}

/**
 * Every request waits until `arrival + delayMs`. Changing the delay re-evaluates the requests already waiting,
 * so `setDelayMs(Infinity)` holds them indefinitely and `setDelayMs(0)` releases them at once.
 */
export class RequestGate {
  #delayMs = 0;
  #closed = false;
  readonly #waiters = new Set<Waiter>();
  readonly #nowMs: () => number;

  constructor(nowMs: () => number = Date.now) {
    this.#nowMs = nowMs;
  }

  setDelayMs(ms: number): void {
    if (Number.isNaN(ms) || ms < 0)
      throw new RangeError("delay must be a non-negative number of milliseconds");
    this.#delayMs = ms;
    for (const waiter of this.#waiters) this.#schedule(waiter);
  }

  /** Resolves true when the request may proceed, false when the gate closed while it waited. */
  pass(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    if (this.#delayMs === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        arrivedAtMs: this.#nowMs(),
        settle: (proceed) => {
          clearTimeout(waiter.timer);
          this.#waiters.delete(waiter);
          resolve(proceed);
        },
      };
      this.#waiters.add(waiter);
      this.#schedule(waiter);
    });
  }

  /** Turns away every waiting and future request (server shutdown). */
  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiters) waiter.settle(false);
  }

  #schedule(waiter: Waiter): void {
    clearTimeout(waiter.timer);
    const remainingMs = waiter.arrivedAtMs + this.#delayMs - this.#nowMs();
    if (remainingMs <= 0) {
      waiter.settle(true);
    } else if (remainingMs <= MAX_TIMER_MS) {
      waiter.timer = setTimeout(() => {
        waiter.settle(true);
      }, remainingMs);
    }
  }
}
