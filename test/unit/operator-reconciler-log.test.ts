// The "snapshot compiled" log line names the rejected objects, at most maxLoggedRejected of them.
import { describe, expect, it } from "vitest";
import type { ObjectResult } from "../../src/compile/compile.ts";
import { describeRejected, maxLoggedRejected } from "../../src/operator/reconcile/reconciler.ts";

const rejected = (i: number): ObjectResult => ({
  kind: "ApiRoute",
  namespace: "shop",
  name: `route-${i}`,
  accepted: false,
  reason: "UnknownScope",
  messages: ["spec.rules[0].requiredScopes.allOf[0]: scope 'x' is not defined"],
  routeIds: [],
});

describe("describeRejected", () => {
  it("names kind, namespace, name and reason", () => {
    expect(describeRejected([rejected(1)])).toEqual(["ApiRoute shop/route-1 (UnknownScope)"]);
  });

  it("names the first ones and counts the rest", () => {
    const described = describeRejected(Array.from({ length: maxLoggedRejected + 5 }, (_, i) => rejected(i)));
    expect(described).toHaveLength(maxLoggedRejected + 1);
    expect(described[maxLoggedRejected - 1]).toBe(
      `ApiRoute shop/route-${maxLoggedRejected - 1} (UnknownScope)`,
    );
    expect(described[maxLoggedRejected]).toBe("… and 5 more");
  });
});
