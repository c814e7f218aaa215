// Requests in flight to each upstream origin, bounded like Envoy's circuit breakers: a slow or hung upstream
// holds one connection (and one file descriptor) per request waiting for it, so without a bound it could take
// every descriptor of the process. Past the bound, a request gets 503 at once instead of another connection.

/** One origin's count of requests in flight. */
export interface UpstreamSlot {
  n: number;
}

/** Origins come and go with snapshots; idle ones are forgotten when the map holds this many. */
const MAX_ORIGINS = 4096;

export class UpstreamLoad {
  readonly limit: number;
  readonly #slots = new Map<string, UpstreamSlot>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Takes a place for a request to `origin`; undefined when `limit` requests are in flight there already. */
  acquire(origin: string): UpstreamSlot | undefined {
    let slot = this.#slots.get(origin);
    if (slot === undefined) {
      if (this.#slots.size >= MAX_ORIGINS) {
        for (const [key, idle] of this.#slots) if (idle.n === 0) this.#slots.delete(key);
      }
      slot = { n: 0 };
      this.#slots.set(origin, slot);
    }
    if (slot.n >= this.limit) return undefined;
    slot.n += 1;
    return slot;
  }
}
