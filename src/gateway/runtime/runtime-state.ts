// The serving state built from one snapshot: router and backend pickers. Swapped in as a whole with a single
// reference assignment, so every request sees exactly one revision from start to end.
import type { CompiledRoute, Snapshot } from "../../snapshot/snapshot.ts";
import { createRouter, type Router } from "../route/router.ts";

export interface RuntimeState {
  readonly snapshot: Snapshot;
  readonly router: Router;
  /** Picks the upstream origin for a route (weighted round robin). */
  pickOrigin(route: CompiledRoute): string;
}

/** Builds the serving state for a snapshot. Pure apart from the round-robin counters it owns. */
export function buildRuntimeState(snapshot: Snapshot): RuntimeState {
  const rotations = new Map<string, { readonly origins: readonly string[]; next: number }>();
  for (const route of snapshot.routes) {
    const origins: string[] = [];
    for (const backend of route.backends)
      for (let i = 0; i < backend.weight; i++) origins.push(backend.origin);
    rotations.set(route.id, { origins, next: 0 });
  }
  return {
    snapshot,
    router: createRouter(snapshot.routes),
    pickOrigin(route) {
      const rotation = rotations.get(route.id);
      const first = route.backends[0];
      if (rotation === undefined || first === undefined) throw new Error(`route ${route.id} has no backend`);
      const origin = rotation.origins[rotation.next % rotation.origins.length] ?? first.origin;
      rotation.next = (rotation.next + 1) % rotation.origins.length;
      return origin;
    },
  };
}

/** Holds the current serving state; `swap` is atomic from the point of view of request handlers. */
export class RuntimeHolder {
  #current: RuntimeState | undefined;

  get current(): RuntimeState | undefined {
    return this.#current;
  }

  swap(snapshot: Snapshot): RuntimeState {
    const next = buildRuntimeState(snapshot);
    this.#current = next;
    return next;
  }
}
