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

/** How many of a token's audiences a refusal names in its (audit-only) reason. */
const LISTED_AUDIENCES_MAX = 4;

/**
 * Throws `PG_ERR_TOKEN_AUDIENCE` unless the token's audience (`aud` from its facts) names one of the route's
 * `accepted` audiences. No list accepts every audience; a token without `aud` is refused by any list.
 */
export function authorizeAudience(
  accepted: readonly string[] | undefined,
  audience: readonly string[] | undefined,
): void {
  if (accepted === undefined) return;
  if (audience !== undefined) {
    for (const name of audience) if (accepted.includes(name)) return;
  }
  const named =
    audience === undefined || audience.length === 0
      ? "the token has no audience"
      : `token audience ${audience.slice(0, LISTED_AUDIENCES_MAX).join(" ")}` +
        (audience.length > LISTED_AUDIENCES_MAX ? ` (+${audience.length - LISTED_AUDIENCES_MAX} more)` : "");
  throw new GatewayError("PG_ERR_TOKEN_AUDIENCE", `${named}; accepted: ${accepted.join(" ")}`);
}
