// The gateway's coarse scope and audience checks, run on every request against the (possibly cached) token facts.
import { describe, expect, it } from "vitest";
import { isGatewayError, type GatewayError } from "../../src/errors/catalogue.ts";
import { authorizeAudience, authorizeScopes } from "../../src/gateway/authorize/authorize.ts";
import type { RequiredScopes } from "../../src/snapshot/snapshot.ts";

/** The GatewayError thrown by `run`, or undefined when it passed. */
function refusal(run: () => void): GatewayError | undefined {
  try {
    run();
    return undefined;
  } catch (error) {
    if (isGatewayError(error)) return error;
    throw error;
  }
}

// `read_invoice` is implied by `invoices_admin` (a ScopePolicy implication, compiled into satisfiedBy).
const readInvoice = { scope: "read_invoice", satisfiedBy: ["read_invoice", "invoices_admin"] };
const writeInvoice = { scope: "write_invoice", satisfiedBy: ["write_invoice"] };
const videoPlay = { scope: "video_play", satisfiedBy: ["video_play"] };

/** `count` unrelated scopes, so a token's list is long enough to be searched through a Set. */
function filler(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `other_${i}`);
}

describe("coarse scope check", () => {
  it("passes when nothing is required, whatever the token has", () => {
    expect(refusal(() => authorizeScopes({ allOf: [], anyOf: [] }, []))).toBeUndefined();
  });

  for (const [label, extra] of [
    ["a short scope list", filler(2)],
    ["a long scope list", filler(40)],
  ] as const) {
    describe(`with ${label}`, () => {
      const allOf: RequiredScopes = { allOf: [readInvoice, writeInvoice], anyOf: [] };
      const anyOf: RequiredScopes = { allOf: [], anyOf: [readInvoice, videoPlay] };

      it("allOf needs every scope, and names the first one missing", () => {
        expect(
          refusal(() => authorizeScopes(allOf, [...extra, "write_invoice", "read_invoice"])),
        ).toBeUndefined();
        const error = refusal(() => authorizeScopes(allOf, [...extra, "read_invoice"]));
        expect(error?.code).toBe("PG_ERR_INSUFFICIENT_SCOPE");
        expect(error?.status).toBe(403);
        expect(error?.extra).toEqual({ scope: "write_invoice" });
      });

      it("a scope that implies the required one satisfies it", () => {
        expect(
          refusal(() => authorizeScopes(allOf, [...extra, "invoices_admin", "write_invoice"])),
        ).toBeUndefined();
      });

      it("anyOf needs one of them, and names them all when none is there", () => {
        expect(refusal(() => authorizeScopes(anyOf, [...extra, "video_play"]))).toBeUndefined();
        expect(refusal(() => authorizeScopes(anyOf, ["invoices_admin", ...extra]))).toBeUndefined();
        const error = refusal(() => authorizeScopes(anyOf, [...extra, "write_invoice"]));
        expect(error?.code).toBe("PG_ERR_INSUFFICIENT_SCOPE");
        expect(error?.extra).toEqual({ scope: "read_invoice video_play" });
      });

      it("allOf and anyOf together must both hold", () => {
        const both: RequiredScopes = { allOf: [writeInvoice], anyOf: [readInvoice, videoPlay] };
        expect(
          refusal(() => authorizeScopes(both, [...extra, "write_invoice", "video_play"])),
        ).toBeUndefined();
        expect(refusal(() => authorizeScopes(both, [...extra, "write_invoice"]))?.extra).toEqual({
          scope: "read_invoice video_play",
        });
        expect(refusal(() => authorizeScopes(both, [...extra, "video_play"]))?.extra).toEqual({
          scope: "write_invoice",
        });
      });

      it("matches whole scope names only", () => {
        const error = refusal(() => authorizeScopes(allOf, [...extra, "read_invoices", "write_invoic"]));
        expect(error?.extra).toEqual({ scope: "read_invoice" });
      });
    });
  }
});

describe("accepted audiences", () => {
  const accepted = ["urn:api:billing", "urn:api:payments"];

  it("passes any token, with or without aud, when the rule lists none", () => {
    expect(refusal(() => authorizeAudience(undefined, undefined))).toBeUndefined();
    expect(refusal(() => authorizeAudience(undefined, ["urn:api:other"]))).toBeUndefined();
  });

  it("passes a token naming any one of the accepted audiences, among others", () => {
    expect(refusal(() => authorizeAudience(accepted, ["urn:api:billing"]))).toBeUndefined();
    expect(refusal(() => authorizeAudience(accepted, ["urn:api:other", "urn:api:payments"]))).toBeUndefined();
  });

  it("refuses a token without aud, with an empty aud, or with other audiences only", () => {
    for (const audience of [undefined, [], ["urn:api:other"], ["urn:api:billingx", "URN:API:BILLING"]]) {
      const error = refusal(() => authorizeAudience(accepted, audience));
      expect(error?.code, JSON.stringify(audience)).toBe("PG_ERR_TOKEN_AUDIENCE");
      expect(error?.status).toBe(401);
    }
  });

  it("says in its reason which audiences the token had, a few at most", () => {
    expect(refusal(() => authorizeAudience(accepted, undefined))?.reason).toBe(
      "the token has no audience; accepted: urn:api:billing urn:api:payments",
    );
    const many = Array.from({ length: 6 }, (_, i) => `a${i}`);
    expect(refusal(() => authorizeAudience(accepted, many))?.reason).toBe(
      "token audience a0 a1 a2 a3 (+2 more); accepted: urn:api:billing urn:api:payments",
    );
  });
});
