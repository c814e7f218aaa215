// In-memory storage for the demo AS, shared by every oidc-provider instance the server builds (key rotation swaps the provider, never the tokens).
import type { Adapter, AdapterPayload } from "oidc-provider";

interface Entry {
  readonly payload: AdapterPayload;
  /** Epoch milliseconds; Infinity when oidc-provider gave no lifetime. */
  readonly expiresAtMs: number;
}

/** Sweep expired entries once the map grows past this, so a long demo run does not grow without bound. */
const SWEEP_THRESHOLD = 10_000;

/**
 * One map for all models, keyed `Model:id`, plus the secondary indexes oidc-provider asks adapters for.
 * Unlike oidc-provider's bundled LRU adapter it never evicts a live token to make room: tests that mint many
 * tokens must not see one turn inactive for reasons the AS would not give.
 */
export class MemoryStore {
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The factory oidc-provider's `adapter` setting wants. */
  adapterFor(modelName: string): Adapter {
    return new MemoryAdapter(modelName, this);
  }

  /** Epoch seconds on the store's clock (oidc-provider's unit for `consumed`). */
  nowSeconds(): number {
    return Math.floor(this.#now() / 1000);
  }

  get(key: string): AdapterPayload | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAtMs <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  set(key: string, payload: AdapterPayload, expiresInSeconds: number | undefined): void {
    if (this.#entries.size >= SWEEP_THRESHOLD) this.#sweep();
    const expiresAtMs = expiresInSeconds === undefined ? Infinity : this.#now() + expiresInSeconds * 1000;
    this.#entries.set(key, { payload, expiresAtMs });
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  /** Keys of every live entry whose payload belongs to `grantId`. */
  keysOfGrant(grantId: string): string[] {
    const keys: string[] = [];
    for (const [key, entry] of this.#entries) {
      if (entry.payload.grantId === grantId) keys.push(key);
    }
    return keys;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAtMs <= now) this.#entries.delete(key);
    }
  }
}

class MemoryAdapter implements Adapter {
  readonly #model: string;
  readonly #store: MemoryStore;

  constructor(model: string, store: MemoryStore) {
    this.#model = model;
    this.#store = store;
  }

  #key(id: string): string {
    return `${this.#model}:${id}`;
  }

  upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    this.#store.set(this.#key(id), payload, expiresIn);
    if (payload.uid !== undefined) this.#store.set(`uid:${payload.uid}`, { id }, expiresIn);
    if (payload.userCode !== undefined) this.#store.set(`userCode:${payload.userCode}`, { id }, expiresIn);
    return Promise.resolve();
  }

  find(id: string): Promise<AdapterPayload | undefined> {
    return Promise.resolve(this.#store.get(this.#key(id)));
  }

  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.#findByIndex(`uid:${uid}`);
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#findByIndex(`userCode:${userCode}`);
  }

  consume(id: string): Promise<void> {
    const payload = this.#store.get(this.#key(id));
    if (payload !== undefined) payload.consumed = this.#store.nowSeconds();
    return Promise.resolve();
  }

  destroy(id: string): Promise<void> {
    this.#store.delete(this.#key(id));
    return Promise.resolve();
  }

  revokeByGrantId(grantId: string): Promise<void> {
    for (const key of this.#store.keysOfGrant(grantId)) this.#store.delete(key);
    return Promise.resolve();
  }

  #findByIndex(indexKey: string): Promise<AdapterPayload | undefined> {
    const id = this.#store.get(indexKey)?.["id"];
    return typeof id === "string" ? this.find(id) : Promise.resolve(undefined);
  }
}
