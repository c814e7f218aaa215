// Token facts: what the gateway knows about a token once the AS (or a local JWT check) vouched for it, and the
// parsing of RFC 7662 / JWT claims into that shape. Scopes are checked against these facts on every request.
import { z } from "zod";
import { bearerAuthorization } from "./bearer.ts";

/** Facts about an active token. Cached; never an authorization decision. */
export interface TokenFacts {
  readonly active: true;
  readonly sub?: string;
  readonly clientId?: string;
  /** Granted scopes, deduplicated, in the order the AS listed them. */
  readonly scopes: readonly string[];
  /** `exp`, epoch seconds. */
  readonly expiresAt?: number;
  /** `iat`, epoch seconds. */
  readonly issuedAt?: number;
  readonly issuer?: string;
  readonly audience?: readonly string[];
  /** Every claim the AS returned (frozen), for `forwardClaims`. */
  readonly claims: Readonly<Record<string, unknown>>;
  /**
   * `Bearer <JWT>` with the AS-signed JWT, verified, when the introspection returned one (`Accept:
   * application/jwt`): the Authorization value phantom mode forwards, kept in that form only (`bearerToken`
   * gives the JWT).
   */
  readonly upstreamAuthorization?: string;
}

/** The AS said the token is not active (or it is expired, not yet valid, revoked). Cached briefly. */
export interface InactiveToken {
  readonly active: false;
  /** Internal, safe reason (never contains the token). */
  readonly reason: string;
  /** For a token not valid yet: when it becomes valid (epoch ms, skew included), so a refusal is not cached past it. */
  readonly validFromMs?: number;
}

/** The outcome of asking whether a token is active. */
export type IntrospectionResult = TokenFacts | InactiveToken;

const stringOrList = z.union([z.string(), z.array(z.string())]);

/** The registered claims the gateway interprets; anything else is kept verbatim in `claims`. */
export const tokenClaimsSchema = z.looseObject({
  scope: stringOrList.optional(),
  scp: stringOrList.optional(),
  client_id: z.string().optional(),
  sub: z.string().optional(),
  exp: z.number().optional(),
  iat: z.number().optional(),
  nbf: z.number().optional(),
  iss: z.string().optional(),
  aud: stringOrList.optional(),
});

/**
 * A JSON object with its `null` members left out: some authorization servers write `"scope": null` for a claim
 * they have no value for, which means the same as leaving it out. Anything but a plain object is returned as is.
 */
export function withoutNulls(value: unknown): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return value;
  const entries = Object.entries(value);
  if (!entries.some(([, member]) => member === null)) return value;
  return Object.fromEntries(entries.filter(([, member]) => member !== null));
}

/** An RFC 7662 introspection response (also the `token_introspection` claim of RFC 9701). */
export const introspectionResponseSchema = tokenClaimsSchema.extend({ active: z.boolean() });

type TokenClaims = z.infer<typeof tokenClaimsSchema>;

function splitScopes(value: string | readonly string[]): string[] {
  const list = typeof value === "string" ? value.split(" ") : value;
  const scopes: string[] = [];
  for (const scope of list) {
    if (scope !== "" && !scopes.includes(scope)) scopes.push(scope);
  }
  return scopes;
}

/**
 * Reads granted scopes from `scope` (RFC 7662/9068 space-separated string, or a list as some servers send) or,
 * when absent, from `scp` (string or list, Azure/Okta style).
 */
export function parseScopes(claims: { readonly scope?: unknown; readonly scp?: unknown }): readonly string[] {
  const source = claims.scope ?? claims.scp;
  if (typeof source === "string") return splitScopes(source);
  if (Array.isArray(source))
    return splitScopes(source.filter((item): item is string => typeof item === "string"));
  return [];
}

/**
 * Builds facts from already-validated claims (a verified JWT payload or an active introspection response).
 *
 * @throws GatewayError PG_ERR_AS_UNAVAILABLE when `upstreamJwt` could not be sent in a header.
 */
export function factsFromClaims(claims: TokenClaims, upstreamJwt?: string): TokenFacts {
  const upstreamAuthorization = upstreamJwt === undefined ? undefined : bearerAuthorization(upstreamJwt);
  const audience =
    claims.aud === undefined ? undefined : typeof claims.aud === "string" ? [claims.aud] : claims.aud;
  return {
    active: true,
    ...(claims.sub === undefined ? {} : { sub: claims.sub }),
    ...(claims.client_id === undefined ? {} : { clientId: claims.client_id }),
    scopes: Object.freeze(parseScopes(claims)),
    ...(claims.exp === undefined ? {} : { expiresAt: claims.exp }),
    ...(claims.iat === undefined ? {} : { issuedAt: claims.iat }),
    ...(claims.iss === undefined ? {} : { issuer: claims.iss }),
    ...(audience === undefined ? {} : { audience: Object.freeze([...audience]) }),
    claims: Object.freeze({ ...claims }),
    ...(upstreamAuthorization === undefined ? {} : { upstreamAuthorization }),
  };
}

/**
 * Why an active token still cannot be taken as a bearer token, or undefined when it can. The gateway checks no
 * proof of possession, so a sender-constrained token (RFC 7800 `cnf`: DPoP, RFC 9449 §6; mutual TLS, RFC 8705
 * §3) presented as a plain bearer token is refused, as is any `token_type` (RFC 7662 §2.2) other than Bearer.
 * An AS that leaves `token_type` out for refresh tokens (oidc-provider does) makes them indistinguishable here.
 */
export function notBearerReason(claims: Readonly<Record<string, unknown>>): string | undefined {
  if (claims["cnf"] !== undefined) return "sender-constrained token (cnf) without proof of possession";
  const type = claims["token_type"];
  if (type !== undefined && (typeof type !== "string" || type.toLowerCase() !== "bearer"))
    return "token_type is not Bearer";
  return undefined;
}

/**
 * Applies the time checks an AS's `active: true` does not make for us at cache time: a response whose `exp` has
 * passed or whose `nbf` is still ahead (beyond the allowed skew) is treated as inactive.
 */
export function checkFactsTimes(
  facts: TokenFacts,
  nowMs: number,
  clockSkewSeconds: number,
): IntrospectionResult {
  if (facts.expiresAt !== undefined && facts.expiresAt * 1000 <= nowMs)
    return { active: false, reason: "expired" };
  const nbf = facts.claims["nbf"];
  if (typeof nbf === "number" && (nbf - clockSkewSeconds) * 1000 > nowMs) {
    return { active: false, reason: "not yet valid", validFromMs: (nbf - clockSkewSeconds) * 1000 };
  }
  return facts;
}

/** `granted ∩ allowed`, in the order of `allowed` (the route's list), so cache keys and JWTs are deterministic. */
export function intersectScopes(granted: readonly string[], allowed: readonly string[]): string[] {
  return allowed.filter((scope) => granted.includes(scope));
}

/**
 * The bytes a token's facts are counted for in the token cache: the claims as JSON (object overhead makes the
 * heap hold somewhat more) and the upstream JWT kept with them.
 */
export function factsBytes(facts: TokenFacts): number {
  return JSON.stringify(facts.claims).length + (facts.upstreamAuthorization?.length ?? 0);
}
