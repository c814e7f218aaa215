// Content negotiation around oidc-provider's introspection endpoint: adds the Curity-style `application/jwt` phantom response.
import { createHash } from "node:crypto";

import type { KoaMiddleware } from "oidc-provider";

import type { SigningKeyRing } from "./signing-keys.ts";

const JSON_TYPE = "application/json";
/** RFC 9701; produced by oidc-provider itself (features.jwtIntrospection). */
const RFC9701_TYPE = "application/token-introspection+jwt";
/** The phantom token: the JWT the internal API should receive, as the introspection response body. */
const PHANTOM_JWT_TYPE = "application/jwt";

export interface IntrospectionFormatsOptions {
  readonly introspectionPath: string;
  readonly issuer: string;
  readonly keys: SigningKeyRing;
  /** Epoch seconds. */
  readonly now: () => number;
}

/**
 * Response formats by `Accept` (the first acceptable of these, in this order):
 * - `application/json` (also no Accept / `*\/*`): RFC 7662 JSON. Active tokens carry `active, scope, client_id,
 *   sub, exp, iat, iss, token_type, jti` (+ `aud` when the token has one). `jti` is the base64url SHA-256 of
 *   the token, never the token: for opaque tokens oidc-provider's own id IS the token value. Inactive, unknown,
 *   expired or revoked: `200 {"active":false}`.
 * - `application/token-introspection+jwt` (RFC 9701): 200 with a JWT (`typ: token-introspection+jwt`,
 *   `aud` = the calling client) whose `token_introspection` claim is the JSON above (without `jti`), also for
 *   inactive tokens (`{"active":false}` inside). Signed with the AS's current key (ES256), for any client.
 * - `application/jwt` (phantom token): active → 200 `Content-Type: application/jwt`, body a compact JWS
 *   (`typ: at+jwt`, the AS's current key) with `iss, sub, client_id, scope, iat, exp, jti, aud` (`aud` = the
 *   token's audience, else the issuer), `exp` = the token's. Inactive → 200 `Content-Type: application/json`
 *   `{"active":false}`: callers must branch on the Content-Type, there is no JWT to verify for a dead token.
 * Client errors (bad credentials, missing token) are oidc-provider's RFC 6749 JSON errors in every format; a JWT
 * (the by-value tokens this AS issues) is refused with 400 `unsupported_token_type`: verify those locally.
 */
export function negotiateIntrospectionFormat(options: IntrospectionFormatsOptions): KoaMiddleware {
  return async function introspectionFormats(ctx, next) {
    if (ctx.method !== "POST" || ctx.path !== options.introspectionPath) {
      await next();
      return;
    }
    const phantom = ctx.accepts(JSON_TYPE, RFC9701_TYPE, PHANTOM_JWT_TYPE) === PHANTOM_JWT_TYPE;
    // oidc-provider only knows JSON and RFC 9701; it renders JSON for us and we sign that below.
    if (phantom) ctx.req.headers.accept = JSON_TYPE;
    await next();

    const body = ctx.body;
    if (ctx.status !== 200 || !isRecord(body) || body["active"] !== true) return;
    const token = ctx.oidc.params?.["token"];
    if (typeof token !== "string") return;
    const introspection = { ...body, jti: fingerprintToken(token) };
    if (!phantom) {
      ctx.body = introspection;
      return;
    }
    ctx.body = await signPhantomToken(introspection, options);
    ctx.type = PHANTOM_JWT_TYPE;
  };
}

/** The JWT an internal API receives for an active opaque token: same facts, never the opaque value. */
async function signPhantomToken(
  introspection: Readonly<Record<string, unknown>>,
  options: IntrospectionFormatsOptions,
): Promise<string> {
  const claims: Record<string, unknown> = { aud: options.issuer };
  for (const name of ["iss", "sub", "client_id", "scope", "exp", "jti", "aud"]) {
    const value = introspection[name];
    if (value !== undefined) claims[name] = value;
  }
  claims["iat"] = options.now();
  return options.keys.sign(claims, "at+jwt");
}

/** base64url SHA-256: identifies a token in responses and logs without revealing it. */
export function fingerprintToken(token: string): string {
  return createHash("sha256").update(token).digest("base64url");
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
