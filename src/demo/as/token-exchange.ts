// RFC 8693 token exchange grant for the demo AS: an active subject token in, a narrowed JWT for one audience out.
import { randomUUID } from "node:crypto";

import type { JWTPayload } from "jose";
import type Provider from "oidc-provider";
import { errors, type KoaContext } from "oidc-provider";

import { API_EXCHANGE_AUDIENCES, EMBEDDED_TOKENS, GATEWAY_CLIENT_IDS } from "./clients.ts";
import type { SigningKeyRing } from "./signing-keys.ts";

const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt";

/** Parameters oidc-provider must keep for this grant (it strips every other one before the handler runs). */
export const TOKEN_EXCHANGE_PARAMETERS = [
  "subject_token",
  "subject_token_type",
  "audience",
  "scope",
  "requested_token_type",
] as const;

export interface TokenExchangeOptions {
  readonly keys: SigningKeyRing;
  readonly issuer: string;
  readonly accessTokenTtlSeconds: number;
  /** Called once per exchange request that passed client authentication. */
  readonly onExchange: () => void;
  /** Epoch seconds. */
  readonly now: () => number;
}

/** What the exchange needs to know about the subject token, whichever form it came in. */
interface SubjectFacts {
  readonly sub: string;
  readonly clientId: string;
  readonly scopes: readonly string[];
  readonly exp: number;
  /** An earlier delegation chain, kept nested under the new actor (RFC 8693 §4.1). */
  readonly act?: unknown;
}

/** Builds the grant handler for `provider.registerGrantType`. */
export function createTokenExchangeHandler(
  provider: Provider,
  options: TokenExchangeOptions,
): (ctx: KoaContext) => Promise<void> {
  return async function exchangeToken(ctx) {
    options.onExchange();
    const exchanger = ctx.oidc.client?.clientId;
    if (exchanger === undefined) throw new errors.InvalidRequest("client authentication is required");

    const subjectToken = requiredParam(ctx, "subject_token");
    const subjectTokenType = requiredParam(ctx, "subject_token_type");
    const audience = requiredParam(ctx, "audience");
    const requestedTokenType = optionalParam(ctx, "requested_token_type");
    if (subjectTokenType !== ACCESS_TOKEN_TYPE && subjectTokenType !== JWT_TOKEN_TYPE) {
      throw new errors.InvalidRequest("unsupported subject_token_type");
    }
    if (
      requestedTokenType !== undefined &&
      requestedTokenType !== JWT_TOKEN_TYPE &&
      requestedTokenType !== ACCESS_TOKEN_TYPE
    ) {
      throw new errors.InvalidRequest("unsupported requested_token_type (this AS issues JWTs)");
    }
    if (subjectTokenType === JWT_TOKEN_TYPE && !looksLikeJwt(subjectToken)) {
      throw new errors.InvalidRequest("subject_token is not a JWT");
    }

    if (!mayExchangeFor(exchanger, audience)) {
      throw new errors.InvalidTarget("this client may not obtain tokens for that audience");
    }

    const subject = await resolveSubject(provider, options, subjectToken);
    const now = options.now();
    if (subject === undefined || subject.exp <= now) throw invalidGrant("subject_token is not active");

    const scopes = narrowScopes(subject.scopes, optionalParam(ctx, "scope"));
    // Never outlive the subject: revoking or expiring the client's token must end what was derived from it.
    const exp = Math.min(subject.exp, now + options.accessTokenTtlSeconds);
    const scope = scopes.length > 0 ? scopes.join(" ") : undefined;
    const claimsFor = (aud: string): JWTPayload => ({
      iss: options.issuer,
      sub: subject.sub,
      client_id: subject.clientId,
      aud,
      ...(scope === undefined ? {} : { scope }),
      iat: now,
      exp,
      jti: randomUUID(),
      act: subject.act === undefined ? { sub: exchanger } : { sub: exchanger, act: subject.act },
    });
    // Nested tokens for flows known in advance (the "embed" pattern): same subject, scopes and lifetime.
    const embedded: Record<string, string> = {};
    for (const rule of EMBEDDED_TOKENS.get(audience) ?? []) {
      embedded[rule.claim] = await options.keys.sign(claimsFor(rule.audience), "at+jwt");
    }
    const accessToken = await options.keys.sign({ ...claimsFor(audience), ...embedded }, "at+jwt");

    ctx.body = {
      access_token: accessToken,
      issued_token_type: JWT_TOKEN_TYPE,
      token_type: "Bearer",
      expires_in: exp - now,
      ...(scope === undefined ? {} : { scope }),
    };
  };
}

/** Gateway clients exchange for any audience; an internal API's client only for the services it calls. */
function mayExchangeFor(clientId: string, audience: string): boolean {
  if (GATEWAY_CLIENT_IDS.has(clientId)) return true;
  return API_EXCHANGE_AUDIENCES.get(clientId)?.has(audience) === true;
}

/** Opaque tokens are looked up in the AS's store; JWTs must carry this AS's signature and be unexpired. */
async function resolveSubject(
  provider: Provider,
  options: TokenExchangeOptions,
  token: string,
): Promise<SubjectFacts | undefined> {
  if (looksLikeJwt(token)) {
    try {
      const { payload } = await options.keys.verifyAccessToken(token, options.issuer);
      const { sub, client_id: clientId, scope, exp, act } = payload;
      if (typeof sub !== "string" || typeof clientId !== "string" || typeof exp !== "number")
        return undefined;
      return { sub, clientId, exp, act, scopes: typeof scope === "string" ? splitScope(scope) : [] };
    } catch {
      return undefined;
    }
  }
  const found = (await provider.ClientCredentials.find(token)) ?? (await provider.AccessToken.find(token));
  if (found?.isValid !== true || found.clientId === undefined || found.exp === undefined) return undefined;
  return {
    sub: found.accountId ?? found.clientId,
    clientId: found.clientId,
    exp: found.exp,
    scopes: splitScope(found.scope ?? ""),
  };
}

/** No `scope` keeps the subject's scopes; a `scope` may only drop some of them (RFC 8693 §2.1, no widening). */
function narrowScopes(subjectScopes: readonly string[], requested: string | undefined): readonly string[] {
  if (requested === undefined) return subjectScopes;
  const held = new Set(subjectScopes);
  const wanted = splitScope(requested);
  const extra = wanted.find((scope) => !held.has(scope));
  if (extra !== undefined)
    throw new errors.InvalidScope("requested scope exceeds the subject token's scope", extra);
  return [...new Set(wanted)];
}

function splitScope(scope: string): string[] {
  return scope.split(" ").filter((part) => part !== "");
}

function looksLikeJwt(token: string): boolean {
  return token.split(".").length === 3;
}

function requiredParam(ctx: KoaContext, name: (typeof TOKEN_EXCHANGE_PARAMETERS)[number]): string {
  const value = optionalParam(ctx, name);
  if (value === undefined || value === "")
    throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  return value;
}

function optionalParam(
  ctx: KoaContext,
  name: (typeof TOKEN_EXCHANGE_PARAMETERS)[number],
): string | undefined {
  const value = ctx.oidc.params?.[name];
  return typeof value === "string" ? value : undefined;
}

function invalidGrant(description: string): Error {
  const error = new errors.InvalidGrant();
  error.error_description = description;
  return error;
}
