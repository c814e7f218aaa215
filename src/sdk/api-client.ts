// The API-to-API client: calls another internal API with the right token for its security domain.
// - exchange: RFC 8693 at the authorization server for the callee's audience and the fewest scopes it needs;
//   cached per caller token until shortly before expiry, concurrent misses share one exchange;
// - embed: forward the nested token the authorization server put in a claim of the caller's token for the callee,
//   after checking it (signature, issuer, audience, expiry, same subject);
// - share: forward the caller's own token, only to a service of the same security domain.
// Every call, sent or refused, leaves one audit record with token fingerprints only.
import type { JSONWebKeySet } from "jose";
import type { IncomingHttpHeaders } from "node:http";
import type { Duplex } from "node:stream";
import type { Dispatcher } from "undici";
import { z } from "zod";
import { GatewayError } from "../errors/catalogue.ts";
import {
  compiledAuthServerSchema,
  type ClientAuthMethod,
  type CompiledAuthServer,
  type JwsAlgorithm,
} from "../snapshot/snapshot.ts";
import { createAuthServerClient, type AuthServerClient } from "../tokens/as-client.ts";
import { systemClock, type Clock } from "../tokens/clock.ts";
import { parseScopes } from "../tokens/facts.ts";
import { fingerprintToken } from "../tokens/fingerprint.ts";
import { cachePurpose, createTokenCache, type CacheFill } from "../tokens/token-cache.ts";
import {
  createJsonLineAuditSink,
  type ApiCallAuditRecord,
  type AuditSink,
  type TokenPattern,
} from "./audit.ts";
import { SdkError, type SdkErrorCode } from "./errors.ts";
import { tokenOf, type Identity } from "./identity.ts";
import { dispatcherOrOwn } from "./keys.ts";
import type { ScopeChecker } from "./scopes.ts";
import { createJwtChecker, JwtCheckError, parseVerifierOptions, type JwtChecker } from "./verify.ts";

/**
 * A security domain: a set of APIs that trust the same tokens. Its `audiences` are the `aud` values such tokens
 * carry; the first is the one requested when exchanging a token into the domain.
 */
export interface SecurityDomain {
  readonly audiences: readonly [string, ...string[]];
}

/** An API this API calls. */
export interface ServiceDefinition<D extends string = string> {
  /** Base URL (`http(s)://host:port[/base]`); request paths are appended. */
  readonly url: string;
  /** The callee's security domain (a key of `domains`). */
  readonly domain: D;
  /** For `embed`: the claim of the caller's token holding the nested token for this service. */
  readonly embeddedTokenClaim?: string;
}

/** The authorization server, for `exchange` (token endpoint, client credentials) and `embed` (its keys). */
export interface ApiClientAuthServer {
  readonly issuer: string;
  /** RFC 8693 token endpoint; default: from the issuer's OpenID discovery document. */
  readonly tokenEndpoint?: string;
  /** Keys for checking embedded tokens (or `jwks`). */
  readonly jwksUri?: string;
  readonly jwks?: JSONWebKeySet;
  /** This API's client at the AS; needed for `exchange`. */
  readonly clientId?: string;
  /** Client secret, or a private JWK as JSON for `private_key_jwt`. */
  readonly clientSecret?: string;
  /** Default `client_secret_basic`. */
  readonly clientAuthMethod?: ClientAuthMethod;
  /** Allow-list for embedded tokens. Default ES256, RS256, PS256, EdDSA. */
  readonly algorithms?: readonly JwsAlgorithm[];
  /** Default 30. */
  readonly clockSkewSeconds?: number;
  /** Embedded tokens only with `typ: at+jwt` (RFC 9068), not `JWT` or none. Default false. */
  readonly requireAccessTokenTyp?: boolean;
  /** Deadline of one call to the AS. Default 2000. */
  readonly timeoutMs?: number;
}

/** Options of {@link createApiClient}. `D` names the security domains, `S` the services. */
export interface ApiClientOptions<S extends string, D extends string> {
  /** This API's name, for audit records. */
  readonly service: string;
  /** This API's security domain. */
  readonly domain: NoInfer<D>;
  /** Every security domain this API deals with. */
  readonly domains: Readonly<Record<D, SecurityDomain>>;
  /** The APIs this API calls, by name. */
  readonly services: Readonly<Record<S, ServiceDefinition<NoInfer<D>>>>;
  readonly authServer?: ApiClientAuthServer;
  /** Scope implications, so `exchange` asks for the fewest held scopes that satisfy the callee's needs. */
  readonly scopes?: ScopeChecker;
  /** Carries calls to services and the AS. Default: a keep-alive pool owned (and closed) by the client. */
  readonly dispatcher?: Dispatcher;
  /** Default: the system clock. */
  readonly clock?: Clock;
  /** Where audit records go; default JSON lines on stdout; `false` turns auditing off. */
  readonly audit?: AuditSink | false;
  /**
   * Deadline of one call to a service, to the response headers; after them, the longest pause between two chunks
   * of the body (undici's `BodyTimeoutError` while you read it). Default 10000.
   */
  readonly requestTimeoutMs?: number;
  /**
   * Most bytes of a service's response body (as received, before any decoding) the client takes: a larger
   * announced `content-length` fails the call, a body that grows past it fails while you read it, both with
   * `PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE`. Default 10 MiB.
   */
  readonly maxResponseBytes?: number;
  /** An exchanged token is reused until this many seconds before it expires. Default 30. */
  readonly refreshBeforeExpirySeconds?: number;
  /** Bound on cached exchanged tokens (caller tokens). Default 10000. */
  readonly exchangeCacheMaxEntries?: number;
}

/** An outbound request. */
export interface ApiRequest {
  /** Default GET. */
  readonly method?: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  /**
   * Absolute path (with query, if any) under the service's URL, percent-encoded. Refused before anything is
   * sent: `.` or `..` segments (also as `%2e`), an encoded slash or backslash, a backslash, a fragment.
   */
  readonly path: string;
  /** Extra headers; `authorization` and `host` are set by the client and cannot be overridden. */
  readonly headers?: Readonly<Record<string, string>>;
  /** A body sent as JSON (`content-type: application/json`). */
  readonly json?: unknown;
  /** A raw body. */
  readonly body?: string | Uint8Array;
  /** The incoming request's id, propagated as `x-request-id` and recorded in the audit line. */
  readonly requestId?: string | readonly string[] | undefined;
}

/** An outbound request by exchange: the scopes the callee needs (names from your ScopePolicies). */
export interface ExchangeRequest extends ApiRequest {
  readonly scopes: readonly string[];
}

/** The callee's answer: undici's response (read `body` with `.json()`, `.text()`, or dump it). */
export type ApiResponse = Dispatcher.ResponseData;

/** Calls other internal APIs with the right token. Create once per API; share across requests. */
export interface ApiClient<S extends string> {
  /**
   * RFC 8693: exchanges the caller's token for one addressed to the callee's domain with the fewest of the caller's
   * scopes that satisfy `request.scopes`, then calls the service with it. Throws `PG_SDK_INSUFFICIENT_SCOPE`,
   * `PG_SDK_EXCHANGE_REFUSED`, `PG_SDK_EXCHANGE_FAILED`, `PG_SDK_UPSTREAM_*`, `PG_SDK_CONFIG_INVALID`.
   */
  exchange(identity: Identity, service: S, request: ExchangeRequest): Promise<ApiResponse>;
  /**
   * Forwards the nested token found in the service's `embeddedTokenClaim`, once checked. Throws
   * `PG_SDK_EMBEDDED_TOKEN_MISSING|INVALID|EXPIRED|WRONG_AUDIENCE`, `PG_SDK_KEYS_UNAVAILABLE`, `PG_SDK_UPSTREAM_*`.
   */
  embed(identity: Identity, service: S, request: ApiRequest): Promise<ApiResponse>;
  /**
   * Forwards the caller's own token to a service of this API's security domain. Throws
   * `PG_SDK_SHARE_ACROSS_DOMAINS` (the message says to use `exchange`) for any other domain.
   */
  share(identity: Identity, service: S, request: ApiRequest): Promise<ApiResponse>;
  /** Releases pools the client created. */
  close(): Promise<void>;
}

interface ExchangedValue {
  readonly accessToken: string;
  readonly scopes: readonly string[];
}

/** What one outbound call sends, for sending and auditing. */
interface Outbound {
  readonly token: string;
  readonly audience: readonly string[] | undefined;
  readonly scopes: readonly string[] | undefined;
  readonly exchangeCache?: "hit" | "miss";
}

const nonEmpty = z.string().min(1);
const optionsSchema = z.object({
  service: nonEmpty,
  domain: nonEmpty,
  domains: z.record(nonEmpty, z.object({ audiences: z.array(nonEmpty).min(1) }).strict()),
  services: z.record(
    nonEmpty,
    z
      .object({
        url: z.url({ protocol: /^https?$/ }),
        domain: nonEmpty,
        embeddedTokenClaim: nonEmpty.optional(),
      })
      .strict(),
  ),
  requestTimeoutMs: z.number().int().min(1).optional(),
  maxResponseBytes: z.number().int().min(0).optional(),
  refreshBeforeExpirySeconds: z.number().int().min(0).optional(),
  exchangeCacheMaxEntries: z.number().int().min(1).optional(),
});

const HOP_OR_IDENTITY_HEADERS = new Set([
  "authorization",
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
]);

function validateOptions(options: ApiClientOptions<string, string>): void {
  const parsed = optionsSchema.safeParse({
    service: options.service,
    domain: options.domain,
    domains: options.domains,
    services: options.services,
    requestTimeoutMs: options.requestTimeoutMs,
    maxResponseBytes: options.maxResponseBytes,
    refreshBeforeExpirySeconds: options.refreshBeforeExpirySeconds,
    exchangeCacheMaxEntries: options.exchangeCacheMaxEntries,
  });
  if (!parsed.success) {
    throw new SdkError("PG_SDK_CONFIG_INVALID", `createApiClient: ${z.prettifyError(parsed.error)}`);
  }
  const domains = new Set(Object.keys(options.domains));
  if (!domains.has(options.domain)) {
    throw new SdkError(
      "PG_SDK_CONFIG_INVALID",
      `createApiClient: domain '${options.domain}' is not in domains`,
    );
  }
  for (const [name, service] of Object.entries<ServiceDefinition>(options.services)) {
    if (!domains.has(service.domain)) {
      throw new SdkError(
        "PG_SDK_CONFIG_INVALID",
        `createApiClient: service '${name}' is in domain '${service.domain}', which is not in domains`,
      );
    }
  }
}

/** The AS client for exchange, built from the SDK's options onto the gateway's token layer. */
function createExchangeClient(
  service: string,
  authServer: ApiClientAuthServer,
  deps: { dispatcher: Dispatcher; clock: Clock },
): AuthServerClient | undefined {
  if (authServer.clientId === undefined || authServer.clientSecret === undefined) return undefined;
  const timeoutMs = authServer.timeoutMs ?? 2_000;
  const candidate: CompiledAuthServer = {
    id: `sdk/${service}`,
    issuer: authServer.issuer,
    discovery: authServer.tokenEndpoint === undefined,
    endpoints: {
      ...(authServer.tokenEndpoint === undefined ? {} : { token: authServer.tokenEndpoint }),
      ...(authServer.jwksUri === undefined ? {} : { jwks: authServer.jwksUri }),
    },
    client: {
      id: authServer.clientId,
      method: authServer.clientAuthMethod ?? "client_secret_basic",
      secret: authServer.clientSecret,
    },
    // The SDK never introspects; the client requires a value.
    introspectionResponse: "json",
    allowedAlgorithms: [...(authServer.algorithms ?? ["ES256", "RS256", "PS256", "EdDSA"])],
    clockSkewSeconds: authServer.clockSkewSeconds ?? 30,
    cache: { maxTtlSeconds: 0, negativeTtlSeconds: 0, maxEntries: 1 },
    timeouts: { connectMs: timeoutMs, responseMs: timeoutMs },
    jwksCooldownMs: 30_000,
  };
  const parsed = compiledAuthServerSchema.safeParse(candidate);
  if (!parsed.success) {
    // Only field paths: the candidate holds the client secret.
    const paths = parsed.error.issues.map((issue) => issue.path.join(".")).join(", ");
    throw new SdkError("PG_SDK_CONFIG_INVALID", `createApiClient: authServer is invalid at ${paths}`);
  }
  // An exchanged token is checked against the AS's keys when the SDK can reach them (a JWKS URL, or discovery);
  // without them the API receiving the token is the one that verifies it.
  const keysKnown = parsed.data.discovery || parsed.data.endpoints.jwks !== undefined;
  return createAuthServerClient(parsed.data, { ...deps, verifyIssuedTokens: keysKnown });
}

function firstValue(value: string | readonly string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : value[0];
}

/** Header names as RFC 9110 defines them (tokens). */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Refuses a request the SDK must not send (`PG_SDK_CONFIG_INVALID`, audited as refused): a path that does not
 * start with `/`; one that could leave the service's base path once something on the way normalises it (`.` or
 * `..` segments, also as `%2e`, an encoded `/` or `\`, a backslash); a fragment; characters that are not
 * printable ASCII; and header names or values that could not be sent as they are (CR, LF, NUL). The service's
 * security domain is chosen by name, so a path that climbs into another service behind the same host would hand
 * that service a token of the wrong domain.
 */
function checkRequest(request: ApiRequest, serviceName: string): void {
  const refuse = (what: string): never => {
    throw new SdkError("PG_SDK_CONFIG_INVALID", `${what} (service ${serviceName})`);
  };
  const { path } = request;
  if (!path.startsWith("/")) refuse("request path must start with '/'");
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) refuse("request path must be printable ASCII (percent-encode the rest)");
  }
  if (path.includes("#")) refuse("request path must not carry a fragment");
  const query = path.indexOf("?");
  const pathPart = query === -1 ? path : path.slice(0, query);
  if (pathPart.includes("\\")) refuse("request path must not contain a backslash");
  if (/%(2f|5c)/i.test(pathPart)) refuse("request path must not contain an encoded '/' or '\\'");
  for (const segment of pathPart.split("/")) {
    const plain = segment.replace(/%2e/gi, ".");
    if (plain === "." || plain === "..") refuse("request path must not contain '.' or '..' segments");
  }
  for (const [name, value] of Object.entries(request.headers ?? {})) {
    if (!HEADER_NAME.test(name)) refuse(`header name '${name.slice(0, 40)}' is not a token`);
    if (/[\r\n\0]/.test(value)) refuse(`header '${name}' holds CR, LF or NUL`);
  }
}

/**
 * Creates the API-to-API client of one API. Throws `PG_SDK_CONFIG_INVALID` for options that do not fit together
 * (a service in an unknown domain, a bad URL…).
 *
 * @example The demo invoices API (billing domain) calling the payments API (payments domain) and a ledger helper
 * ```ts
 * import { createApiClient, createScopeChecker } from "phantomgate/sdk";
 *
 * const client = createApiClient({
 *   service: "invoices-api",
 *   domain: "billing",
 *   domains: {
 *     billing: { audiences: ["urn:phantomgate:billing"] },
 *     payments: { audiences: ["urn:phantomgate:payments"] },
 *   },
 *   services: {
 *     ledger: { url: "http://127.0.0.1:9104", domain: "billing" },
 *     payments: { url: "http://127.0.0.1:9105", domain: "payments" },
 *   },
 *   authServer: {
 *     issuer: "http://127.0.0.1:9000",
 *     tokenEndpoint: "http://127.0.0.1:9000/token",
 *     clientId: "invoices-api",
 *     clientSecret: process.env.INVOICES_CLIENT_SECRET,
 *   },
 *   scopes: createScopeChecker(billingPolicy),
 * });
 *
 * const ledger = await client.share(request.identity, "ledger", { path: "/ledger/inv-1001" });
 * const payment = await client.exchange(request.identity, "payments", {
 *   path: "/payments/inv-1001",
 *   scopes: ["read_invoice"],
 * });
 * await client.share(request.identity, "payments", { path: "/x" }); // throws PG_SDK_SHARE_ACROSS_DOMAINS
 * ```
 */
export function createApiClient<S extends string, D extends string>(
  options: ApiClientOptions<S, D>,
): ApiClient<S> {
  validateOptions(options);
  const clock = options.clock ?? systemClock;
  const { dispatcher, owned: ownedDispatcher } = dispatcherOrOwn(options.dispatcher, 32);
  const audit: AuditSink | undefined =
    options.audit === false ? undefined : (options.audit ?? createJsonLineAuditSink(process.stdout));
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const maxResponseBytes = options.maxResponseBytes ?? 10 * 1024 * 1024;
  const refreshMs = (options.refreshBeforeExpirySeconds ?? 30) * 1000;
  const domains: Readonly<Record<string, SecurityDomain>> = options.domains;
  const services: Readonly<Record<string, ServiceDefinition>> = options.services;
  const authServer = options.authServer;

  const exchangeClient =
    authServer === undefined
      ? undefined
      : createExchangeClient(options.service, authServer, { dispatcher, clock });
  let embeddedChecker: JwtChecker | undefined;
  if (authServer !== undefined && (authServer.jwksUri !== undefined || authServer.jwks !== undefined)) {
    parseVerifierOptions("createApiClient authServer", { ...authServer, audience: "unused" });
    embeddedChecker = createJwtChecker({
      issuer: authServer.issuer,
      ...(authServer.jwks === undefined ? { jwksUri: authServer.jwksUri ?? "" } : { jwks: authServer.jwks }),
      ...(authServer.algorithms === undefined ? {} : { algorithms: authServer.algorithms }),
      ...(authServer.clockSkewSeconds === undefined ? {} : { clockSkewSeconds: authServer.clockSkewSeconds }),
      ...(authServer.requireAccessTokenTyp === undefined
        ? {}
        : { requireAccessTokenTyp: authServer.requireAccessTokenTyp }),
      clock,
      dispatcher,
    });
  }
  for (const [name, service] of Object.entries(services)) {
    if (service.embeddedTokenClaim !== undefined && embeddedChecker === undefined) {
      throw new SdkError(
        "PG_SDK_CONFIG_INVALID",
        `createApiClient: service '${name}' has embeddedTokenClaim, which needs authServer.jwksUri or jwks`,
      );
    }
  }
  const cache = createTokenCache({ maxEntries: options.exchangeCacheMaxEntries ?? 10_000, clock });

  // ---- one call ---------------------------------------------------------------------------------------------

  interface CallContext {
    readonly identity: Identity;
    readonly serviceName: string;
    readonly service: ServiceDefinition;
    readonly pattern: TokenPattern;
    readonly request: ApiRequest;
    readonly startedMs: number;
  }

  function serviceOf(name: string): ServiceDefinition {
    const service = Object.hasOwn(services, name) ? services[name] : undefined;
    if (service === undefined)
      throw new SdkError("PG_SDK_UNKNOWN_SERVICE", `no service '${name}' is configured`);
    return service;
  }

  function audiencesOf(domain: string): readonly [string, ...string[]] {
    const found = domains[domain];
    if (found === undefined) throw new SdkError("PG_SDK_CONFIG_INVALID", `no security domain '${domain}'`);
    return found.audiences;
  }

  function record(
    context: CallContext,
    outcome: ApiCallAuditRecord["outcome"],
    details: { outbound?: Outbound; status?: number; error?: SdkError },
  ): void {
    if (audit === undefined) return;
    const { identity, request } = context;
    const { outbound, error } = details;
    const errorCode: SdkErrorCode | undefined = error?.code;
    try {
      audit({
        time: new Date(clock.now()).toISOString(),
        event: "api_call",
        from: options.service,
        fromDomain: options.domain,
        to: context.serviceName,
        toDomain: context.service.domain,
        pattern: context.pattern,
        method: request.method ?? "GET",
        path: request.path.split("?", 1)[0] ?? "",
        sub: identity.sub,
        clientId: identity.clientId,
        callerTokenFingerprint: identity.tokenFingerprint,
        sentTokenFingerprint: outbound === undefined ? undefined : fingerprintToken(outbound.token),
        audience: outbound?.audience,
        scopes: outbound?.scopes,
        exchangeCache: outbound?.exchangeCache,
        outcome,
        status: details.status,
        errorCode,
        reason: error?.reason,
        latencyMs: Math.round((performance.now() - context.startedMs) * 10) / 10,
        requestId: firstValue(request.requestId),
      });
    } catch {
      // An audit sink that throws must not turn a successful call into a failure.
    }
  }

  function requestHeaders(request: ApiRequest, token: string): Record<string, string> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers ?? {})) {
      const lower = name.toLowerCase();
      if (!HOP_OR_IDENTITY_HEADERS.has(lower)) headers[lower] = value;
    }
    headers["accept"] ??= "application/json";
    if (request.json !== undefined) headers["content-type"] = "application/json";
    const requestId = firstValue(request.requestId);
    if (requestId !== undefined && requestId !== "") headers["x-request-id"] = requestId;
    headers["authorization"] = `Bearer ${token}`;
    return headers;
  }

  async function send(context: CallContext, outbound: Outbound): Promise<ApiResponse> {
    const { service, request } = context;
    const base = new URL(service.url);
    const path = `${base.pathname.replace(/\/+$/, "")}${request.path}`;
    const body = request.json === undefined ? request.body : JSON.stringify(request.json);
    // Only until the response head: a body read later (after another call, or streamed slowly) is not cut by it.
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), requestTimeoutMs);
    const signal = deadline.signal;
    let response: ApiResponse;
    try {
      response = await dispatcher.compose(limitResponseBytes(maxResponseBytes, context.serviceName)).request({
        origin: base.origin,
        path,
        method: request.method ?? "GET",
        headers: requestHeaders(request, outbound.token),
        ...(body === undefined ? {} : { body }),
        signal,
        headersTimeout: requestTimeoutMs,
        bodyTimeout: requestTimeoutMs,
      });
    } catch (error) {
      if (error instanceof SdkError) {
        record(context, "failed", { outbound, error });
        throw error;
      }
      const code = (error as { code?: unknown } | null)?.code;
      const timedOut =
        signal.aborted || code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_CONNECT_TIMEOUT";
      // The transport error is not attached: it could carry request details, and the request carries a token.
      const failure = timedOut
        ? new SdkError(
            "PG_SDK_UPSTREAM_TIMEOUT",
            `${context.serviceName}: no answer within ${requestTimeoutMs} ms`,
          )
        : new SdkError(
            "PG_SDK_UPSTREAM_UNAVAILABLE",
            `${context.serviceName}: network error (${typeof code === "string" ? code : "unknown"})`,
          );
      record(context, "failed", { outbound, error: failure });
      throw failure;
    } finally {
      clearTimeout(timer);
    }
    record(context, "ok", { outbound, status: response.statusCode });
    return response;
  }

  /** Runs `prepare` (which picks the token) and sends; a refusal before sending is audited too. */
  async function call(
    identity: Identity,
    serviceName: string,
    pattern: TokenPattern,
    request: ApiRequest,
    prepare: (context: CallContext) => Promise<Outbound>,
  ): Promise<ApiResponse> {
    const startedMs = performance.now();
    const service = serviceOf(serviceName);
    const context: CallContext = { identity, serviceName, service, pattern, request, startedMs };
    let outbound: Outbound;
    try {
      // Before any token is chosen, so a bad request costs no exchange at the AS.
      checkRequest(request, serviceName);
      outbound = await prepare(context);
    } catch (error) {
      if (error instanceof SdkError) record(context, "refused", { error });
      throw error;
    }
    return send(context, outbound);
  }

  function callerToken(identity: Identity): string {
    try {
      return tokenOf(identity);
    } catch {
      throw new SdkError("PG_SDK_CONFIG_INVALID", "identity was not produced by a phantomgate/sdk verifier");
    }
  }

  // ---- exchange ---------------------------------------------------------------------------------------------

  async function exchangeFor(context: CallContext, needed: readonly string[]): Promise<Outbound> {
    const { identity, service } = context;
    if (exchangeClient === undefined) {
      throw new SdkError(
        "PG_SDK_CONFIG_INVALID",
        "exchange needs authServer.clientId and authServer.clientSecret (this API's client at the AS)",
      );
    }
    if (needed.length === 0) {
      // Without `scope` an AS returns the subject's full scope: the opposite of what exchange is for.
      throw new SdkError("PG_SDK_CONFIG_INVALID", `exchange for '${context.serviceName}' names no scopes`);
    }
    const scopes =
      options.scopes === undefined
        ? literalScopes(identity, needed)
        : options.scopes.fewest(identity, needed);
    const audience = audiencesOf(service.domain)[0];
    const subjectToken = callerToken(identity);
    const fingerprint = identity.tokenFingerprint;
    const purpose = cachePurpose<ExchangedValue>("exchange", audience, scopes.join(" "));
    const cached = cache.get(fingerprint, purpose);
    if (cached !== undefined && !cached.negative) {
      return {
        token: cached.value.accessToken,
        audience: [audience],
        scopes: cached.value.scopes,
        exchangeCache: "hit",
      };
    }
    const entry = await cache.load(fingerprint, purpose, async (): Promise<CacheFill<ExchangedValue>> => {
      let result;
      try {
        result = await exchangeClient.exchangeToken(subjectToken, { audience, scopes });
      } catch (error) {
        if (error instanceof GatewayError) {
          throw new SdkError("PG_SDK_EXCHANGE_FAILED", `token exchange for ${audience}: ${error.reason}`);
        }
        throw error;
      }
      if (!result.active) return { negative: true, reason: result.reason, negativeTtlSeconds: 0 };
      // Never past the caller's own token, and renewed a little before the exchanged one expires.
      const expiresAt = Math.min(result.expiresAt ?? identity.expiresAt, identity.expiresAt);
      return {
        negative: false,
        value: { accessToken: result.accessToken, scopes: result.scopes },
        expiresAtMs: expiresAt * 1000 - refreshMs,
        maxTtlSeconds: 24 * 3600,
      };
    });
    if (entry.negative) {
      throw new SdkError("PG_SDK_EXCHANGE_REFUSED", `token exchange for ${audience}: ${entry.reason}`);
    }
    return {
      token: entry.value.accessToken,
      audience: [audience],
      scopes: entry.value.scopes,
      exchangeCache: "miss",
    };
  }

  // ---- embed ------------------------------------------------------------------------------------------------

  const EMBEDDED_CODES = {
    invalid: "PG_SDK_EMBEDDED_TOKEN_INVALID",
    expired: "PG_SDK_EMBEDDED_TOKEN_EXPIRED",
    audience: "PG_SDK_EMBEDDED_TOKEN_WRONG_AUDIENCE",
    keys: "PG_SDK_KEYS_UNAVAILABLE",
  } as const;

  async function embeddedFor(context: CallContext): Promise<Outbound> {
    const { identity, service, serviceName } = context;
    const claim = service.embeddedTokenClaim;
    if (claim === undefined || embeddedChecker === undefined) {
      throw new SdkError("PG_SDK_CONFIG_INVALID", `service '${serviceName}' has no embeddedTokenClaim`);
    }
    const nested = identity.claims[claim];
    if (typeof nested !== "string" || nested === "") {
      throw new SdkError(
        "PG_SDK_EMBEDDED_TOKEN_MISSING",
        `the caller's token has no '${claim}' claim with a token for '${serviceName}'`,
      );
    }
    const audience = audiencesOf(service.domain);
    let payload;
    try {
      payload = await embeddedChecker.check(nested, audience);
    } catch (error) {
      if (!(error instanceof JwtCheckError)) throw error;
      throw new SdkError(
        EMBEDDED_CODES[error.failure],
        `embedded '${claim}' for '${serviceName}': ${error.reason}`,
      );
    }
    // The nested token must speak for the same subject as the token it came in; anything else is a mix-up.
    if (payload.sub !== identity.sub) {
      throw new SdkError(
        "PG_SDK_EMBEDDED_TOKEN_INVALID",
        `embedded '${claim}' for '${serviceName}' is about another subject`,
      );
    }
    const aud =
      payload.aud === undefined ? [] : typeof payload.aud === "string" ? [payload.aud] : payload.aud;
    return {
      token: nested,
      audience: aud,
      scopes: parseScopes({ scope: payload["scope"], scp: payload["scp"] }),
    };
  }

  // ---- share ------------------------------------------------------------------------------------------------

  function sharedFor(context: CallContext): Outbound {
    const { identity, service, serviceName } = context;
    if (service.domain !== options.domain) {
      throw new SdkError(
        "PG_SDK_SHARE_ACROSS_DOMAINS",
        `refusing to share the caller's token with '${serviceName}': it is in security domain '${service.domain}', ` +
          `this API is in '${options.domain}'; use exchange() to get a token for '${serviceName}'`,
      );
    }
    const accepted = new Set(audiencesOf(service.domain));
    if (!identity.audience.some((aud) => accepted.has(aud))) {
      throw new SdkError(
        "PG_SDK_SHARE_ACROSS_DOMAINS",
        `refusing to share the caller's token with '${serviceName}': it is not addressed to security domain ` +
          `'${service.domain}'; use exchange() to get a token for '${serviceName}'`,
      );
    }
    return { token: callerToken(identity), audience: identity.audience, scopes: identity.scopes };
  }

  return {
    exchange: (identity, service, request) =>
      call(identity, service, "exchange", request, (context) => exchangeFor(context, request.scopes)),
    embed: (identity, service, request) => call(identity, service, "embed", request, embeddedFor),
    share: (identity, service, request) =>
      call(identity, service, "share", request, (context) => Promise.resolve(sharedFor(context))),
    async close() {
      await embeddedChecker?.close();
      await ownedDispatcher?.close();
    },
  };
}

/** Without a ScopeChecker, exchange asks for exactly the needed scopes, which the caller must hold as such. */
function literalScopes(identity: Identity, needed: readonly string[]): readonly string[] {
  const held = new Set(identity.scopes);
  const unmet = needed.find((scope) => !held.has(scope));
  if (unmet !== undefined) {
    throw new SdkError("PG_SDK_INSUFFICIENT_SCOPE", `the caller's token lacks ${unmet}`, {
      extra: { scope: unmet },
    });
  }
  return [...new Set(needed)];
}

/**
 * Fails a response whose body is larger than `limit` bytes: at its head when `content-length` says so, else
 * when the bytes received pass it (the body stream then errors while the caller reads it).
 */
function limitResponseBytes(limit: number, serviceName: string): Dispatcher.DispatcherComposeInterceptor {
  const tooLarge = (size: string) =>
    new SdkError(
      "PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE",
      `${serviceName}: the response body (${size}) is larger than maxResponseBytes (${limit})`,
    );
  class LimitHandler implements Dispatcher.DispatchHandler {
    readonly #inner: Dispatcher.DispatchHandler;
    #received = 0;
    constructor(inner: Dispatcher.DispatchHandler) {
      this.#inner = inner;
    }
    onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
      this.#inner.onRequestStart?.(controller, context);
    }
    onRequestUpgrade(
      controller: Dispatcher.DispatchController,
      statusCode: number,
      headers: IncomingHttpHeaders,
      socket: Duplex,
    ): void {
      this.#inner.onRequestUpgrade?.(controller, statusCode, headers, socket);
    }
    onResponseStart(
      controller: Dispatcher.DispatchController,
      statusCode: number,
      headers: IncomingHttpHeaders,
      statusMessage?: string,
    ): void {
      const announced = Number(headers["content-length"]);
      if (statusCode >= 200 && Number.isFinite(announced) && announced > limit) {
        controller.abort(tooLarge(`${announced} bytes announced`));
        return;
      }
      this.#inner.onResponseStart?.(controller, statusCode, headers, statusMessage);
    }
    onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
      this.#received += chunk.length;
      if (this.#received > limit) {
        controller.abort(tooLarge(`more than ${limit} bytes received`));
        return;
      }
      this.#inner.onResponseData?.(controller, chunk);
    }
    onResponseEnd(controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
      this.#inner.onResponseEnd?.(controller, trailers);
    }
    onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
      this.#inner.onResponseError?.(controller, error);
    }
  }
  return (dispatch) => (options, handler) => dispatch(options, new LimitHandler(handler));
}
