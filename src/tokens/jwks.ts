// JWKS key sources and JWT verification against an authorization server's keys. Keys are fetched through the
// AS client (same dispatcher, timeouts and size bound), cached, and refetched when a token names an unknown `kid`
// — at most once per cooldown, so a stream of tokens with made-up `kid`s cannot turn into a stream of fetches.
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  type JWTVerifyResult,
} from "jose";
import { z } from "zod";
import { GatewayError } from "../errors/catalogue.ts";
import type { JwsAlgorithm } from "../snapshot/snapshot.ts";
import type { Clock } from "./clock.ts";

const jwksSchema = z.object({ keys: z.array(z.looseObject({ kty: z.string() })) });

export interface JwksKeySourceOptions {
  /** Fetches the JWKS document (parsed JSON). Throws `GatewayError` when the AS cannot be reached. */
  readonly fetchJwks: () => Promise<unknown>;
  readonly clock: Clock;
  /** Minimum interval between fetches triggered by an unknown `kid` (and between retries after a failure). */
  readonly cooldownMs: number;
  /** Keys older than this are refreshed in the background on next use; the old keys keep serving meanwhile. */
  readonly maxAgeMs?: number;
}

/** A cached JWKS with refetch-on-unknown-`kid`, usable as jose's key resolver. */
export interface JwksKeySource {
  /** Key resolver for jose's `jwtVerify`. */
  readonly getKey: JWTVerifyGetKey;
  /**
   * Fetches the keys again unless a fetch ran within the cooldown; true when keys other than those held before
   * arrived. For a JWT without `kid` whose signature the held keys do not verify (the AS rotated its key).
   */
  refresh?(): Promise<boolean>;
  /** Number of JWKS fetches started (for tests and diagnostics). */
  fetchCount(): number;
}

const DEFAULT_MAX_AGE_MS = 10 * 60_000;
const NO_KEYS_RETRY_MS = 5_000;

/** Creates a {@link JwksKeySource}. Nothing is fetched until the first verification needs a key. */
export function createJwksKeySource(options: JwksKeySourceOptions): JwksKeySource {
  const { clock, cooldownMs } = options;
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  let keys: ReturnType<typeof createLocalJWKSet> | undefined;
  let fetchedAtMs = Number.NEGATIVE_INFINITY;
  let attemptedAtMs = Number.NEGATIVE_INFINITY;
  let fetches = 0;
  let pending: Promise<void> | undefined;
  /** The last fetch failed: within the cooldown an unknown `kid` cannot be judged, so the AS is unavailable. */
  let lastFetchFailed = false;

  function refetch(): Promise<void> {
    // Concurrent verifications that all miss the same new `kid` share one fetch.
    pending ??= (async () => {
      attemptedAtMs = clock.now();
      fetches += 1;
      try {
        const parsed = jwksSchema.safeParse(await options.fetchJwks());
        if (!parsed.success) throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "JWKS document is malformed");
        try {
          keys = createLocalJWKSet(parsed.data);
        } catch {
          throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "JWKS document is malformed");
        }
        fetchedAtMs = clock.now();
        lastFetchFailed = false;
      } catch (error) {
        lastFetchFailed = true;
        throw error;
      } finally {
        pending = undefined;
      }
    })();
    return pending;
  }

  const coolingDown = (): boolean => clock.now() - attemptedAtMs < cooldownMs;

  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (keys === undefined) {
      // Without any keys every verification fails: retry sooner than the unknown-kid cooldown, still rate-limited.
      if (pending === undefined && clock.now() - attemptedAtMs < Math.min(cooldownMs, NO_KEYS_RETRY_MS)) {
        throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "JWKS unavailable (retry after cooldown)");
      }
      await refetch();
    } else if (clock.now() - fetchedAtMs >= maxAgeMs && !coolingDown() && pending === undefined) {
      // Refreshed in the background: the stale keys verify this token meanwhile, so no request waits for the
      // AS (up to its timeout while it is down). Availability over freshness, bounded by the AS's own key
      // lifetimes (a removed key only matters once the AS has stopped using it).
      void refetch().catch(() => undefined);
    }
    const current = keys;
    if (current === undefined) throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "JWKS unavailable");
    try {
      return await current(header, token);
    } catch (error) {
      // A key the runtime cannot import (corrupt material, a private key published by mistake) is the AS's
      // fault, not the token's.
      if (!(error instanceof joseErrors.JOSEError))
        throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "a JWKS key cannot be used (malformed key material)");
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error;
      // Join a refetch already under way, or use keys that arrived since; otherwise fetch, unless cooling down.
      if (pending !== undefined) await pending;
      else if (keys === current) {
        if (coolingDown()) {
          // After a failed fetch the key may well exist at the AS: that is an outage (503), not a bad token (401).
          // After a fetch that did not have it, the token is refused: a 503 for every made-up `kid` would read as
          // an AS outage. (An AS that signs with a key the moment it publishes it can see such a token refused
          // for up to one cooldown; publishing keys ahead of use, as RFC 7517 deployments do, avoids that.)
          if (lastFetchFailed) {
            throw new GatewayError(
              "PG_ERR_AS_UNAVAILABLE",
              "JWKS unavailable for a new key (retry after cooldown)",
            );
          }
          throw error;
        }
        await refetch();
      }
      const refreshed: typeof keys = keys;
      if (refreshed === undefined || refreshed === current) throw error;
      return refreshed(header, token);
    }
  };

  async function refresh(): Promise<boolean> {
    const before = keys;
    if (pending !== undefined) await pending.catch(() => undefined);
    else if (!coolingDown()) await refetch().catch(() => undefined);
    return keys !== before;
  }

  return { getKey, refresh, fetchCount: () => fetches };
}

export interface VerifyJwtOptions {
  readonly issuer: string;
  /** Required `aud` value (or one of several), when the caller's mode demands one. */
  readonly audience?: string | readonly string[] | undefined;
  readonly algorithms: readonly JwsAlgorithm[];
  readonly clockSkewSeconds: number;
  readonly clock: Clock;
  /** Required `typ` header (compared the way RFC 8725 says: case-insensitive, `application/` optional). */
  readonly typ?: string;
  /** Claims that must be present (e.g. `exp`). */
  readonly requiredClaims?: readonly string[];
  /** Oldest accepted `iat`, in seconds before now (plus the skew); also refuses an `iat` in the future. */
  readonly maxAgeSeconds?: number;
}

/**
 * Verifies a JWS-signed JWT against a key source: signature with an allow-listed algorithm (never `none`, never
 * a symmetric algorithm: the allow-list holds asymmetric ones only), `iss`, optional `aud` and `typ`, and
 * `exp`/`nbf` against the injected clock with the given skew. Throws jose's errors (`code` `ERR_JWT_*`/`ERR_JWS_*`/
 * `ERR_JWKS_*`) or a `GatewayError` when the keys cannot be fetched.
 */
export async function verifyJwt(
  jwt: string,
  keys: Pick<JwksKeySource, "getKey" | "refresh">,
  options: VerifyJwtOptions,
): Promise<JWTVerifyResult> {
  try {
    return await verifyWithKeys(jwt, keys, options);
  } catch (error) {
    // A JWT without `kid` names no key that could be missing: when the held keys do not verify it, the AS may
    // have rotated. One fetch (within the cooldown's limit), then judge again.
    if (!(error instanceof joseErrors.JWSSignatureVerificationFailed) || keys.refresh === undefined)
      throw error;
    if (hasKid(jwt) || !(await keys.refresh())) throw error;
    return verifyWithKeys(jwt, keys, options);
  }
}

function hasKid(jwt: string): boolean {
  try {
    return decodeProtectedHeader(jwt).kid !== undefined;
  } catch {
    return false;
  }
}

async function verifyWithKeys(
  jwt: string,
  keys: Pick<JwksKeySource, "getKey">,
  options: VerifyJwtOptions,
): Promise<JWTVerifyResult> {
  const verifyOptions: JWTVerifyOptions = {
    issuer: options.issuer,
    ...(options.audience === undefined
      ? {}
      : { audience: typeof options.audience === "string" ? options.audience : [...options.audience] }),
    algorithms: [...options.algorithms],
    clockTolerance: options.clockSkewSeconds,
    currentDate: new Date(options.clock.now()),
    ...(options.typ === undefined ? {} : { typ: options.typ }),
    ...(options.requiredClaims === undefined ? {} : { requiredClaims: [...options.requiredClaims] }),
    ...(options.maxAgeSeconds === undefined ? {} : { maxTokenAge: options.maxAgeSeconds }),
  };
  try {
    return await jwtVerify(jwt, keys.getKey, verifyOptions);
  } catch (error) {
    if (!(error instanceof joseErrors.JWKSMultipleMatchingKeys)) throw error;
    // A JWT without `kid` while the AS publishes more than one key for its algorithm (during a key rotation):
    // jose does not pick one, so each candidate is tried; only a wrong signature moves on to the next.
    for await (const key of error) {
      try {
        return await jwtVerify(jwt, key, verifyOptions);
      } catch (attempt) {
        if (!(attempt instanceof joseErrors.JWSSignatureVerificationFailed)) throw attempt;
      }
    }
    throw new joseErrors.JWSSignatureVerificationFailed();
  }
}

/** A safe one-line description of a verification failure (error code only, never token content). */
export function describeJwtError(error: unknown): string {
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `${error.code} (${error.claim})`;
  if (error instanceof joseErrors.JOSEError) return error.code;
  return "unverifiable";
}

const ACCESS_TOKEN_TYPES = new Set(["jwt", "at+jwt", "application/jwt", "application/at+jwt"]);
const RFC9068_TYPES = new Set(["at+jwt", "application/at+jwt"]);

/**
 * Whether a JWT's `typ` header allows reading it as an access token: absent, `JWT` or RFC 9068 `at+jwt`; with
 * `strict`, only `at+jwt` (RFC 9068 §4), so an ID token or any other JWT without that type is refused even when
 * it leaves `typ` out. Other explicit types (an RFC 9701 introspection response, a logout token…) are signed by
 * the same keys but are not access tokens, and RFC 8725 §3.11 says to tell them apart by `typ`.
 */
export function isAccessTokenTyp(typ: unknown, strict = false): boolean {
  if (typ === undefined) return !strict;
  // A signed header may hold anything there (jose checks typ only when asked to): a number or a list is no type.
  return typeof typ === "string" && (strict ? RFC9068_TYPES : ACCESS_TOKEN_TYPES).has(typ.toLowerCase());
}
