// Coarse authorization: checks a token's scopes and audience against a route's requirements on every request.
// Only token facts are cached upstream of this stage, never the decision, so a cached token can never skip it.
import { GatewayError } from "../../errors/catalogue.ts";
import type { RequiredScopes, ScopeRequirement } from "../../snapshot/snapshot.ts";

/** Up to this many granted scopes, a linear search beats building a Set on every request. */
const LINEAR_SEARCH_MAX = 16;

/** `granted`: the token's scopes as a list (searched as it is) or, when long, as a Set made once per check. */
function isSatisfied(
  requirement: ScopeRequirement,
  granted: readonly string[] | ReadonlySet<string>,
): boolean {
  for (const scope of requirement.satisfiedBy) {
    if ("has" in granted ? granted.has(scope) : granted.includes(scope)) return true;
  }
  return false;
}

/**
 * Throws `PG_ERR_INSUFFICIENT_SCOPE` naming the scope(s) needed when `granted` does not meet `required`.
 * `allOf`: every requirement must be met. `anyOf`: at least one (ignored when empty).
 */
export function authorizeScopes(required: RequiredScopes, granted: readonly string[]): void {
  if (required.allOf.length === 0 && required.anyOf.length === 0) return;
  const grantedSet = granted.length > LINEAR_SEARCH_MAX ? new Set(granted) : granted;
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

// The audience check lives with the token layer, which also runs it before exchanging or minting.
export { authorizeAudience } from "../../tokens/audience.ts";
