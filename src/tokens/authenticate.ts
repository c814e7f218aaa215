// The authenticate stage's token layer: turns a client's bearer token into token facts and the token sent upstream,
// per the route's mode, through the token cache. Fails closed: an AS that cannot answer for an uncached token is
// PG_ERR_AS_UNAVAILABLE; cached facts keep serving while the AS is down, but never past the token's expiry.
//
// Modes:
// - phantom: introspect (the AS's `introspectionResponse`). With `jwt` the AS's verified JWT goes upstream. With
//   `json` or `token-introspection+jwt` the AS returns facts, not a forwardable token, so phantom mints exactly as
//   `mint` does — the client still never sees a JWT and the upstream never sees the opaque token.
// - exchange: introspect (cached) for the subject's scopes, then RFC 8693 for the route's audience and
//   scopes ∩ upstreamScopes.
// - mint: introspect (cached), then a gateway-signed JWT for the route.
// - jwt: local verification against the AS's JWKS; the JWT itself goes upstream.
// Derived upstream tokens (minted, exchanged) are reused for at most half their lifetime, so an upstream never
// receives one about to expire; all entries end no later than the client token and its introspection entry.
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Dispatcher } from "undici";
import { GatewayError } from "../errors/catalogue.ts";
import { createTroubleLog } from "../errors/trouble-log.ts";
import type { CompiledAuthServer, CompiledRoute } from "../snapshot/snapshot.ts";
import { createAuthServerClient, createAuthServerDispatcher, type AuthServerClient } from "./as-client.ts";
import type { Clock } from "./clock.ts";
import { authorizeAudience } from "./audience.ts";
import { bearerAuthorization } from "./bearer.ts";
import {
  factsBytes,
  factsFromClaims,
  intersectScopes,
  notBearerReason,
  tokenClaimsSchema,
  withoutNulls,
  type TokenFacts,
} from "./facts.ts";
import { fingerprintToken } from "./fingerprint.ts";
import { describeJwtError, isAccessTokenTyp, verifyJwt } from "./jwks.ts";
import { createAuthServerMetrics, noAuthServerMetrics, type AuthServerMetrics } from "./metrics.ts";
import type { Minter } from "./minter.ts";
import {
  cachePurpose,
  DEFAULT_VALUE_BYTES,
  type CacheEntry,
  type CacheFill,
  type CachePurpose,
  type TokenCache,
  type TokenCacheSet,
} from "./token-cache.ts";

/** What the authenticate stage hands to authorize and forward. */
export interface AuthenticationResult {
  /** Facts about the client's token (for exchange: the subject token's), checked by authorize on every request. */
  readonly facts: TokenFacts;
  /**
   * `Bearer <token>`: the Authorization value the upstream receives instead of the client's credential, kept in
   * that form only (`bearerToken` gives the token).
   */
  readonly upstreamAuthorization: string;
  readonly cacheHit: boolean;
}

export interface AuthenticatorOptions {
  readonly authServers: readonly CompiledAuthServer[];
  /**
   * Carries calls to every AS (an undici `Agent` keeps a keep-alive pool per origin); the caller owns it.
   * When absent, each AS gets its own pool from {@link createAuthServerDispatcher}, closed when the AS goes away.
   */
  readonly dispatcher?: Dispatcher | undefined;
  readonly clock: Clock;
  /**
   * The token caches: each AS caches into its own partition, bounded by its `cache.maxEntries`. The caller owns
   * the set (revocation goes through it); the authenticator creates and drops partitions as auth servers come
   * and go.
   */
  readonly caches: TokenCacheSet;
  readonly minter: Minter;
  /** Registers `phantomgate_as_requests_total` and `phantomgate_as_request_duration_seconds` when given. */
  readonly registry?: Registry | undefined;
  /** Calls each AS may have waiting or under way at once (`--max-pending-as-calls`); see the AS client. */
  readonly maxPendingAsCalls?: number | undefined;
  /** Where failing calls to an AS are logged (rate-limited per AS and endpoint, with a line when it recovers). */
  readonly logger?: Logger | undefined;
}

/** The token layer of the request pipeline. */
export interface Authenticator {
  /**
   * Authenticates `token` for `route` (any mode but `none`). Throws `GatewayError`: PG_ERR_TOKEN_INVALID
   * (inactive, expired, revoked, bad JWT), PG_ERR_AS_UNAVAILABLE (uncached and the AS cannot answer),
   * PG_ERR_INSUFFICIENT_SCOPE (exchange: the token holds none of the scopes the route may pass upstream),
   * PG_ERR_INTERNAL (route without auth server or audience). `fingerprint` may be passed when the caller has
   * already computed `fingerprintToken(token)`, saving the second SHA-256.
   */
  authenticate(token: string, route: CompiledRoute, fingerprint?: string): Promise<AuthenticationResult>;
  /**
   * The cached result for the token with this fingerprint on `route`, without waiting: undefined when it is not
   * cached (then call `authenticate`). Throws like `authenticate` for a cached inactive token.
   */
  cached(fingerprint: string, route: CompiledRoute): AuthenticationResult | undefined;
  /**
   * `authenticate` for a caller whose `cached` just missed: goes to the AS (or joins a load in progress) without
   * looking the cache up a second time, so the miss is counted once.
   */
  loadUncached(token: string, route: CompiledRoute, fingerprint: string): Promise<AuthenticationResult>;
  /**
   * Whether `loadUncached` for this token and route would start a call to its AS now: false when a load it would
   * join is under way (for this route, or the token's introspection for a phantom or mint route), when the
   * introspection is cached (a mint signs locally), and in jwt mode (verified locally; JWKS fetches have their own
   * bound). Exchange routes ask the AS for every new upstream token.
   */
  asksAuthServer(fingerprint: string, route: CompiledRoute): boolean;
  /** Swaps in a snapshot's auth servers: unchanged ones keep their pools, discovery and JWKS caches. */
  updateAuthServers(servers: readonly CompiledAuthServer[]): void;
  /** The client of one AS (diagnostics, tests). */
  authServerClient(id: string): AuthServerClient | undefined;
  /** Releases pools this authenticator created; in-flight calls finish first. */
  close(): void;
}

interface RoutePlan {
  readonly purpose: CachePurpose<AuthenticationResult>;
  readonly load: (token: string, fingerprint: string) => Promise<CacheFill<AuthenticationResult>>;
}

interface ServerRuntime {
  readonly server: CompiledAuthServer;
  /** The whole compiled object, serialised: any change builds a new runtime. */
  readonly config: string;
  readonly client: AuthServerClient;
  readonly ownedDispatcher: Dispatcher | undefined;
  /** This AS's partition of the token cache; kept across runtime rebuilds while `cache.maxEntries` is unchanged. */
  readonly cache: TokenCache;
  readonly introspectPurpose: CachePurpose<TokenFacts>;
  /** Cache scope: the AS id plus a hash of the settings that shape its facts (see `factsScope`). */
  readonly scope: string;
  readonly plans: WeakMap<CompiledRoute, RoutePlan>;
}

/**
 * Cache entries are scoped by the settings that decide what a token's facts are and how long they hold. Changing a
 * timeout or a secret keeps the cache warm; changing the issuer, endpoints, client, verification rules or the
 * cache's TTLs starts a fresh scope (old entries are never read again and age out of the AS's LRU partition), so
 * a TTL lowered during an incident applies at once. Changing `cache.maxEntries` replaces the partition itself,
 * which empties it.
 */
function factsScope(server: CompiledAuthServer): string {
  const identity = JSON.stringify([
    server.issuer,
    server.discovery,
    server.endpoints,
    server.client.id,
    server.introspectionResponse,
    server.allowedAlgorithms,
    server.clockSkewSeconds,
    server.requireAccessTokenTyp === true,
    server.cache.maxTtlSeconds,
    server.cache.negativeTtlSeconds,
  ]);
  return `${server.id}#${createHash("sha256").update(identity).digest("base64url").slice(0, 16)}`;
}

function noTokenMode(route: CompiledRoute): GatewayError {
  return new GatewayError("PG_ERR_INTERNAL", `route ${route.id} has no token mode to authenticate with`);
}

function invalidToken(reason: string): GatewayError {
  return new GatewayError("PG_ERR_TOKEN_INVALID", reason);
}

/** A cached result: stored with cacheHit true, so a hit returns the stored object as is. */
function authenticated(facts: TokenFacts, upstreamAuthorization: string): AuthenticationResult {
  return { facts, upstreamAuthorization, cacheHit: true };
}

/**
 * The lifetime assumed for an exchanged token when the AS states none: it is then reused for half of this, at
 * most (an upstream never gets a token past an end the gateway cannot know).
 */
export const UNSTATED_EXCHANGE_LIFETIME_SECONDS = 60;

/** Reuse an upstream token for at most half its lifetime (epoch seconds in, epoch ms out). */
function halfLifeMs(issuedAt: number, expiresAt: number): number {
  return (issuedAt + (expiresAt - issuedAt) / 2) * 1000;
}

/**
 * The AS clients' metrics, with their failures also logged: the first at once, then at most one line per AS and
 * endpoint every 10 s while they go on, and a line when the endpoint answers again. The audit trail has each
 * request's reason; this tells an operator that an authorization server is failing, and why, without a line per
 * request.
 */
function observedCalls(metrics: AuthServerMetrics, logger: Logger | undefined): AuthServerMetrics {
  if (logger === undefined) return metrics;
  const troubles = createTroubleLog(logger);
  return {
    observeRequest(authServer, endpoint, outcome, seconds, failure) {
      metrics.observeRequest(authServer, endpoint, outcome, seconds, failure);
      const key = `${authServer} ${endpoint}`;
      if (outcome === "ok" || outcome === "inactive") {
        troubles.succeeded(key, { authServer, endpoint }, "authorization server answering again");
      } else {
        troubles.failed(
          key,
          { authServer, endpoint, outcome, reason: failure },
          "call to the authorization server failed: requests whose token is not cached get 503",
        );
      }
    },
  };
}

/** Creates the authenticator; `updateAuthServers` is called on every snapshot swap. */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const { caches, clock, minter } = options;
  const metrics = observedCalls(
    options.registry === undefined ? noAuthServerMetrics : createAuthServerMetrics(options.registry),
    options.logger,
  );
  let runtimes = new Map<string, ServerRuntime>();
  let closed = false;

  function createRuntime(server: CompiledAuthServer, config: string): ServerRuntime {
    let dispatcher = options.dispatcher;
    let ownedDispatcher: Dispatcher | undefined;
    if (dispatcher === undefined) {
      ownedDispatcher = createAuthServerDispatcher(server);
      dispatcher = ownedDispatcher;
    }
    const scope = factsScope(server);
    return {
      server,
      config,
      client: createAuthServerClient(server, {
        dispatcher,
        clock,
        metrics,
        maxPendingCalls: options.maxPendingAsCalls,
      }),
      ownedDispatcher,
      cache: caches.partition(server.id, server.cache.maxEntries),
      introspectPurpose: cachePurpose<TokenFacts>(scope, "introspect"),
      scope,
      plans: new WeakMap(),
    };
  }

  function retire(runtime: ServerRuntime): void {
    // close() lets in-flight calls finish; their results are still handed to the requests waiting for them.
    runtime.ownedDispatcher?.close().catch(() => undefined);
  }

  function updateAuthServers(servers: readonly CompiledAuthServer[]): void {
    if (closed) return;
    const next = new Map<string, ServerRuntime>();
    for (const server of servers) {
      const config = JSON.stringify(server);
      const current = runtimes.get(server.id);
      next.set(server.id, current?.config === config ? current : createRuntime(server, config));
    }
    for (const [id, runtime] of runtimes) if (next.get(id) !== runtime) retire(runtime);
    runtimes = next;
    caches.retain(new Set(next.keys()));
  }

  // ---- loaders --------------------------------------------------------------------------------------------

  function negativeFill(runtime: ServerRuntime, reason: string): CacheFill<AuthenticationResult> {
    return { negative: true, reason, negativeTtlSeconds: runtime.server.cache.negativeTtlSeconds };
  }

  /** A route's refusal from the token's cached (or just made) refusal: it ends when that one does, not later. */
  function refusedAsIntrospected(
    runtime: ServerRuntime,
    introspection: { readonly reason: string; readonly expiresAtMs: number },
  ): CacheFill<AuthenticationResult> {
    return {
      negative: true,
      reason: introspection.reason,
      negativeTtlSeconds: Math.min(
        runtime.server.cache.negativeTtlSeconds,
        Math.max(0, (introspection.expiresAtMs - clock.now()) / 1000),
      ),
    };
  }

  function positiveFill(
    runtime: ServerRuntime,
    facts: TokenFacts,
    upstreamAuthorization: string,
    notAfterMs: number,
  ): CacheFill<AuthenticationResult> {
    return {
      negative: false,
      value: authenticated(facts, upstreamAuthorization),
      expiresAtMs: notAfterMs,
      maxTtlSeconds: runtime.server.cache.maxTtlSeconds,
      // The facts are the introspection's, counted with it; this entry adds the upstream token (phantom mode
      // forwards the introspection's own JWT, already counted).
      bytes:
        DEFAULT_VALUE_BYTES +
        (upstreamAuthorization === facts.upstreamAuthorization ? 0 : upstreamAuthorization.length),
    };
  }

  /** The token's introspection, shared by every route and mode of this AS; single-flight on a miss. */
  function introspectFacts(
    runtime: ServerRuntime,
    token: string,
    fingerprint: string,
  ): Promise<CacheEntry<TokenFacts>> {
    const cached = runtime.cache.peek(fingerprint, runtime.introspectPurpose);
    if (cached !== undefined) return Promise.resolve(cached);
    return runtime.cache.load(fingerprint, runtime.introspectPurpose, async () => {
      const result = await runtime.client.introspectToken(token);
      if (!result.active) {
        // A token that is only not valid yet is refused until then, not for the whole negative TTL.
        const untilValidSeconds =
          result.validFromMs === undefined
            ? Infinity
            : Math.max(0, (result.validFromMs - clock.now()) / 1000);
        return {
          negative: true,
          reason: result.reason,
          negativeTtlSeconds: Math.min(runtime.server.cache.negativeTtlSeconds, untilValidSeconds),
        };
      }
      return {
        negative: false,
        value: result,
        expiresAtMs: result.expiresAt === undefined ? undefined : result.expiresAt * 1000,
        maxTtlSeconds: runtime.server.cache.maxTtlSeconds,
        bytes: DEFAULT_VALUE_BYTES + factsBytes(result),
      };
    });
  }

  function requireAudience(route: CompiledRoute): string {
    const audience = route.auth.audience;
    if (audience === undefined)
      throw new GatewayError("PG_ERR_INTERNAL", `route ${route.id} has no audience`);
    return audience;
  }

  function planMint(runtime: ServerRuntime, route: CompiledRoute): RoutePlan {
    requireAudience(route);
    const { audience, acceptedAudiences, upstreamScopes, forwardClaims, mintTtlSeconds } = route.auth;
    return {
      // Everything the minted JWT depends on, so routes that would mint the same JWT share it. The accepted
      // audiences too: the load refuses a token for another audience, and a request of a route without that
      // list must never wait for, and share, that refusal.
      purpose: cachePurpose(
        runtime.scope,
        "mint",
        audience ?? "",
        // As JSON: a claim name may hold a space, so joined names could make two routes' lists one key.
        JSON.stringify(upstreamScopes),
        JSON.stringify(forwardClaims),
        String(mintTtlSeconds),
        JSON.stringify(acceptedAudiences ?? null),
      ),
      async load(token, fingerprint) {
        const introspection = await introspectFacts(runtime, token, fingerprint);
        if (introspection.negative) return refusedAsIntrospected(runtime, introspection);
        // Not negatively cached (thrown): the authorize stage also refuses it on every request.
        authorizeAudience(acceptedAudiences, introspection.value.audience);
        const minted = await minter.mintInternalJwt(introspection.value, route);
        const notAfterMs = Math.min(introspection.expiresAtMs, halfLifeMs(minted.issuedAt, minted.expiresAt));
        return positiveFill(runtime, introspection.value, bearerAuthorization(minted.token), notAfterMs);
      },
    };
  }

  function planPhantom(runtime: ServerRuntime, route: CompiledRoute): RoutePlan {
    if (runtime.server.introspectionResponse !== "jwt") return planMint(runtime, route);
    return {
      purpose: cachePurpose(runtime.scope, "phantom"),
      async load(token, fingerprint) {
        const introspection = await introspectFacts(runtime, token, fingerprint);
        if (introspection.negative) return refusedAsIntrospected(runtime, introspection);
        const authorization = introspection.value.upstreamAuthorization;
        if (authorization === undefined) {
          throw new GatewayError(
            "PG_ERR_AS_UNAVAILABLE",
            "introspection returned facts, not the JWT phantom mode forwards",
          );
        }
        return positiveFill(runtime, introspection.value, authorization, introspection.expiresAtMs);
      },
    };
  }

  function planExchange(runtime: ServerRuntime, route: CompiledRoute): RoutePlan {
    const audience = requireAudience(route);
    const { upstreamScopes, acceptedAudiences } = route.auth;
    return {
      // For one token, scopes ∩ upstreamScopes is fixed by upstreamScopes: the key needs no per-token part. The
      // accepted audiences are in it for the reason given in planMint.
      purpose: cachePurpose(
        runtime.scope,
        "exchange",
        audience,
        JSON.stringify(upstreamScopes),
        JSON.stringify(acceptedAudiences ?? null),
      ),
      async load(token, fingerprint) {
        const introspection = await introspectFacts(runtime, token, fingerprint);
        if (introspection.negative) return refusedAsIntrospected(runtime, introspection);
        // Before the exchange: a token meant for another API costs the AS no exchange and gets its 401.
        authorizeAudience(acceptedAudiences, introspection.value.audience);
        const scopes = intersectScopes(introspection.value.scopes, upstreamScopes);
        // Asking without `scope` would get the subject's full scope: never widen to make a request pass. (compile
        // refuses exchange rules without ScopePolicies, so an empty upstreamScopes means no scope to pass.)
        if (scopes.length === 0) {
          throw new GatewayError(
            "PG_ERR_INSUFFICIENT_SCOPE",
            "token holds none of the scopes the route passes upstream",
            {
              scope: upstreamScopes.join(" "),
            },
          );
        }
        const requestedAt = clock.now() / 1000;
        const exchanged = await runtime.client.exchangeToken(token, { audience, scopes });
        if (!exchanged.active) return refusedExchange(runtime, token, fingerprint, exchanged.reason);
        // A token whose lifetime the AS does not state (no expires_in, not a JWT with exp) could be near its end
        // already: it is reused as if it lived UNSTATED_EXCHANGE_LIFETIME_SECONDS.
        const expiresAt = exchanged.expiresAt ?? requestedAt + UNSTATED_EXCHANGE_LIFETIME_SECONDS;
        const notAfterMs = Math.min(introspection.expiresAtMs, halfLifeMs(requestedAt, expiresAt));
        return positiveFill(
          runtime,
          introspection.value,
          bearerAuthorization(exchanged.accessToken),
          notAfterMs,
        );
      },
    };
  }

  /**
   * The AS refused to exchange a token whose introspection was cached as active: it asks introspection again,
   * uncached. An inactive token is refused (401) for every route of this AS, its cached facts and derived tokens
   * dropped; an active one means the AS refuses the exchange itself (its policy, the route's audience), which no
   * retry by the client changes: 503 naming that.
   */
  async function refusedExchange(
    runtime: ServerRuntime,
    token: string,
    fingerprint: string,
    reason: string,
  ): Promise<CacheFill<AuthenticationResult>> {
    const fresh = await runtime.client.introspectToken(token);
    if (!fresh.active) {
      runtime.cache.evictFingerprint(fingerprint);
      runtime.cache.set(fingerprint, runtime.introspectPurpose, {
        negative: true,
        reason: fresh.reason,
        negativeTtlSeconds: runtime.server.cache.negativeTtlSeconds,
      });
      return negativeFill(runtime, `${reason}; ${fresh.reason}`);
    }
    throw new GatewayError(
      "PG_ERR_AS_UNAVAILABLE",
      `the AS refused to exchange a token its introspection says is active (${reason})`,
    );
  }

  function planJwt(runtime: ServerRuntime, route: CompiledRoute): RoutePlan {
    const audience = requireAudience(route);
    const { server, client } = runtime;
    return {
      purpose: cachePurpose(runtime.scope, "jwt", audience),
      async load(token) {
        let verified;
        try {
          verified = await verifyJwt(token, client.keys, {
            issuer: server.issuer,
            audience,
            algorithms: server.allowedAlgorithms,
            clockSkewSeconds: server.clockSkewSeconds,
            clock,
            requiredClaims: ["exp"],
          });
        } catch (error) {
          if (error instanceof GatewayError) throw error;
          // Not negatively cached: a token naming a key published a moment later must verify once it is.
          throw invalidToken(`JWT rejected: ${describeJwtError(error)}`);
        }
        if (!isAccessTokenTyp(verified.protectedHeader.typ, server.requireAccessTokenTyp === true))
          throw invalidToken("JWT is not an access token (typ)");
        const claims = tokenClaimsSchema.safeParse(withoutNulls(verified.payload));
        if (!claims.success) throw invalidToken("JWT claims malformed");
        const notBearer = notBearerReason(claims.data);
        if (notBearer !== undefined) return negativeFill(runtime, notBearer);
        const facts = factsFromClaims(claims.data);
        const expiresAtMs = facts.expiresAt === undefined ? undefined : facts.expiresAt * 1000;
        return {
          negative: false,
          value: authenticated(facts, bearerAuthorization(token)),
          expiresAtMs,
          maxTtlSeconds: server.cache.maxTtlSeconds,
          bytes: DEFAULT_VALUE_BYTES + factsBytes(facts) + token.length,
        };
      },
    };
  }

  function runtimeFor(route: CompiledRoute): ServerRuntime {
    const id = route.auth.authServer;
    if (route.auth.mode === "none" || id === undefined) throw noTokenMode(route);
    const runtime = runtimes.get(id);
    if (runtime === undefined)
      throw new GatewayError("PG_ERR_AS_UNAVAILABLE", `auth server ${id} is not configured`);
    return runtime;
  }

  function planFor(runtime: ServerRuntime, route: CompiledRoute): RoutePlan {
    let plan = runtime.plans.get(route);
    if (plan === undefined) {
      switch (route.auth.mode) {
        case "none":
          throw noTokenMode(route); // runtimeFor already refused it
        case "phantom":
          plan = planPhantom(runtime, route);
          break;
        case "mint":
          plan = planMint(runtime, route);
          break;
        case "exchange":
          plan = planExchange(runtime, route);
          break;
        case "jwt":
          plan = planJwt(runtime, route);
          break;
      }
      runtime.plans.set(route, plan);
    }
    return plan;
  }

  function cached(fingerprint: string, route: CompiledRoute): AuthenticationResult | undefined {
    const runtime = runtimeFor(route);
    // Hot path: one LRU get in the AS's partition; the stored result object is returned as is.
    const entry = runtime.cache.get(fingerprint, planFor(runtime, route).purpose);
    if (entry === undefined) return undefined;
    if (entry.negative) throw invalidToken(entry.reason);
    return entry.value;
  }

  async function authenticate(
    token: string,
    route: CompiledRoute,
    fingerprint: string = fingerprintToken(token),
  ): Promise<AuthenticationResult> {
    const hit = cached(fingerprint, route);
    if (hit !== undefined) return hit;
    return loadUncached(token, route, fingerprint);
  }

  async function loadUncached(
    token: string,
    route: CompiledRoute,
    fingerprint: string,
  ): Promise<AuthenticationResult> {
    const runtime = runtimeFor(route);
    const plan = planFor(runtime, route);
    const entry = await runtime.cache.load(fingerprint, plan.purpose, () => plan.load(token, fingerprint));
    if (entry.negative) throw invalidToken(entry.reason);
    return { ...entry.value, cacheHit: false };
  }

  function asksAuthServer(fingerprint: string, route: CompiledRoute): boolean {
    if (route.auth.mode === "jwt") return false;
    const runtime = runtimeFor(route);
    if (runtime.cache.loading(fingerprint, planFor(runtime, route).purpose)) return false;
    if (route.auth.mode === "exchange") return true;
    return (
      !runtime.cache.loading(fingerprint, runtime.introspectPurpose) &&
      runtime.cache.peek(fingerprint, runtime.introspectPurpose) === undefined
    );
  }

  updateAuthServers(options.authServers);

  return {
    authenticate,
    cached,
    loadUncached,
    asksAuthServer,
    updateAuthServers,
    authServerClient: (id) => runtimes.get(id)?.client,
    close() {
      closed = true;
      for (const runtime of runtimes.values()) retire(runtime);
      runtimes = new Map();
    },
  };
}
