// What the demo APIs share: their security domains (billing: invoices API and ledger helper; payments: the payments
// API), the billing ScopePolicy (the same as examples/scope-policies.yaml, a test keeps them equal) and how a demo
// API shows which token reached it.
import type { Identity, SecurityDomain } from "../sdk/index.ts";
import { BILLING_AUDIENCE, PAYMENTS_AUDIENCE } from "./as/clients.ts";

/** The demo's security domains. */
export type DemoDomain = "billing" | "payments";

/**
 * Audiences per domain. The gateway forwards phantom-mode JWTs that the demo AS addresses to itself (the opaque
 * token named no audience), so in the demo the issuer also counts as a billing audience; a real AS would address
 * them to the billing domain.
 */
export function demoSecurityDomains(issuer: string): Record<DemoDomain, SecurityDomain> {
  return {
    billing: { audiences: [BILLING_AUDIENCE, issuer] },
    payments: { audiences: [PAYMENTS_AUDIENCE] },
  };
}

/** The billing ScopePolicy's spec, as in examples/scope-policies.yaml. */
export const billingScopePolicy = {
  domain: "billing",
  scopes: [
    { name: "read_invoice", description: "Read invoices." },
    {
      name: "write_invoice",
      description: "Create, change and delete invoices; includes reading them.",
      implies: ["read_invoice"],
    },
  ],
} as const;

/** What a demo API tells its caller about the token it received (fingerprint, never the token). */
export interface TokenSeen {
  readonly sub: string;
  readonly aud: readonly string[];
  readonly scopes: readonly string[];
  /** Who exchanged the token on the caller's behalf, innermost last. */
  readonly actors: readonly string[];
  readonly fingerprint: string;
}

export function describeToken(identity: Identity): TokenSeen {
  const actors: string[] = [];
  for (let actor = identity.actor; actor !== undefined; actor = actor.actor) actors.push(actor.sub);
  return {
    sub: identity.sub,
    aud: identity.audience,
    scopes: identity.scopes,
    actors,
    fingerprint: identity.tokenFingerprint,
  };
}
