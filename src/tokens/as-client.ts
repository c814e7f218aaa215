// The gateway's client for one authorization server: endpoint resolution (explicit, else discovery), client
// authentication, token introspection (RFC 7662 JSON, plain JWT, RFC 9701), token exchange (RFC 8693) and JWKS.
// Every call is bounded in time and size; every failure to get a trustworthy answer is PG_ERR_AS_UNAVAILABLE
// (fail closed), while "this token is not active" is an ordinary result so that it can be negatively cached.
import { randomUUID } from "node:crypto";
import {
  decodeJwt,
  errors as joseErrors,
  importJWK,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from "jose";
import { Agent, type Dispatcher } from "undici";
import { z } from "zod";
import { GatewayError } from "../errors/catalogue.ts";
import type { CompiledAuthServer, IntrospectionResponse } from "../snapshot/snapshot.ts";
import type { Clock } from "./clock.ts";
import {
  checkFactsTimes,
  factsFromClaims,
  notBearerReason,
  introspectionResponseSchema,
  parseScopes,
  tokenClaimsSchema,
  withoutNulls,
  type InactiveToken,
  type IntrospectionResult,
} from "./facts.ts";
import {
  createJwksKeySource,
  describeJwtError,
  isAccessTokenTyp,
  verifyJwt,
  type JwksKeySource,
} from "./jwks.ts";
import {
  noAuthServerMetrics,
  type AuthServerEndpoint,
  type AuthServerMetrics,
  type AuthServerOutcome,
} from "./metrics.ts";

/** Largest AS response body the gateway reads; anything bigger is treated as a broken AS. */
export const MAX_AS_RESPONSE_BYTES = 64 * 1024;

/** Lifetime of a `private_key_jwt` client assertion: long enough for clock skew, short enough to be useless later. */
const CLIENT_ASSERTION_TTL_SECONDS = 60;

const DISCOVERY_BACKOFF_INITIAL_MS = 1_000;
const DISCOVERY_BACKOFF_MAX_MS = 60_000;

const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
/** Issued token types the gateway forwards: an access token, or a JWT (an access token in JWT form). */
const FORWARDABLE_TOKEN_TYPES: ReadonlySet<string> = new Set([
  ACCESS_TOKEN_TYPE,
  "urn:ietf:params:oauth:token-type:jwt",
]);
const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/** Oldest `iat` accepted on an RFC 9701 signed introspection response, beyond the clock skew. */
const SIGNED_RESPONSE_MAX_AGE_SECONDS = 60;

const ACCEPT: Readonly<Record<IntrospectionResponse, string>> = {
  json: "application/json",
  jwt: "application/jwt",
  "token-introspection+jwt": "application/token-introspection+jwt",
};

export interface AuthServerClientDeps {
  /** Carries every call to this AS (a keep-alive pool, see {@link createAuthServerDispatcher}). */
  readonly dispatcher: Dispatcher;
  readonly clock: Clock;
  readonly metrics?: AuthServerMetrics;
  /**
   * Calls to this AS that may be waiting for a connection or under way at once ({@link DEFAULT_MAX_PENDING_AS_CALLS}
   * when absent). One more fails at once with PG_ERR_AS_UNAVAILABLE instead of queueing behind the others.
   */
  readonly maxPendingCalls?: number | undefined;
  /**
   * Whether a token issued by exchange must be a JWT this AS signed for the audience asked for (default true,
   * as the gateway needs). The SDK turns it off when it was given no way to the AS's keys: the API receiving the
   * token verifies it then.
   */
  readonly verifyIssuedTokens?: boolean;
}

/**
 * Calls one AS client lets wait or run at once by default: twice the pool's 32 connections. Beyond the pool, calls
 * queue, and a call's `responseMs` runs from the moment it is queued: a long queue in front of a slow AS means
 * calls that reach it with no time left, are cut, and take their connection with them, while every request waits
 * `responseMs` for a 503. With at most one call waiting per connection, a queued call waits about one answer of
 * the AS, and a flood of unknown tokens gets its excess answered 503 at once.
 */
export const DEFAULT_MAX_PENDING_AS_CALLS = 64;

/** Where the gateway talks to the AS. */
export interface AuthServerEndpoints {
  readonly introspection?: string;
  readonly token?: string;
  readonly jwks?: string;
}

/** What the gateway asks for in a token exchange. */
export interface ExchangeRequest {
  /** RFC 8693 `audience` of the requested token. */
  readonly audience: string;
  /** Requested scopes; empty omits `scope` (the AS's default for the audience). */
  readonly scopes: readonly string[];
}

/** A token the AS issued in exchange. */
export interface ExchangedToken {
  readonly active: true;
  readonly accessToken: string;
  /** Epoch seconds, from `expires_in` or else the JWT's `exp`; undefined when the AS said neither. */
  readonly expiresAt: number | undefined;
  /** Granted scopes (the requested ones when the AS did not list them, as RFC 8693 allows). */
  readonly scopes: readonly string[];
}

/** The outcome of a token exchange: a token, or `invalid_grant` (the subject token is not active). */
export type ExchangeResult = ExchangedToken | InactiveToken;

/** The gateway's client for one authorization server. */
export interface AuthServerClient {
  readonly server: CompiledAuthServer;
  /** The AS's signing keys (for JWT introspection responses and `jwt` mode). */
  readonly keys: JwksKeySource;
  /** Explicit endpoints, completed from discovery when enabled (fetched once, retried with backoff). */
  resolveEndpoints(): Promise<AuthServerEndpoints>;
  /** Asks the AS about a token; the response is verified (signed responses) and parsed into facts. */
  introspectToken(token: string, responseType?: IntrospectionResponse): Promise<IntrospectionResult>;
  /** RFC 8693 exchange of `token` (an access token) for a token for `audience` with `scopes`. */
  exchangeToken(token: string, request: ExchangeRequest): Promise<ExchangeResult>;
}

/**
 * Creates a keep-alive pool for one AS, with its connect timeout. The caller owns it (`close()` on removal).
 * Per-request deadlines are applied by the client itself, so a shared dispatcher works too.
 */
export function createAuthServerDispatcher(server: CompiledAuthServer): Agent {
  return new Agent({
    connect: { timeout: server.timeouts.connectMs },
    keepAliveTimeout: 30_000,
    connections: 32,
  });
}

interface Target {
  readonly href: string;
  readonly origin: string;
  readonly path: string;
}

interface AsResponse {
  readonly status: number;
  /** Lower-case media type without parameters, "" when absent. */
  readonly mediaType: string;
  readonly text: string;
  readonly startedMs: number;
}

const discoverySchema = z.looseObject({
  issuer: z.string(),
  introspection_endpoint: z.string().optional(),
  token_endpoint: z.string().optional(),
  jwks_uri: z.string().optional(),
});

const oauthErrorSchema = z.looseObject({ error: z.string() });

/** RFC 6750 §2.1 b64token. */
const b64token = /^[A-Za-z0-9\-._~+/]+=*$/;

const exchangeResponseSchema = z.looseObject({
  access_token: z.string().min(1),
  token_type: z.string(),
  issued_token_type: z.string().optional(),
  expires_in: z.number().positive().optional(),
  scope: z.string().optional(),
});

const privateJwkSchema = z.looseObject({
  kty: z.string(),
  d: z.string().min(1),
  kid: z.string().optional(),
  alg: z.string().optional(),
  crv: z.string().optional(),
});

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined and base64-encoded. */
function formUrlEncode(value: string): string {
  return new URLSearchParams([["", value]]).toString().slice(1);
}

function parseTarget(href: string, what: string): Target {
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    throw new GatewayError("PG_ERR_AS_UNAVAILABLE", `${what} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new GatewayError("PG_ERR_AS_UNAVAILABLE", `${what} is not an http(s) URL`);
  }
  return { href: url.href, origin: url.origin, path: `${url.pathname}${url.search}` };
}

function mediaTypeOf(header: string | string[] | undefined): string {
  const value = Array.isArray(header) ? header[0] : header;
  return (value ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
}

/** An OAuth error code fit for an internal reason: RFC 6749 restricts them to this alphabet. */
function oauthErrorCode(text: string): string {
  try {
    const parsed = oauthErrorSchema.safeParse(JSON.parse(text));
    if (parsed.success && /^[\w.-]{1,64}$/.test(parsed.data.error)) return parsed.data.error;
  } catch {
    // Not JSON: report the status only.
  }
  return "unknown";
}

function signingAlgorithmFor(jwk: z.infer<typeof privateJwkSchema>): string {
  if (jwk.alg !== undefined) return jwk.alg;
  if (jwk.kty === "EC") return jwk.crv === "P-384" ? "ES384" : jwk.crv === "P-521" ? "ES512" : "ES256";
  if (jwk.kty === "OKP") return "EdDSA";
  return "RS256";
}

/** The `exp` of a JWT not verified here (the API that receives it verifies it), for reuse only. */
function unverifiedExp(token: string): number | undefined {
  try {
    return decodeJwt(token).exp;
  } catch {
    return undefined;
  }
}

/** Creates the client for one AS. Nothing is fetched until the first call. */
export function createAuthServerClient(
  server: CompiledAuthServer,
  deps: AuthServerClientDeps,
): AuthServerClient {
  const { dispatcher, clock } = deps;
  const metrics = deps.metrics ?? noAuthServerMetrics;
  const { responseMs } = server.timeouts;
  const maxPendingCalls = deps.maxPendingCalls ?? DEFAULT_MAX_PENDING_AS_CALLS;
  /** Calls waiting for a connection or under way. */
  let pendingCalls = 0;

  // ---- transport -------------------------------------------------------------------------------------------

  /** Counts a call's outcome; a failure also throws a GatewayError whose reason is `failure`. */
  function record(
    endpoint: AuthServerEndpoint,
    outcome: AuthServerOutcome,
    startedMs: number,
    failure?: string,
  ): void {
    metrics.observeRequest(server.id, endpoint, outcome, (performance.now() - startedMs) / 1000, failure);
  }

  async function readBody(
    body: Dispatcher.ResponseData["body"],
    endpoint: AuthServerEndpoint,
  ): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_AS_RESPONSE_BYTES) {
        body.destroy();
        throw new GatewayError(
          "PG_ERR_AS_UNAVAILABLE",
          `${endpoint} response exceeds ${MAX_AS_RESPONSE_BYTES} bytes`,
        );
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, size).toString("utf8");
  }

  /** One HTTP exchange with the AS, bounded by `responseMs` from dispatch to the last body byte. */
  async function send(
    endpoint: AuthServerEndpoint,
    target: Target,
    method: "GET" | "POST",
    headers: Record<string, string>,
    body?: string,
  ): Promise<AsResponse> {
    const startedMs = performance.now();
    // JWKS fetches are not held to the bound: they are few (one at a time, within the cooldown), and a refused one
    // would count as a key-endpoint failure and refuse verifications for the whole cooldown.
    if (endpoint !== "jwks" && pendingCalls >= maxPendingCalls) {
      const reason = `${endpoint}: not sent, ${maxPendingCalls} calls to the authorization server already waiting or under way`;
      record(endpoint, "overloaded", startedMs, reason);
      throw new GatewayError("PG_ERR_AS_UNAVAILABLE", reason);
    }
    pendingCalls += 1;
    const signal = AbortSignal.timeout(responseMs);
    try {
      const response = await dispatcher.request({
        origin: target.origin,
        path: target.path,
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        signal,
        headersTimeout: responseMs,
        bodyTimeout: responseMs,
      });
      const declared = Number(response.headers["content-length"]);
      if (declared > MAX_AS_RESPONSE_BYTES) {
        response.body.destroy();
        throw new GatewayError(
          "PG_ERR_AS_UNAVAILABLE",
          `${endpoint} response exceeds ${MAX_AS_RESPONSE_BYTES} bytes`,
        );
      }
      const text = await readBody(response.body, endpoint);
      return {
        status: response.statusCode,
        mediaType: mediaTypeOf(response.headers["content-type"]),
        text,
        startedMs,
      };
    } catch (error) {
      if (error instanceof GatewayError) {
        record(endpoint, "invalid_response", startedMs, error.reason);
        throw error;
      }
      const code = (error as { code?: unknown } | null)?.code;
      const timedOut =
        signal.aborted ||
        code === "UND_ERR_CONNECT_TIMEOUT" ||
        code === "UND_ERR_HEADERS_TIMEOUT" ||
        code === "UND_ERR_BODY_TIMEOUT";
      const reason = timedOut
        ? `${endpoint}: no answer within ${responseMs} ms`
        : `${endpoint}: network error (${typeof code === "string" ? code : "unknown"})`;
      record(endpoint, timedOut ? "timeout" : "network_error", startedMs, reason);
      // The underlying error is not attached: it is a transport error, and keeping causes out guarantees no
      // request body (which holds the token) can reach a log through it.
      throw new GatewayError("PG_ERR_AS_UNAVAILABLE", reason);
    } finally {
      pendingCalls -= 1;
    }
  }

  /** Fails closed on anything but a 2xx the caller can parse; records the outcome. */
  function failResponse(endpoint: AuthServerEndpoint, response: AsResponse): never {
    if (response.status >= 400 && response.status < 500) {
      const reason = `${endpoint} rejected the gateway's request: HTTP ${response.status} ${oauthErrorCode(response.text)}`;
      record(endpoint, "rejected", response.startedMs, reason);
      throw new GatewayError("PG_ERR_AS_UNAVAILABLE", reason);
    }
    const reason = `${endpoint} answered HTTP ${response.status}`;
    record(endpoint, "http_error", response.startedMs, reason);
    throw new GatewayError("PG_ERR_AS_UNAVAILABLE", reason);
  }

  function invalidResponse(endpoint: AuthServerEndpoint, response: AsResponse, what: string): never {
    const reason = `${endpoint} response is invalid: ${what}`;
    record(endpoint, "invalid_response", response.startedMs, reason);
    throw new GatewayError("PG_ERR_AS_UNAVAILABLE", reason);
  }

  function parseJson(endpoint: AuthServerEndpoint, response: AsResponse): unknown {
    try {
      return JSON.parse(response.text) as unknown;
    } catch {
      return invalidResponse(endpoint, response, "not JSON");
    }
  }

  // ---- endpoints ------------------------------------------------------------------------------------------

  const explicit: AuthServerEndpoints = {
    ...(server.endpoints.introspection === undefined
      ? {}
      : { introspection: server.endpoints.introspection }),
    ...(server.endpoints.token === undefined ? {} : { token: server.endpoints.token }),
    ...(server.endpoints.jwks === undefined ? {} : { jwks: server.endpoints.jwks }),
  };
  let resolved: AuthServerEndpoints | undefined = server.discovery ? undefined : explicit;
  let discovering: Promise<AuthServerEndpoints> | undefined;
  let discoveryFailures = 0;
  let discoveryRetryAtMs = 0;

  async function discover(): Promise<AuthServerEndpoints> {
    const issuer = server.issuer.replace(/\/+$/, "");
    const target = parseTarget(`${issuer}/.well-known/openid-configuration`, "discovery URL");
    const response = await send("discovery", target, "GET", { accept: "application/json" });
    if (response.status !== 200) failResponse("discovery", response);
    const parsed = discoverySchema.safeParse(parseJson("discovery", response));
    if (!parsed.success) invalidResponse("discovery", response, "not OpenID provider metadata");
    // RFC 8414 §3.3: metadata naming another issuer must not be used (mix-up defence).
    if (parsed.data.issuer !== server.issuer) invalidResponse("discovery", response, "issuer mismatch");
    record("discovery", "ok", response.startedMs);
    const found = parsed.data;
    return {
      ...(found.introspection_endpoint === undefined ? {} : { introspection: found.introspection_endpoint }),
      ...(found.token_endpoint === undefined ? {} : { token: found.token_endpoint }),
      ...(found.jwks_uri === undefined ? {} : { jwks: found.jwks_uri }),
      ...explicit,
    };
  }

  function resolveEndpoints(): Promise<AuthServerEndpoints> {
    if (resolved !== undefined) return Promise.resolve(resolved);
    if (discovering !== undefined) return discovering;
    if (clock.now() < discoveryRetryAtMs) {
      return Promise.reject(
        new GatewayError("PG_ERR_AS_UNAVAILABLE", "discovery failed recently; backing off"),
      );
    }
    discovering = discover().then(
      (endpoints) => {
        resolved = endpoints;
        discoveryFailures = 0;
        discovering = undefined;
        return endpoints;
      },
      (error: unknown) => {
        discoveryFailures += 1;
        const backoffMs = Math.min(
          DISCOVERY_BACKOFF_INITIAL_MS * 2 ** (discoveryFailures - 1),
          DISCOVERY_BACKOFF_MAX_MS,
        );
        discoveryRetryAtMs = clock.now() + backoffMs;
        discovering = undefined;
        throw error;
      },
    );
    return discovering;
  }

  const targets = new Map<string, Target>();

  async function endpointFor(name: keyof AuthServerEndpoints): Promise<Target> {
    const href = (await resolveEndpoints())[name];
    if (href === undefined)
      throw new GatewayError("PG_ERR_AS_UNAVAILABLE", `no ${name} endpoint configured or discovered`);
    let target = targets.get(href);
    if (target === undefined) {
      target = parseTarget(href, `${name} endpoint`);
      targets.set(href, target);
    }
    return target;
  }

  // ---- client authentication ------------------------------------------------------------------------------

  const basicAuthorization =
    server.client.method === "client_secret_basic"
      ? `Basic ${Buffer.from(`${formUrlEncode(server.client.id)}:${formUrlEncode(server.client.secret)}`).toString("base64")}`
      : undefined;
  let assertionKey:
    Promise<{ key: CryptoKey | Uint8Array; alg: string; kid: string | undefined }> | undefined;

  function loadAssertionKey(): Promise<{
    key: CryptoKey | Uint8Array;
    alg: string;
    kid: string | undefined;
  }> {
    assertionKey ??= (async () => {
      let jwk: z.infer<typeof privateJwkSchema>;
      try {
        jwk = privateJwkSchema.parse(JSON.parse(server.client.secret));
      } catch {
        throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "private_key_jwt secret is not a private JWK");
      }
      const alg = signingAlgorithmFor(jwk);
      try {
        return { key: await importJWK(jwk as JWK, alg), alg, kid: jwk.kid };
      } catch {
        throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "private_key_jwt key cannot be imported");
      }
    })();
    // A bad key stays bad until the snapshot changes; keep the rejection cached rather than re-parsing per call.
    return assertionKey;
  }

  /** Adds the gateway's client credentials to a token/introspection request; returns extra headers. */
  async function authenticateClient(params: URLSearchParams): Promise<Record<string, string>> {
    switch (server.client.method) {
      case "client_secret_basic":
        return basicAuthorization === undefined ? {} : { authorization: basicAuthorization };
      case "client_secret_post":
        params.set("client_id", server.client.id);
        params.set("client_secret", server.client.secret);
        return {};
      case "private_key_jwt": {
        const { key, alg, kid } = await loadAssertionKey();
        const nowSeconds = Math.floor(clock.now() / 1000);
        // `aud` is the issuer identifier, the value current guidance (RFC 7523bis) recommends and servers
        // accept for every endpoint; a fresh `jti` per assertion so the AS can reject replays.
        const assertion = await new SignJWT({ jti: randomUUID() })
          .setProtectedHeader(kid === undefined ? { alg } : { alg, kid })
          .setIssuer(server.client.id)
          .setSubject(server.client.id)
          .setAudience(server.issuer)
          .setIssuedAt(nowSeconds)
          .setExpirationTime(nowSeconds + CLIENT_ASSERTION_TTL_SECONDS)
          .sign(key);
        params.set("client_id", server.client.id);
        params.set("client_assertion_type", CLIENT_ASSERTION_TYPE);
        params.set("client_assertion", assertion);
        return {};
      }
    }
  }

  async function post(endpoint: "introspection" | "token", params: URLSearchParams, accept: string) {
    const target = await endpointFor(endpoint);
    const authHeaders = await authenticateClient(params);
    return send(
      endpoint,
      target,
      "POST",
      { ...authHeaders, accept, "content-type": "application/x-www-form-urlencoded" },
      params.toString(),
    );
  }

  // ---- JWKS -----------------------------------------------------------------------------------------------

  const keys = createJwksKeySource({
    clock,
    cooldownMs: server.jwksCooldownMs,
    async fetchJwks() {
      const target = await endpointFor("jwks");
      const response = await send("jwks", target, "GET", {
        accept: "application/jwk-set+json, application/json",
      });
      if (response.status !== 200) failResponse("jwks", response);
      const document = parseJson("jwks", response);
      record("jwks", "ok", response.startedMs);
      return document;
    },
  });

  const verifyOptions = {
    issuer: server.issuer,
    algorithms: server.allowedAlgorithms,
    clockSkewSeconds: server.clockSkewSeconds,
    clock,
  } as const;

  // ---- introspection --------------------------------------------------------------------------------------

  function inactive(response: AsResponse, reason: string): InactiveToken {
    record("introspection", "inactive", response.startedMs);
    return { active: false, reason };
  }

  /** An RFC 7662 answer, or the AS is answering something else. */
  function introspectionDocument(
    response: AsResponse,
    document: unknown,
  ): z.infer<typeof introspectionResponseSchema> {
    const parsed = introspectionResponseSchema.safeParse(withoutNulls(document));
    if (!parsed.success) invalidResponse("introspection", response, "not an RFC 7662 response");
    return parsed.data;
  }

  /**
   * The facts of a token the AS called active, after the checks its word does not cover: a bearer token, not a
   * sender-constrained one, and within its times. `upstreamJwt` is the AS-signed JWT, when it sent one.
   */
  function activeFacts(
    response: AsResponse,
    claims: z.infer<typeof tokenClaimsSchema>,
    upstreamJwt?: string,
  ): IntrospectionResult {
    const notBearer = notBearerReason(claims);
    if (notBearer !== undefined) return inactive(response, notBearer);
    const checked = checkFactsTimes(
      factsFromClaims(claims, upstreamJwt),
      clock.now(),
      server.clockSkewSeconds,
    );
    if (!checked.active) {
      return {
        ...inactive(response, checked.reason),
        ...(checked.validFromMs === undefined ? {} : { validFromMs: checked.validFromMs }),
      };
    }
    record("introspection", "ok", response.startedMs);
    return checked;
  }

  function factsFromIntrospectionJson(response: AsResponse, document: unknown): IntrospectionResult {
    const parsed = introspectionDocument(response, document);
    if (!parsed.active) return inactive(response, "inactive");
    return activeFacts(response, parsed);
  }

  /** `Accept: application/jwt`: the body is the JWT for internal APIs, signed by the AS. */
  async function factsFromJwtResponse(response: AsResponse): Promise<IntrospectionResult> {
    // Inactive tokens get the plain RFC 7662 answer: there is no JWT to sign for them. That unsigned answer can
    // only ever say "inactive": facts of an active token are taken from a verified JWT and nothing else.
    if (response.mediaType === "application/json") {
      const document = parseJson("introspection", response);
      if (introspectionDocument(response, document).active)
        invalidResponse("introspection", response, "an active token answered without a signed JWT");
      return inactive(response, "inactive");
    }
    if (response.mediaType !== "application/jwt")
      invalidResponse("introspection", response, "unexpected media type");
    const jwt = response.text.trim();
    let verified;
    try {
      verified = await verifyJwt(jwt, keys, { ...verifyOptions, requiredClaims: ["exp"] });
    } catch (error) {
      if (error instanceof GatewayError) throw error;
      // An expired JWT is the AS telling us the token is expired, not a broken AS.
      if (error instanceof joseErrors.JWTExpired) return inactive(response, "expired");
      // Likewise a signed answer for a token whose `nbf` is still ahead: refused as in a JSON answer, until then.
      if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === "nbf") {
        const nbf = error.payload["nbf"];
        return {
          ...inactive(response, "not yet valid"),
          ...(typeof nbf === "number" ? { validFromMs: (nbf - server.clockSkewSeconds) * 1000 } : {}),
        };
      }
      return invalidResponse("introspection", response, `JWT rejected (${describeJwtError(error)})`);
    }
    if (!isAccessTokenTyp(verified.protectedHeader.typ, server.requireAccessTokenTyp === true))
      invalidResponse("introspection", response, "unexpected JWT typ");
    const claims = tokenClaimsSchema.safeParse(withoutNulls(verified.payload));
    if (!claims.success) invalidResponse("introspection", response, "JWT claims malformed");
    if (claims.data["active"] === false) return inactive(response, "inactive");
    return activeFacts(response, claims.data, jwt);
  }

  /**
   * RFC 9701: a JWT `typ: token-introspection+jwt`, `aud` = our client id, the answer in `token_introspection`.
   * The JWT names neither the token asked about nor the request, so it must be fresh: an answer signed more than
   * a minute ago (beyond the skew) is refused, which leaves a replayed answer for another token that long at most.
   */
  async function factsFromSignedIntrospection(response: AsResponse): Promise<IntrospectionResult> {
    if (response.mediaType !== "application/token-introspection+jwt") {
      invalidResponse("introspection", response, "unexpected media type");
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await verifyJwt(response.text.trim(), keys, {
        ...verifyOptions,
        audience: server.client.id,
        typ: "token-introspection+jwt",
        requiredClaims: ["iat"],
        maxAgeSeconds: SIGNED_RESPONSE_MAX_AGE_SECONDS,
      }));
    } catch (error) {
      if (error instanceof GatewayError) throw error;
      return invalidResponse(
        "introspection",
        response,
        `signed response rejected (${describeJwtError(error)})`,
      );
    }
    return factsFromIntrospectionJson(response, payload["token_introspection"]);
  }

  async function introspectToken(
    token: string,
    responseType: IntrospectionResponse = server.introspectionResponse,
  ): Promise<IntrospectionResult> {
    const params = new URLSearchParams({ token, token_type_hint: "access_token" });
    const response = await post("introspection", params, ACCEPT[responseType]);
    // Some servers refuse a token they do not introspect (oidc-provider: its own JWTs) instead of answering
    // `active: false`: that is about the client's token, not the gateway, so it is a 401, cached negatively.
    if (response.status === 400) {
      const code = oauthErrorCode(response.text);
      if (code === "unsupported_token_type" || code === "invalid_token")
        return inactive(response, `introspection refused the token: ${code}`);
    }
    if (response.status !== 200) failResponse("introspection", response);
    switch (responseType) {
      case "json":
        return factsFromIntrospectionJson(response, parseJson("introspection", response));
      case "jwt":
        return factsFromJwtResponse(response);
      case "token-introspection+jwt":
        return factsFromSignedIntrospection(response);
    }
  }

  // ---- token exchange -------------------------------------------------------------------------------------

  async function exchangeToken(token: string, request: ExchangeRequest): Promise<ExchangeResult> {
    const params = new URLSearchParams({
      grant_type: TOKEN_EXCHANGE_GRANT,
      subject_token: token,
      subject_token_type: ACCESS_TOKEN_TYPE,
      requested_token_type: ACCESS_TOKEN_TYPE,
      audience: request.audience,
    });
    if (request.scopes.length > 0) params.set("scope", request.scopes.join(" "));
    const response = await post("token", params, "application/json");
    // RFC 8693 §2.2.2: a subject_token that is invalid or refused by policy is `invalid_request`; many ASes say
    // `invalid_grant`. Either way the caller asks introspection whether the token itself is still active.
    const refusal = response.status === 400 ? oauthErrorCode(response.text) : undefined;
    if (refusal === "invalid_grant" || refusal === "invalid_request") {
      record("token", "inactive", response.startedMs);
      return { active: false, reason: `exchange refused: ${refusal}` };
    }
    if (response.status !== 200) failResponse("token", response);
    const parsed = exchangeResponseSchema.safeParse(parseJson("token", response));
    if (!parsed.success) invalidResponse("token", response, "not an RFC 8693 response");
    // What goes upstream as a Bearer token must be an access token (in JWT form or not): never a refresh token,
    // an ID token or an assertion the AS chose to issue instead.
    const issued = parsed.data.issued_token_type;
    if (issued !== undefined && !FORWARDABLE_TOKEN_TYPES.has(issued))
      invalidResponse("token", response, `issued a ${issued}, not an access token`);
    if (parsed.data.token_type.toLowerCase() !== "bearer")
      invalidResponse("token", response, "token_type is not Bearer");
    // Sent upstream as `Authorization: Bearer <token>`: RFC 6750 §2.1's b64token, nothing a header could split.
    if (!b64token.test(parsed.data.access_token))
      invalidResponse("token", response, "access_token is not an RFC 6750 b64token");
    // The issued token goes upstream as the internal credential, so it is held to what the gateway verifies
    // everywhere else: a JWT this AS signed (allowed algorithms, its JWKS), issued by it, for the audience asked
    // for, unexpired, an access token by its `typ`. An opaque token, or one signed by another key, is refused.
    let payload: JWTPayload = {};
    if (deps.verifyIssuedTokens !== false) {
      try {
        const verified = await verifyJwt(parsed.data.access_token, keys, {
          ...verifyOptions,
          audience: request.audience,
          requiredClaims: ["exp"],
        });
        payload = verified.payload;
        if (!isAccessTokenTyp(verified.protectedHeader.typ, server.requireAccessTokenTyp === true))
          invalidResponse("token", response, "issued JWT is not an access token (typ)");
      } catch (error) {
        if (error instanceof GatewayError) throw error;
        return invalidResponse("token", response, `issued token rejected (${describeJwtError(error)})`);
      }
    }
    const granted =
      parsed.data.scope === undefined ? [...request.scopes] : parsed.data.scope.split(" ").filter(Boolean);
    // The point of the exchange is narrowing: a token wider than asked for is not forwarded, whether the answer or
    // the token says so (in `scope` or `scp`: neither may go beyond what was asked for).
    const carried = [...parseScopes({ scope: payload["scope"] }), ...parseScopes({ scp: payload["scp"] })];
    if (
      request.scopes.length > 0 &&
      [...granted, ...carried].some((scope) => !request.scopes.includes(scope))
    ) {
      invalidResponse("token", response, "granted scopes exceed the requested ones");
    }
    const expiresAt =
      parsed.data.expires_in === undefined
        ? (payload.exp ?? unverifiedExp(parsed.data.access_token))
        : Math.min(Math.floor(clock.now() / 1000) + parsed.data.expires_in, payload.exp ?? Infinity);
    record("token", "ok", response.startedMs);
    return { active: true, accessToken: parsed.data.access_token, expiresAt, scopes: Object.freeze(granted) };
  }

  return { server, keys, resolveEndpoints, introspectToken, exchangeToken };
}
