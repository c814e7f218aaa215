// Coarse authorization: checks a token's scopes against a route's requirements on every request.
// Only token facts are cached upstream of this stage, never the decision, so a cached token can never skip it.
import { GatewayError } from "../../errors/catalogue.ts";
import type { RequiredScopes, ScopeRequirement } from "../../snapshot/snapshot.ts";

function isSatisfied(requirement: ScopeRequirement, granted: ReadonlySet<string>): boolean {
  for (const scope of requirement.satisfiedBy) {
    if (granted.has(scope)) return true;
  }
  return false;
}

/**
 * Throws `PG_ERR_INSUFFICIENT_SCOPE` naming the scope(s) needed when `granted` does not meet `required`.
 * `allOf`: every requirement must be met. `anyOf`: at least one (ignored when empty).
 */
export function authorizeScopes(required: RequiredScopes, granted: readonly string[]): void {
  if (required.allOf.length === 0 && required.anyOf.length === 0) return;
  const grantedSet = new Set(granted);
  for (const requirement of required.allOf) {
    if (!isSatisfied(requirement, grantedSet)) {
      throw new GatewayError("PG_ERR_INSUFFICIENT_SCOPE", `missing scope ${requirement.scope}`, {
        scope: requirement.scope,
      });
    }
  }
  if (required.anyOf.length > 0 && !required.anyOf.some((r) => isSatisfied(r, grantedSet))) {
    const names = required.anyOf.map((r) => r.scope).join(" ");
    throw new GatewayError("PG_ERR_INSUFFICIENT_SCOPE", `needs one of: ${names}`, { scope: names });
  }
}
