// The in-memory store of watched objects: what compile reads (slimmed) plus each custom resource's last seen
// status, keyed by kind/namespace/name. Listeners hear whether compile input or only a status changed, so a
// status write of our own never triggers a recompile.
import type { SourceObject } from "../../compile/compile.ts";
import { canonicalJson } from "../../compile/compile.ts";

export type WatchedKind = "ApiRoute" | "ScopePolicy" | "AuthServer" | "Secret";

/** One stored object. */
export interface StoredObject {
  readonly kind: WatchedKind;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string | undefined;
  readonly generation: number | undefined;
  readonly resourceVersion: string | undefined;
  /** What compile reads: apiVersion, kind, slim metadata and spec (or a Secret's referenced data). */
  readonly object: Readonly<Record<string, unknown>>;
  /** `.status` as last seen; undefined for Secrets. */
  readonly status: unknown;
}

/** `spec`: compile input changed (an object came, went or changed); `status`: only a status changed. */
export type StoreChange = "spec" | "status";

export type StoreListener = (change: StoreChange, kind: WatchedKind) => void;

interface Entry {
  readonly stored: StoredObject;
  /** Canonical JSON of `object`, to tell real changes from resourceVersion-only ones. */
  readonly objectJson: string;
  readonly statusJson: string;
}

/** Identity of an object in the store. */
export function objectKey(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

export class ObjectStore {
  readonly #entries = new Map<string, Entry>();
  readonly #listeners = new Set<StoreListener>();
  #specVersion = 0;

  /** Grows by one on every change of compile input. */
  get specVersion(): number {
    return this.#specVersion;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  onChange(listener: StoreListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get(kind: WatchedKind, namespace: string, name: string): StoredObject | undefined {
    return this.#entries.get(objectKey(kind, namespace, name))?.stored;
  }

  /** Objects of one kind (all kinds when absent), in no particular order. */
  list(kind?: WatchedKind): StoredObject[] {
    const result: StoredObject[] = [];
    for (const { stored } of this.#entries.values())
      if (kind === undefined || stored.kind === kind) result.push(stored);
    return result;
  }

  /** Adds or replaces one object. */
  upsert(stored: StoredObject): void {
    const change = this.#put(stored);
    if (change !== undefined) this.#notify(change, stored.kind);
  }

  /** Removes one object, if present. */
  remove(kind: WatchedKind, namespace: string, name: string): void {
    if (this.#entries.delete(objectKey(kind, namespace, name))) {
      this.#specVersion += 1;
      this.#notify("spec", kind);
    }
  }

  /**
   * Makes `objects` the complete set of `kind` within `namespace` (all namespaces when undefined): what a list
   * returned. Objects not in it are removed. One notification at most.
   */
  replace(kind: WatchedKind, namespace: string | undefined, objects: readonly StoredObject[]): void {
    let change: StoreChange | undefined;
    const keep = new Set<string>();
    for (const stored of objects) {
      keep.add(objectKey(stored.kind, stored.namespace, stored.name));
      const putChange = this.#put(stored);
      if (putChange === "spec" || (putChange === "status" && change === undefined)) change = putChange;
    }
    for (const [key, { stored }] of this.#entries) {
      if (stored.kind !== kind || (namespace !== undefined && stored.namespace !== namespace)) continue;
      if (keep.has(key)) continue;
      this.#entries.delete(key);
      this.#specVersion += 1;
      change = "spec";
    }
    if (change !== undefined) this.#notify(change, kind);
  }

  /** Every object as compile input, in key order (compile's result does not depend on it, logs do). */
  sourceObjects(): SourceObject[] {
    return [...this.#entries.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, { stored }]) => ({ object: stored.object }));
  }

  /** Tells listeners that compile input may have changed although no object did (e.g. the store settled). */
  touch(kind: WatchedKind): void {
    this.#notify("spec", kind);
  }

  #put(stored: StoredObject): StoreChange | undefined {
    const key = objectKey(stored.kind, stored.namespace, stored.name);
    const previous = this.#entries.get(key);
    const objectJson = canonicalJson(stored.object);
    const statusJson = stored.status === undefined ? "" : canonicalJson(stored.status);
    this.#entries.set(key, { stored, objectJson, statusJson });
    if (previous === undefined || previous.objectJson !== objectJson) {
      this.#specVersion += 1;
      return "spec";
    }
    return previous.statusJson === statusJson ? undefined : "status";
  }

  #notify(change: StoreChange, kind: WatchedKind): void {
    for (const listener of this.#listeners) listener(change, kind);
  }
}
