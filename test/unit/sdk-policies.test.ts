// SDK fine-grained policies: ownership and custom rules over identity and resource, combinators, enforcement as
// 403 with the policy's reason, and filtering lists. Identities come from a real verifier over a local key.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import {
  allOf,
  anyOf,
  createInternalJwtVerifier,
  createManualClock,
  createScopeChecker,
  definePolicy,
  enforce,
  filterAllowed,
  ownedBy,
  problemResponse,
  scopePolicy,
  SdkError,
  type Identity,
} from "../../src/sdk/index.ts";

interface Invoice {
  readonly id: string;
  readonly owner: string;
  readonly tenant: string;
}

const invoices: Invoice[] = [
  { id: "inv-1", owner: "alice", tenant: "t1" },
  { id: "inv-2", owner: "bob", tenant: "t1" },
  { id: "inv-3", owner: "alice", tenant: "t2" },
];
const ownsInvoice = ownedBy<Invoice>((invoice) => invoice.owner, {
  name: "owns-invoice",
  reason: "this invoice belongs to another customer",
});
const sameTenant = definePolicy<Invoice>({
  name: "same-tenant",
  reason: (_identity, invoice) => `invoice ${invoice.id} is in another tenant`,
  allow: (identity, invoice) => identity.claims["tenant"] === invoice.tenant,
});
const scopes = createScopeChecker({
  domain: "billing",
  scopes: [{ name: "read_invoice" }, { name: "audit_invoice", implies: ["read_invoice"] }],
});

let alice: Identity;
let auditor: Identity;

beforeAll(async () => {
  const clock = createManualClock(Date.now());
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" };
  const verifier = createInternalJwtVerifier({
    issuer: "https://as.example",
    audience: "urn:billing",
    jwks: { keys: [jwk] },
    algorithms: ["ES256"],
    clock,
  });
  const sign = (sub: string, claims: Record<string, unknown>) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "k1", typ: "at+jwt" })
      .setIssuer("https://as.example")
      .setAudience("urn:billing")
      .setSubject(sub)
      .setExpirationTime(Math.floor(clock.now() / 1000) + 300)
      .sign(privateKey);
  alice = await verifier.verify(await sign("alice", { scope: "read_invoice", tenant: "t1" }));
  auditor = await verifier.verify(await sign("carol", { scope: "audit_invoice", tenant: "t1" }));
});

describe("policies", () => {
  it("ownership allows the owner and denies everyone else with the policy's reason", () => {
    expect(ownsInvoice.decide(alice, invoices[0]!)).toEqual({ allowed: true });
    expect(ownsInvoice.decide(alice, invoices[1]!)).toEqual({
      allowed: false,
      policy: "owns-invoice",
      reason: "this invoice belongs to another customer",
    });
  });

  it("ownership can compare another claim", () => {
    const byClient = ownedBy<{ client: string }>((r) => r.client, { claim: "tenant" });
    expect(byClient.decide(alice, { client: "t1" }).allowed).toBe(true);
    expect(byClient.decide(alice, { client: "t2" }).allowed).toBe(false);
    expect(ownedBy<{ owner?: string }>((r) => r.owner).decide(alice, {}).allowed).toBe(false);
    // A token without the claim never owns a resource without an owner.
    const byRegion = ownedBy<{ region: string }>((r) => r.region, { claim: "region" });
    expect(byRegion.decide(alice, { region: "" }).allowed).toBe(false);
    expect(ownedBy<{ owner: string }>((r) => r.owner).decide(alice, { owner: "" }).allowed).toBe(false);
  });

  it("allOf and anyOf of no policy are configuration errors, not an open door", () => {
    expect(() => allOf<Invoice>()).toThrow(expect.objectContaining({ code: "PG_SDK_CONFIG_INVALID" }));
    expect(() => anyOf<Invoice>()).toThrow(expect.objectContaining({ code: "PG_SDK_CONFIG_INVALID" }));
  });

  it("allOf takes the first denial, anyOf allows on any and names every reason when none does", () => {
    expect(allOf(ownsInvoice, sameTenant).decide(alice, invoices[2]!)).toMatchObject({
      allowed: false,
      policy: "same-tenant",
      reason: "invoice inv-3 is in another tenant",
    });
    const ownerOrAuditor = anyOf<Invoice>(ownsInvoice, scopePolicy(scopes, "audit_invoice", "auditor"));
    expect(ownerOrAuditor.decide(auditor, invoices[1]!).allowed).toBe(true);
    expect(ownerOrAuditor.decide(alice, invoices[1]!)).toMatchObject({
      allowed: false,
      reason: "this invoice belongs to another customer; or requires scope audit_invoice",
    });
  });

  it("enforce throws 403 PG_SDK_FORBIDDEN whose problem body carries the reason and the policy", () => {
    expect(() => enforce(alice, ownsInvoice, invoices[0]!)).not.toThrow();
    let caught: unknown;
    try {
      enforce(alice, ownsInvoice, invoices[1]!);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SdkError);
    const problem = problemResponse(caught as SdkError);
    expect(problem.status).toBe(403);
    expect(problem.headers["www-authenticate"]).toBeUndefined();
    expect(JSON.parse(problem.body)).toMatchObject({
      code: "PG_SDK_FORBIDDEN",
      detail: "this invoice belongs to another customer",
      policy: "owns-invoice",
    });
  });

  it("filterAllowed keeps only what the policy allows, in order", () => {
    expect(filterAllowed(alice, ownsInvoice, invoices).map((i) => i.id)).toEqual(["inv-1", "inv-3"]);
    expect(filterAllowed(alice, allOf(ownsInvoice, sameTenant), invoices).map((i) => i.id)).toEqual([
      "inv-1",
    ]);
  });

  it("a scope policy with an unknown scope fails when it is defined", () => {
    expect(() => scopePolicy(scopes, "audit_invoices")).toThrow(/not defined by any scope policy/);
  });
});
