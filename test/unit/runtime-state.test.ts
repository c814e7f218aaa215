// The serving state's backend picker: smooth weighted round robin, one number of state per backend whatever the
// weights, and each route its own rotation even when two routes share an id.
import { describe, expect, it } from "vitest";
import { buildRuntimeState } from "../../src/gateway/runtime/runtime-state.ts";
import type { CompiledRoute, Snapshot } from "../../src/snapshot/snapshot.ts";
import { compiledRoute } from "../helpers/compiled.ts";

const route = (id: string, backends: CompiledRoute["backends"]): CompiledRoute => ({
  ...compiledRoute("none", { authServer: undefined }),
  id,
  backends,
});
const snapshotOf = (...routes: CompiledRoute[]): Snapshot => ({
  revision: "0123456789abcdef",
  authServers: [],
  routes,
});

describe("pickOrigin", () => {
  it("interleaves by weight (5:1:1 → A A B A C A A) and shares exactly by weight over a cycle", () => {
    const r = route("ns/r#0", [
      { origin: "http://a", weight: 5 },
      { origin: "http://b", weight: 1 },
      { origin: "http://c", weight: 1 },
    ]);
    const state = buildRuntimeState(snapshotOf(r));
    const picks = Array.from({ length: 7 }, () => state.pickOrigin(r).slice(7));
    expect(picks.join(" ")).toBe("a a b a c a a");
    const counts = new Map<string, number>();
    for (let i = 0; i < 700; i++) {
      const origin = state.pickOrigin(r);
      counts.set(origin, (counts.get(origin) ?? 0) + 1);
    }
    expect(Object.fromEntries(counts)).toEqual({ "http://a": 500, "http://b": 100, "http://c": 100 });
  });

  it("holds one number per backend for the largest weights a route may have (16 backends of 1,000,000)", () => {
    const backends = Array.from({ length: 16 }, (_, i) => ({
      origin: `http://b${i}`,
      weight: 1_000_000 - i,
    }));
    const r = route("ns/heavy#0", backends);
    const heapBefore = process.memoryUsage().heapUsed;
    const states = Array.from({ length: 50 }, () => buildRuntimeState(snapshotOf(r)));
    // An array of one slot per unit of weight would be 16 million entries per state.
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
    const seen = new Set(Array.from({ length: 16 }, () => states[0]!.pickOrigin(r)));
    expect(seen.size).toBe(16);
  });

  it("gives each route its own backends, also when a snapshot holds two routes with one id", () => {
    const first = route("ns/same#0", [{ origin: "http://first", weight: 1 }]);
    const second = route("ns/same#0", [{ origin: "http://second", weight: 1 }]);
    const state = buildRuntimeState(snapshotOf(first, second));
    expect(state.pickOrigin(first)).toBe("http://first");
    expect(state.pickOrigin(second)).toBe("http://second");
  });
});
