// Token facts: scope parsing across the formats servers use, claims → facts, time checks, scope narrowing.
import { describe, expect, it } from "vitest";
import {
  checkFactsTimes,
  factsFromClaims,
  intersectScopes,
  introspectionResponseSchema,
  parseScopes,
} from "../../src/tokens/facts.ts";

describe("parseScopes", () => {
  it("splits an RFC 7662 space-separated scope string, ignoring repeated spaces and duplicates", () => {
    expect(parseScopes({ scope: "read_invoice  write_invoice read_invoice " })).toEqual([
      "read_invoice",
      "write_invoice",
    ]);
  });

  it("accepts a list in scope, and scp as a string or a list", () => {
    expect(parseScopes({ scope: ["a", "b", "a"] })).toEqual(["a", "b"]);
    expect(parseScopes({ scp: "a b" })).toEqual(["a", "b"]);
    expect(parseScopes({ scp: ["a", 7, "b"] })).toEqual(["a", "b"]);
  });

  it("prefers scope over scp and yields nothing when neither is there", () => {
    expect(parseScopes({ scope: "a", scp: "b" })).toEqual(["a"]);
    expect(parseScopes({})).toEqual([]);
    expect(parseScopes({ scope: "" })).toEqual([]);
    expect(parseScopes({ scope: 42 })).toEqual([]);
  });
});

describe("factsFromClaims", () => {
  it("maps RFC 7662 members to facts and keeps every claim", () => {
    const response = introspectionResponseSchema.parse({
      active: true,
      scope: "read_invoice",
      client_id: "demo-client",
      sub: "alice",
      exp: 2_000_000_000,
      iat: 1_999_999_000,
      iss: "https://as.example",
      aud: "urn:api",
      tenant: "acme",
    });
    const facts = factsFromClaims(response, "the.jwt.here");
    expect(facts).toMatchObject({
      active: true,
      sub: "alice",
      clientId: "demo-client",
      scopes: ["read_invoice"],
      expiresAt: 2_000_000_000,
      issuedAt: 1_999_999_000,
      issuer: "https://as.example",
      audience: ["urn:api"],
      upstreamAuthorization: "Bearer the.jwt.here",
    });
    expect(facts).not.toHaveProperty("upstreamJwt");
    expect(facts.claims["tenant"]).toBe("acme");
    expect(Object.isFrozen(facts.claims)).toBe(true);
  });

  it("rejects responses whose registered claims have the wrong types", () => {
    expect(introspectionResponseSchema.safeParse({ active: "true" }).success).toBe(false);
    expect(introspectionResponseSchema.safeParse({ active: true, exp: "soon" }).success).toBe(false);
    expect(introspectionResponseSchema.safeParse({ active: true, sub: 1 }).success).toBe(false);
  });
});

describe("checkFactsTimes", () => {
  const base = factsFromClaims({ exp: 1000, nbf: 900 });

  it("turns an expired response into an inactive one", () => {
    expect(checkFactsTimes(base, 1_000_000, 0)).toEqual({ active: false, reason: "expired" });
    expect(checkFactsTimes(base, 999_999, 0).active).toBe(true);
  });

  it("honours nbf with the allowed skew", () => {
    // When it becomes valid goes with the refusal, so a negative cache entry does not outlive it.
    expect(checkFactsTimes(base, 850_000, 0)).toEqual({
      active: false,
      reason: "not yet valid",
      validFromMs: 900_000,
    });
    expect(checkFactsTimes(base, 800_000, 30)).toMatchObject({ validFromMs: 870_000 });
    expect(checkFactsTimes(base, 850_000, 60).active).toBe(true);
  });
});

describe("intersectScopes", () => {
  it("keeps the route's order and drops what the token lacks", () => {
    expect(intersectScopes(["c", "a", "x"], ["a", "b", "c"])).toEqual(["a", "c"]);
    expect(intersectScopes(["x"], ["a"])).toEqual([]);
  });
});
