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

/**
 * Smooth weighted round robin (as nginx's upstream module): every pick adds each backend's weight to its running
 * score, takes the highest and lowers it by the total. Weights 5:1:1 give A A B A C A A, not A×5 then B then C,
 * and the state is one number per backend whatever the weights (a route may have 16 backends weighing up to
 * 1,000,000 each: never an array of that many slots).
 */
class WeightedRotation {
  readonly #origins: readonly string[];
  readonly #weights: readonly number[];
  readonly #scores: number[];
  readonly #total: number;
  constructor(route: CompiledRoute) {
    this.#origins = route.backends.map((backend) => backend.origin);
    this.#weights = route.backends.map((backend) => backend.weight);
    this.#scores = route.backends.map(() => 0);
    this.#total = this.#weights.reduce((sum, weight) => sum + weight, 0);
  }
  next(): string | undefined {
    if (this.#origins.length === 1) return this.#origins[0];
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i < this.#scores.length; i++) {
      const score = (this.#scores[i] ?? 0) + (this.#weights[i] ?? 0);
      this.#scores[i] = score;
      if (score > bestScore) {
        bestScore = score;
        best = i;
      }
    }
    if (best === -1) return undefined;
    this.#scores[best] = bestScore - this.#total;
    return this.#origins[best];
  }
}

/** Builds the serving state for a snapshot. Pure apart from the round-robin counters it owns. */
export function buildRuntimeState(snapshot: Snapshot): RuntimeState {
  // By route object, not id: the router hands back this snapshot's objects, and two routes can never share one.
  const rotations = new Map<CompiledRoute, WeightedRotation>();
  for (const route of snapshot.routes) rotations.set(route, new WeightedRotation(route));
  return {
    snapshot,
    router: createRouter(snapshot.routes),
    pickOrigin(route) {
      const origin = rotations.get(route)?.next() ?? route.backends[0]?.origin;
      if (origin === undefined) throw new Error(`route ${route.id} has no backend`);
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
    return this.install(buildRuntimeState(snapshot));
  }

  /** Serves a state built beforehand (so a build that fails changes nothing). */
  install(next: RuntimeState): RuntimeState {
    this.#current = next;
    return next;
  }
}
