// The compiled snapshot: the one intermediate representation between compile (control plane) and the gateway
// runtime (data plane). The runtime imports only this module's types, never the custom-resource types.
import { z } from "zod";

/**
 * Claims a mint rule cannot forward: those the gateway sets itself (iss, aud, exp, iat, nbf, jti), and those that
 * would undo what minting does (scp: the token's scopes before narrowing; cnf: a key binding the minted JWT does
 * not carry; act: a delegation chain the gateway does not vouch for). sub, client_id and scope may be listed (the
 * default lists them): the gateway sets them from the token, scope narrowed to the route.
 */
export const claimsMintCannotForward: ReadonlySet<string> = new Set([
  "iss",
  "aud",
  "exp",
  "iat",
  "nbf",
  "jti",
  "scp",
  "cnf",
  "act",
]);

/** Token handling mode of one rule. */
export const authModeSchema = z.enum(["phantom", "exchange", "mint", "jwt", "none"]);
export type AuthMode = z.infer<typeof authModeSchema>;

/** How the gateway authenticates itself to the authorization server's token and introspection endpoints. */
export const clientAuthMethodSchema = z.enum([
  "client_secret_basic",
  "client_secret_post",
  "private_key_jwt",
]);
export type ClientAuthMethod = z.infer<typeof clientAuthMethodSchema>;

/** Which introspection response the gateway asks for (RFC 7662 JSON, a plain JWT, or RFC 9701). */
export const introspectionResponseSchema = z.enum(["json", "jwt", "token-introspection+jwt"]);
export type IntrospectionResponse = z.infer<typeof introspectionResponseSchema>;

export const jwsAlgorithmSchema = z.enum([
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
]);
export type JwsAlgorithm = z.infer<typeof jwsAlgorithmSchema>;

// Plain patterns rather than z.url(): compile has already parsed these URLs from the resources, and a pattern
// carries over unchanged to the JSON Schema the gateway checks received snapshots with (check.ts).
/** An absolute http(s) URL: scheme, a non-empty authority, then an optional path, query or fragment. */
const httpUrl = z.string().regex(/^https?:\/\/[^\s/?#]+(?:[/?#]\S*)?$/, "must be an absolute http(s) URL");
/** An origin: scheme and authority only. */
const httpOrigin = z.string().regex(/^https?:\/\/[^\s/?#]+$/, "must be an http(s) origin");

/** One authorization server, fully resolved (Secrets inlined) so gateways never read Secrets themselves. */
export const compiledAuthServerSchema = z
  .object({
    /** `namespace/name` of the AuthServer object. */
    id: z.string().min(1),
    issuer: z.string().min(1),
    /** Fetch `/.well-known/openid-configuration` (or RFC 8414 metadata) for endpoints not given explicitly. */
    discovery: z.boolean(),
    endpoints: z
      .object({
        introspection: httpUrl.optional(),
        token: httpUrl.optional(),
        jwks: httpUrl.optional(),
      })
      .strict(),
    client: z
      .object({
        id: z.string().min(1),
        method: clientAuthMethodSchema,
        /** Client secret (client_secret_*), or a private JWK as JSON (private_key_jwt). */
        secret: z.string().min(1),
      })
      .strict(),
    introspectionResponse: introspectionResponseSchema,
    allowedAlgorithms: z.array(jwsAlgorithmSchema).min(1),
    clockSkewSeconds: z.number().int().min(0).max(600),
    /** Only `typ: at+jwt` JWTs are access tokens (absent: also `JWT` and none). */
    requireAccessTokenTyp: z.literal(true).optional(),
    cache: z
      .object({
        maxTtlSeconds: z.number().int().min(0),
        negativeTtlSeconds: z.number().int().min(0),
        maxEntries: z.number().int().min(1),
      })
      .strict(),
    timeouts: z
      .object({
        connectMs: z.number().int().min(1),
        responseMs: z.number().int().min(1),
      })
      .strict(),
    /** Minimum interval between JWKS refetches triggered by an unknown `kid`. */
    jwksCooldownMs: z.number().int().min(0),
  })
  .strict();
export type CompiledAuthServer = z.infer<typeof compiledAuthServerSchema>;

/** A required scope and every token scope that satisfies it (itself plus all scopes that imply it). */
export const scopeRequirementSchema = z
  .object({
    scope: z.string().min(1),
    satisfiedBy: z.array(z.string().min(1)).min(1),
  })
  .strict();
export type ScopeRequirement = z.infer<typeof scopeRequirementSchema>;

export const requiredScopesSchema = z
  .object({
    allOf: z.array(scopeRequirementSchema),
    anyOf: z.array(scopeRequirementSchema),
  })
  .strict();
export type RequiredScopes = z.infer<typeof requiredScopesSchema>;

export const compiledBackendSchema = z
  .object({
    /** Origin only: `http(s)://host:port`. */
    origin: httpOrigin,
    /** Relative share of requests (weighted round robin). */
    weight: z.number().int().min(1).max(1_000_000),
  })
  .strict();
export type CompiledBackend = z.infer<typeof compiledBackendSchema>;

export const compiledRouteSchema = z
  .object({
    /**
     * Stable id: `namespace/name#rule`, where `rule` is the rule's name (when unique in the route and not all
     * digits) or its index. Used in metrics, audit and status.
     */
    id: z.string().min(1),
    source: z.object({ namespace: z.string(), name: z.string(), rule: z.number().int().min(0) }).strict(),
    /** Lower-case hostnames; `*.example.com` matches one or more labels; empty means any host. */
    hostnames: z.array(z.string().min(1)),
    path: z
      .object({
        type: z.enum(["Exact", "PathPrefix"]),
        /** Normalised, starts with `/`, no trailing slash except the root. */
        value: z.string().startsWith("/"),
      })
      .strict(),
    /** Upper-case methods; empty means every method. */
    methods: z.array(z.string().min(1)),
    auth: z
      .object({
        mode: authModeSchema,
        /** Id of the compiled auth server (absent only for `none`). */
        authServer: z.string().optional(),
        /** Audience of the upstream JWT (exchange, mint) or the accepted audience (jwt). */
        audience: z.string().optional(),
        /**
         * phantom, exchange, mint: the client token's `aud` must contain one of these (checked on every request);
         * absent: any audience.
         */
        acceptedAudiences: z.array(z.string().min(1).max(253)).min(1).max(16).optional(),
        /** Scopes the route may pass upstream: the scopes of its ScopePolicies (exchange, mint). */
        upstreamScopes: z.array(z.string()),
        /** Claims copied from the introspection result into a minted JWT. */
        forwardClaims: z.array(z.string()),
        /** Lifetime of a minted JWT. */
        mintTtlSeconds: z.number().int().min(1),
      })
      .strict(),
    requiredScopes: requiredScopesSchema,
    backends: z.array(compiledBackendSchema).min(1),
    timeouts: z
      .object({
        requestMs: z.number().int().min(1),
      })
      .strict(),
    limits: z
      .object({
        maxBodyBytes: z.number().int().min(0),
      })
      .strict(),
  })
  .strict();
export type CompiledRoute = z.infer<typeof compiledRouteSchema>;

export const snapshotSchema = z
  .object({
    /** Content hash of everything below (hex SHA-256, first 16 characters). */
    revision: z.string().regex(/^[0-9a-f]{16}$/),
    authServers: z.array(compiledAuthServerSchema),
    /** Sorted most specific first; the first route that matches a request wins. */
    routes: z.array(compiledRouteSchema),
  })
  .strict();
export type Snapshot = z.infer<typeof snapshotSchema>;
