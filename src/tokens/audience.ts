// A rule's acceptedAudiences against a token's `aud`: run by the authorize stage on every request (cached facts
// included), and by the exchange and mint loaders before they ask the AS for, or sign, an upstream token.
import { GatewayError } from "../errors/catalogue.ts";

/** How many of a token's audiences a refusal names in its (audit-only) reason. */
const LISTED_AUDIENCES_MAX = 4;

/**
 * Throws `PG_ERR_TOKEN_AUDIENCE` unless the token's audience (`aud` from its facts) names one of the route's
 * `accepted` audiences. Without a list (undefined) any token passes; with one, a token without `aud` never does.
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
