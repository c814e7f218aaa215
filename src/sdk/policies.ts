// Fine-grained authorization inside an API: named policies over the caller's identity (claims, scopes) and the
// resource at hand ("the caller's sub owns this invoice"), combinable, and enforced as 403 with a reason the caller
// can read. The gateway cannot make these decisions: it never sees the invoice.
import { SdkError } from "./errors.ts";
import type { Identity } from "./identity.ts";
import type { ScopeChecker, ScopeRequirement } from "./scopes.ts";

/** The outcome of a policy: allowed, or denied with the policy's name and a reason fit for the caller. */
export type Decision =
  { readonly allowed: true } | { readonly allowed: false; readonly policy: string; readonly reason: string };

/** A named rule over an identity and a resource of type `R`. */
export interface Policy<R = unknown> {
  readonly name: string;
  decide(identity: Identity, resource: R): Decision;
}

const ALLOWED: Decision = Object.freeze({ allowed: true });

/**
 * Defines a policy from a predicate. `reason` is shown to denied callers (problem+json `detail`), so write it
 * for them and keep secrets out of it.
 *
 * @example
 * ```ts
 * import { definePolicy } from "phantomgate/sdk";
 *
 * const sameTenant = definePolicy<{ tenant: string }>({
 *   name: "same-tenant",
 *   reason: "this resource belongs to another tenant",
 *   // Both sides present: a token without the claim must not match a resource without a tenant.
 *   allow: (identity, resource) =>
 *     typeof identity.claims["tenant"] === "string" && identity.claims["tenant"] === resource.tenant,
 * });
 * ```
 */
export function definePolicy<R>(definition: {
  readonly name: string;
  readonly reason: string | ((identity: Identity, resource: R) => string);
  readonly allow: (identity: Identity, resource: R) => boolean;
}): Policy<R> {
  const { name, reason, allow } = definition;
  return Object.freeze({
    name,
    decide(identity: Identity, resource: R): Decision {
      if (allow(identity, resource)) return ALLOWED;
      return {
        allowed: false,
        policy: name,
        reason: typeof reason === "string" ? reason : reason(identity, resource),
      };
    },
  });
}

/**
 * Ownership: allowed when a claim of the caller (default `sub`) equals the resource's owner.
 *
 * @example
 * ```ts
 * import { ownedBy, enforce } from "phantomgate/sdk";
 *
 * const ownsInvoice = ownedBy<Invoice>((invoice) => invoice.owner, {
 *   name: "owns-invoice",
 *   reason: "this invoice belongs to another customer",
 * });
 * enforce(request.identity, ownsInvoice, invoice); // 403 with that reason unless identity.sub === invoice.owner
 * ```
 */
export function ownedBy<R>(
  ownerOf: (resource: R) => string | undefined,
  options: { readonly name?: string; readonly reason?: string; readonly claim?: string } = {},
): Policy<R> {
  const claim = options.claim ?? "sub";
  return definePolicy<R>({
    name: options.name ?? "owner",
    reason: options.reason ?? "the resource belongs to someone else",
    allow(identity, resource) {
      const owner = ownerOf(resource);
      const caller = claim === "sub" ? identity.sub : identity.claims[claim];
      // An empty value is no owner: a resource without one, and a token without the claim, match nothing.
      return typeof owner === "string" && owner !== "" && typeof caller === "string" && caller === owner;
    },
  });
}

/**
 * A scope requirement as a policy, to combine with resource rules (e.g. "owner, or holds `admin_invoice`").
 *
 * @example
 * ```ts
 * const canRead = anyOf(ownsInvoice, scopePolicy(scopes, "audit_invoice"));
 * ```
 */
export function scopePolicy(checker: ScopeChecker, requirement: ScopeRequirement, name?: string): Policy {
  checker.validate(requirement);
  return Object.freeze({
    name: name ?? "scopes",
    decide(identity: Identity): Decision {
      const unmet = checker.missing(identity, requirement);
      return unmet === undefined
        ? ALLOWED
        : { allowed: false, policy: name ?? "scopes", reason: `requires scope ${unmet}` };
    },
  });
}

/**
 * Allowed when every policy allows; the first denial wins.
 *
 * @example
 * ```ts
 * const canEdit = allOf(ownsInvoice, sameTenant);
 * ```
 */
export function allOf<R>(...policies: readonly Policy<R>[]): Policy<R> {
  // Every one of no policies would allow anything (`allOf(...fromConfig)` with an empty list): refused.
  if (policies.length === 0) throw new SdkError("PG_SDK_CONFIG_INVALID", "allOf() needs at least one policy");
  return Object.freeze({
    name: `allOf(${policies.map((p) => p.name).join(", ")})`,
    decide(identity: Identity, resource: R): Decision {
      for (const policy of policies) {
        const decision = policy.decide(identity, resource);
        if (!decision.allowed) return decision;
      }
      return ALLOWED;
    },
  });
}

/**
 * Allowed when any policy allows; when none does, the denial names every reason.
 *
 * @example
 * ```ts
 * const canRead = anyOf(ownsInvoice, scopePolicy(scopes, "audit_invoice", "auditor"));
 * ```
 */
export function anyOf<R>(...policies: readonly Policy<R>[]): Policy<R> {
  if (policies.length === 0) throw new SdkError("PG_SDK_CONFIG_INVALID", "anyOf() needs at least one policy");
  const name = `anyOf(${policies.map((p) => p.name).join(", ")})`;
  return Object.freeze({
    name,
    decide(identity: Identity, resource: R): Decision {
      const reasons: string[] = [];
      for (const policy of policies) {
        const decision = policy.decide(identity, resource);
        if (decision.allowed) return ALLOWED;
        reasons.push(decision.reason);
      }
      return { allowed: false, policy: name, reason: reasons.join("; or ") };
    },
  });
}

/**
 * Throws `PG_SDK_FORBIDDEN` (403, problem+json `detail` = the policy's reason, `policy` = its name) unless the
 * policy allows.
 *
 * @example
 * ```ts
 * const invoice = invoices.get(id);
 * if (invoice === undefined) return reply.code(404).send();
 * enforce(request.identity, ownsInvoice, invoice);
 * return invoice;
 * ```
 */
export function enforce<R>(identity: Identity, policy: Policy<R>, resource: R): void {
  const decision = policy.decide(identity, resource);
  if (decision.allowed) return;
  throw new SdkError("PG_SDK_FORBIDDEN", `policy ${decision.policy} denied ${identity.tokenFingerprint}`, {
    detail: decision.reason,
    extra: { policy: decision.policy },
  });
}

/**
 * The resources the policy allows, in order: for lists, where a denial should hide an item rather than fail.
 *
 * @example
 * ```ts
 * return { invoices: filterAllowed(request.identity, ownsInvoice, [...invoices.values()]) };
 * ```
 */
export function filterAllowed<R>(identity: Identity, policy: Policy<R>, resources: Iterable<R>): R[] {
  const allowed: R[] = [];
  for (const resource of resources) if (policy.decide(identity, resource).allowed) allowed.push(resource);
  return allowed;
}
