// Verifies the internal JWT an API receives (from the gateway, or from another API) into a typed Identity:
// signature by an allow-listed asymmetric algorithm against the gateway's or the authorization server's JWKS,
// exact issuer, audience, access-token `typ`, `exp`/`nbf` against an injected clock.
import { decodeProtectedHeader, errors as joseErrors, type JSONWebKeySet, type JWTPayload } from "jose";
import type { Dispatcher } from "undici";
import { z } from "zod";
import { GatewayError } from "../errors/catalogue.ts";
import { jwsAlgorithmSchema, type JwsAlgorithm } from "../snapshot/snapshot.ts";
import { systemClock, type Clock } from "../tokens/clock.ts";
import { parseScopes, tokenClaimsSchema, withoutNulls } from "../tokens/facts.ts";
import { fingerprintToken } from "../tokens/fingerprint.ts";
import { describeJwtError, isAccessTokenTyp, verifyJwt } from "../tokens/jwks.ts";
import { SdkError } from "./errors.ts";
import { bindToken, parseActor, type Identity } from "./identity.ts";
import { createKeyResolver, dispatcherOrOwn } from "./keys.ts";

/** Algorithms accepted when the options name none: the asymmetric ones authorization servers commonly use. */
export const DEFAULT_ALGORITHMS: readonly JwsAlgorithm[] = Object.freeze([
  "ES256",
  "RS256",
  "PS256",
  "EdDSA",
]);

/** Options of {@link createInternalJwtVerifier}. Give exactly one of `jwksUri` and `jwks`. */
export interface InternalJwtVerifierOptions<C extends object = Readonly<Record<string, unknown>>> {
  /** Required `iss`: the authorization server (phantom, exchange, jwt modes) or the gateway's mint issuer. */
  readonly issuer: string;
  /** Accepted `aud` values: the token must name at least one. */
  readonly audience: string | readonly string[];
  /** JWKS URL: the AS's `jwks_uri`, or the gateway admin port's `/.well-known/jwks.json` for minted tokens. */
  readonly jwksUri?: string;
  /** A local key set instead of `jwksUri` (tests, pinned keys). */
  readonly jwks?: JSONWebKeySet;
  /** Allow-list; asymmetric algorithms only. Default {@link DEFAULT_ALGORITHMS}. */
  readonly algorithms?: readonly JwsAlgorithm[];
  /** Tolerance for `exp`/`nbf`. Default 30. */
  readonly clockSkewSeconds?: number;
  /** Default: the system clock. */
  readonly clock?: Clock;
  /** Carries JWKS fetches. Default: a keep-alive pool owned (and closed) by the verifier. */
  readonly dispatcher?: Dispatcher;
  /** Deadline of one JWKS fetch. Default 2000. */
  readonly jwksTimeoutMs?: number;
  /** Minimum interval between JWKS refetches caused by an unknown `kid`. Default 30000. */
  readonly jwksCooldownMs?: number;
  /**
   * Accept only `typ: at+jwt` (RFC 9068), refusing `JWT` and a missing `typ` too. Default false: those are
   * accepted, explicit other types never. The gateway's minted JWTs are `at+jwt`; so are many servers' tokens.
   */
  readonly requireAccessTokenTyp?: boolean;
  /** Schema of the claims your API relies on beyond the registered ones; failing it is `PG_SDK_TOKEN_INVALID`. */
  readonly claims?: z.ZodType<C>;
}

/** Verifies internal JWTs for one API. Create once at start-up; share across requests. */
export interface InternalJwtVerifier<C extends object = Readonly<Record<string, unknown>>> {
  readonly issuer: string;
  readonly audience: readonly string[];
  /**
   * Verifies a compact JWT. Throws {@link SdkError}: `PG_SDK_TOKEN_INVALID`, `PG_SDK_TOKEN_EXPIRED`,
   * `PG_SDK_TOKEN_WRONG_AUDIENCE` or `PG_SDK_KEYS_UNAVAILABLE`.
   */
  verify(jwt: string): Promise<Identity<C>>;
  /**
   * Reads `Authorization: Bearer <jwt>` and verifies the JWT; `PG_SDK_TOKEN_MISSING` without one,
   * `PG_SDK_TOKEN_MALFORMED_HEADER` for anything but one Bearer value.
   */
  verifyAuthorization(header: string | readonly string[] | undefined): Promise<Identity<C>>;
  /** Releases the verifier's own connection pool (not an injected dispatcher). */
  close(): Promise<void>;
}

const optionsSchema = z
  .object({
    issuer: z.string().min(1),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    jwksUri: z.url({ protocol: /^https?$/ }).optional(),
    jwks: z.object({ keys: z.array(z.looseObject({ kty: z.string() })) }).optional(),
    algorithms: z.array(jwsAlgorithmSchema).min(1).optional(),
    clockSkewSeconds: z.number().int().min(0).max(600).optional(),
    jwksTimeoutMs: z.number().int().min(1).optional(),
    jwksCooldownMs: z.number().int().min(0).optional(),
    requireAccessTokenTyp: z.boolean().optional(),
  })
  .refine((o) => (o.jwksUri === undefined) !== (o.jwks === undefined), {
    error: "give exactly one of jwksUri and jwks",
  });

/** Validates the plain-data part of verifier-like options; throws `PG_SDK_CONFIG_INVALID` naming the field. */
export function parseVerifierOptions(what: string, options: Record<string, unknown>): void {
  const plain = Object.fromEntries(
    [
      "issuer",
      "audience",
      "jwksUri",
      "jwks",
      "algorithms",
      "clockSkewSeconds",
      "jwksTimeoutMs",
      "jwksCooldownMs",
      "requireAccessTokenTyp",
    ]
      .filter((key) => options[key] !== undefined)
      .map((key) => [key, options[key]]),
  );
  const parsed = optionsSchema.safeParse(plain);
  if (!parsed.success) {
    throw new SdkError("PG_SDK_CONFIG_INVALID", `${what}: ${z.prettifyError(parsed.error)}`);
  }
}

/** Why a JWT failed, before it is named with the inbound or embedded-token codes. */
export type JwtFailure = "invalid" | "expired" | "audience" | "keys";

/** A JWT check that failed (SDK internal); `reason` is safe (jose error codes, claim names; never token content). */
export class JwtCheckError extends Error {
  readonly failure: JwtFailure;
  readonly reason: string;
  constructor(failure: JwtFailure, reason: string) {
    super(reason);
    this.name = "JwtCheckError";
    this.failure = failure;
    this.reason = reason;
  }
}

/** The verification core shared by the inbound verifier and embedded-token checks. */
export interface JwtChecker {
  readonly issuer: string;
  /** Verifies `jwt` for one of `audience`; throws {@link JwtCheckError}. */
  check(jwt: string, audience: readonly string[]): Promise<JWTPayload>;
  close(): Promise<void>;
}

/** Builds a {@link JwtChecker} from verifier-shaped options (already validated). */
export function createJwtChecker(
  options: Omit<InternalJwtVerifierOptions, "audience" | "claims">,
): JwtChecker {
  const clock = options.clock ?? systemClock;
  const { dispatcher, owned: ownedDispatcher } = dispatcherOrOwn(options.dispatcher, 4);
  const keys = createKeyResolver(
    options.jwks === undefined ? { jwksUri: options.jwksUri ?? "" } : { jwks: options.jwks },
    {
      dispatcher,
      clock,
      timeoutMs: options.jwksTimeoutMs ?? 2_000,
      cooldownMs: options.jwksCooldownMs ?? 30_000,
    },
  );
  const algorithms = [...(options.algorithms ?? DEFAULT_ALGORITHMS)];
  const clockTolerance = options.clockSkewSeconds ?? 30;

  async function check(jwt: string, audience: readonly string[]): Promise<JWTPayload> {
    // jose decodes base64url leniently (padding, stray low bits): the same token could then be spelled many
    // ways, each with its own fingerprint (the exchange cache key, the audit's token id).
    if (!isCanonicalCompactJws(jwt))
      throw new JwtCheckError("invalid", "not a compact JWS in canonical base64url");
    let verified;
    try {
      // The token layer's verification: it also tries each candidate key for a JWT without `kid` while the AS
      // publishes several keys for its algorithm (a key rotation), where jose alone refuses to pick one.
      verified = await verifyJwt(jwt, keys, {
        issuer: options.issuer,
        audience,
        algorithms,
        clockSkewSeconds: clockTolerance,
        clock,
        requiredClaims: ["exp", "sub"],
      });
    } catch (error) {
      if (error instanceof SdkError || error instanceof GatewayError) {
        throw new JwtCheckError("keys", error.reason);
      }
      if (error instanceof joseErrors.JWTExpired) throw new JwtCheckError("expired", "ERR_JWT_EXPIRED");
      if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === "aud") {
        throw new JwtCheckError("audience", `aud is none of ${audience.join(", ")}`);
      }
      throw new JwtCheckError("invalid", describeJwtError(error));
    }
    // RFC 8725 §3.11: an ID token or an introspection response signed by the same keys is not an access token.
    if (!isAccessTokenTyp(verified.protectedHeader.typ, options.requireAccessTokenTyp === true))
      throw new JwtCheckError("invalid", "typ is not an access token");
    if (typeof verified.payload.sub !== "string" || verified.payload.sub === "")
      throw new JwtCheckError("invalid", "sub is not a non-empty string");
    // What jose leaves to the caller: finite times (JSON's 1e400 is Infinity: a token that never expires) and an
    // audience of strings only.
    const registered = tokenClaimsSchema.safeParse(withoutNulls(verified.payload));
    if (!registered.success) {
      const claim = registered.error.issues[0]?.path[0];
      throw new JwtCheckError("invalid", `claim ${String(claim ?? "?")} is malformed`);
    }
    return verified.payload;
  }

  return {
    issuer: options.issuer,
    check,
    close: async () => {
      await ownedDispatcher?.close();
    },
  };
}

/**
 * Reads the single Bearer token of an Authorization header: `PG_SDK_TOKEN_MISSING` without one,
 * `PG_SDK_TOKEN_MALFORMED_HEADER` for two headers or anything but `Bearer <token>`.
 *
 * @example
 * ```ts
 * const jwt = bearerTokenOf(req.headers.authorization);
 * ```
 */
export function bearerTokenOf(given: string | readonly string[] | undefined): string {
  // One header may come as a list of one (`req.headersDistinct`).
  const header = typeof given === "string" || given === undefined || given.length > 1 ? given : given[0];
  if (header === undefined || header === "")
    throw new SdkError("PG_SDK_TOKEN_MISSING", "no Authorization header");
  if (typeof header !== "string") {
    throw new SdkError("PG_SDK_TOKEN_MALFORMED_HEADER", "more than one Authorization header");
  }
  // Another scheme (Basic, DPoP) is no Bearer credential at all: RFC 6750 §3.1 answers it with a bare challenge.
  if (!/^Bearer(?: |$)/i.test(header))
    throw new SdkError("PG_SDK_TOKEN_MISSING", "no Bearer credential in the Authorization header");
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  if (match?.[1] === undefined) {
    throw new SdkError("PG_SDK_TOKEN_MALFORMED_HEADER", "Authorization is not a single Bearer token");
  }
  return match[1];
}

const INBOUND_CODES = {
  invalid: "PG_SDK_TOKEN_INVALID",
  expired: "PG_SDK_TOKEN_EXPIRED",
  audience: "PG_SDK_TOKEN_WRONG_AUDIENCE",
  keys: "PG_SDK_KEYS_UNAVAILABLE",
} as const;

/** Three parts, each base64url without padding and without stray bits in its last character. */
function isCanonicalCompactJws(jwt: string): boolean {
  const parts = jwt.split(".");
  return (
    parts.length === 3 &&
    parts.every(
      (part) =>
        /^[A-Za-z0-9_-]*$/.test(part) && Buffer.from(part, "base64url").toString("base64url") === part,
    )
  );
}

/** Three (JWS) or five (JWE) base64url parts, the first not empty. */
const COMPACT_SHAPE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2}(?:(?:\.[A-Za-z0-9_-]*){2})?$/;

/**
 * A compact JWS or JWE: its shape, and a first part that decodes to a JSON object (the JOSE header, however it
 * was serialised: `{"alg"` starts `eyJ`, `{ "alg"` does not). Dotted strings of other kinds (versions, host
 * names) are not.
 */
function isTokenShaped(value: string): boolean {
  if (!COMPACT_SHAPE.test(value)) return false;
  try {
    decodeProtectedHeader(value); // throws unless the first part is a JSON object
    return true;
  } catch {
    return false;
  }
}

/**
 * The claims as an identity carries them: every claim readable by name, but a claim whose value is a token (an
 * embedded token for another API, e.g. `ledger_token`) is not enumerable, so JSON.stringify, pino and
 * util.inspect leave it out and an identity stays safe to log. (A token nested deeper, inside an object claim, is
 * not looked for.)
 */
function claimsOf<T extends object>(all: T): T {
  const claims = {} as T;
  for (const [name, value] of Object.entries(all)) {
    Object.defineProperty(claims, name, {
      value,
      enumerable: !(typeof value === "string" && isTokenShaped(value)),
      writable: false,
      configurable: false,
    });
  }
  return Object.freeze(claims);
}

/** Builds an {@link Identity} from a verified payload; binds the token for API-to-API calls. */
export function identityFromPayload<C extends object>(
  jwt: string,
  payload: JWTPayload,
  typed: C,
): Identity<C> {
  const audience =
    payload.aud === undefined ? [] : typeof payload.aud === "string" ? [payload.aud] : payload.aud;
  const clientId = payload["client_id"];
  const identity: Identity<C> = Object.freeze({
    sub: payload.sub ?? "",
    clientId: typeof clientId === "string" ? clientId : undefined,
    scopes: Object.freeze([...parseScopes({ scope: payload["scope"], scp: payload["scp"] })]),
    issuer: payload.iss ?? "",
    audience: Object.freeze([...audience]),
    expiresAt: payload.exp ?? 0,
    issuedAt: payload.iat,
    actor: parseActor(payload["act"]),
    tokenFingerprint: fingerprintToken(jwt),
    claims: claimsOf({ ...payload, ...typed }),
  });
  bindToken(identity, jwt);
  return identity;
}

/**
 * Creates the verifier an API uses for every request. Keys are fetched on first use and cached; an unknown `kid`
 * triggers a refetch at most once per `jwksCooldownMs`. Throws `PG_SDK_CONFIG_INVALID` for bad options.
 *
 * @example Tokens forwarded by the gateway in phantom mode (signed by the authorization server)
 * ```ts
 * import { createInternalJwtVerifier } from "phantomgate/sdk";
 *
 * const verifier = createInternalJwtVerifier({
 *   issuer: "http://127.0.0.1:9000",
 *   audience: "urn:phantomgate:billing",
 *   jwksUri: "http://127.0.0.1:9000/jwks",
 *   algorithms: ["ES256"],
 * });
 * const identity = await verifier.verifyAuthorization(request.headers.authorization);
 * ```
 *
 * @example Tokens minted by the gateway (mint mode), with a typed custom claim
 * ```ts
 * import { z } from "zod";
 *
 * const verifier = createInternalJwtVerifier({
 *   issuer: "urn:phantomgate:gateway",
 *   audience: "video-api",
 *   jwksUri: "http://127.0.0.1:9901/.well-known/jwks.json",
 *   claims: z.object({ tenant: z.string() }),
 * });
 * const { claims } = await verifier.verify(jwt);
 * claims.tenant; // string
 * ```
 */
export function createInternalJwtVerifier<C extends object = Readonly<Record<string, unknown>>>(
  options: InternalJwtVerifierOptions<C>,
): InternalJwtVerifier<C> {
  parseVerifierOptions("createInternalJwtVerifier", { ...options });
  const audience = Object.freeze(
    typeof options.audience === "string" ? [options.audience] : [...options.audience],
  );
  const checker = createJwtChecker(options);
  const claimsSchema = options.claims;

  async function verify(jwt: string): Promise<Identity<C>> {
    let payload: JWTPayload;
    try {
      payload = await checker.check(jwt, audience);
    } catch (error) {
      if (!(error instanceof JwtCheckError)) throw error;
      throw new SdkError(INBOUND_CODES[error.failure], error.reason);
    }
    let typed = {} as C;
    if (claimsSchema !== undefined) {
      const parsed = claimsSchema.safeParse(payload);
      if (!parsed.success) {
        // Paths only: zod messages could quote claim values.
        const paths = parsed.error.issues.map((issue) => issue.path.join(".") || "(root)").join(", ");
        throw new SdkError("PG_SDK_TOKEN_INVALID", `claims fail the API's schema at ${paths}`);
      }
      typed = parsed.data;
    }
    return identityFromPayload(jwt, payload, typed);
  }

  return {
    issuer: options.issuer,
    audience,
    verify,
    // Through a promise, so a bad header rejects like every other failure instead of throwing synchronously.
    verifyAuthorization: (header) => Promise.resolve(header).then(bearerTokenOf).then(verify),
    close: () => checker.close(),
  };
}
