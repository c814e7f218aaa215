// Token layer against the real demo authorization server on port 0: every mode and introspection response type,
// every client authentication method, inactive/expired/revoked tokens, AS down and slow, JWKS rotation,
// single-flight under load, exchange narrowing and local JWT rejection.
import { randomUUID } from "node:crypto";
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
  UnsecuredJWT,
} from "jose";
import { Registry } from "prom-client";
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import type { CompiledAuthServer, IntrospectionResponse } from "../../src/snapshot/snapshot.ts";
import {
  createAuthenticator,
  type AuthenticationResult,
  type Authenticator,
} from "../../src/tokens/authenticate.ts";
import { bearerToken } from "../../src/tokens/bearer.ts";
import { createManualClock, type ManualClock } from "../../src/tokens/clock.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import { DEFAULT_MINT_ISSUER, loadMinter, type Minter } from "../../src/tokens/minter.ts";
import { createTokenCacheSet, type TokenCacheSet } from "../../src/tokens/token-cache.ts";
import { compiledAuthServer, compiledRoute, JWT_API } from "../helpers/compiled.ts";

// ---- fixtures -------------------------------------------------------------------------------------------------

function authServerFor(as: DemoAuthServer, overrides: Partial<CompiledAuthServer> = {}): CompiledAuthServer {
  return compiledAuthServer(as.issuer, overrides);
}

const routeFor = compiledRoute;

async function getToken(as: DemoAuthServer, scope: string, resource?: string): Promise<string> {
  const form = new URLSearchParams({ grant_type: "client_credentials", scope });
  if (resource !== undefined) form.set("resource", resource);
  const response = await fetch(as.tokenEndpoint, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from("demo-client:demo-secret").toString("base64")}` },
    body: form,
  });
  const body = (await response.json()) as { access_token?: string };
  if (body.access_token === undefined) throw new Error(`token request failed (${response.status})`);
  return body.access_token;
}

async function revokeToken(as: DemoAuthServer, token: string): Promise<void> {
  const response = await fetch(as.revocationEndpoint, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from("demo-client:demo-secret").toString("base64")}` },
    body: new URLSearchParams({ token, token_type_hint: "access_token" }),
  });
  expect(response.status).toBe(200);
}

/** The token the upstream receives (its Authorization value without `Bearer `). */
function upstreamToken(result: AuthenticationResult): string {
  return bearerToken(result.upstreamAuthorization);
}

function payloadOf(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString()) as Record<string, unknown>;
}

interface Harness {
  readonly as: DemoAuthServer;
  readonly clock: ManualClock;
  readonly caches: TokenCacheSet;
  readonly minter: Minter;
  readonly registry: Registry;
  readonly authenticator: Authenticator;
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startAs(options: Parameters<typeof startDemoAuthServer>[0] = {}): Promise<DemoAuthServer> {
  const as = await startDemoAuthServer({ port: 0, ...options });
  cleanups.push(() => as.close());
  return as;
}

async function harness(
  as: DemoAuthServer,
  server: Partial<CompiledAuthServer> = {},
  options: { ownPools?: boolean; maxPendingAsCalls?: number } = {},
): Promise<Harness> {
  const clock = createManualClock(Date.now());
  const registry = new Registry();
  const caches = createTokenCacheSet({ clock, registry });
  const minter = await loadMinter({ clock });
  const dispatcher = options.ownPools === true ? undefined : new Agent({ keepAliveTimeout: 10_000 });
  if (dispatcher !== undefined) cleanups.push(() => dispatcher.close());
  const authenticator = createAuthenticator({
    authServers: [authServerFor(as, server)],
    dispatcher,
    clock,
    caches,
    minter,
    registry,
    maxPendingAsCalls: options.maxPendingAsCalls,
  });
  cleanups.push(() => authenticator.close());
  return { as, clock, caches, minter, registry, authenticator };
}

async function verifyMinted(h: Harness, jwt: string, audience = "urn:invoices") {
  return jwtVerify(jwt, createLocalJWKSet(await h.minter.jwks()), {
    issuer: DEFAULT_MINT_ISSUER,
    audience,
    typ: "at+jwt",
    currentDate: new Date(h.clock.now()),
  });
}

async function verifyAsSigned(as: DemoAuthServer, jwt: string, audience: string) {
  const jwks = (await (await fetch(as.jwksUri)).json()) as Parameters<typeof createLocalJWKSet>[0];
  return jwtVerify(jwt, createLocalJWKSet(jwks), { issuer: as.issuer, audience, typ: "at+jwt" });
}

const responseTypes: readonly IntrospectionResponse[] = ["json", "jwt", "token-introspection+jwt"];

// ---- modes × introspection response types ---------------------------------------------------------------------

describe("phantom and mint modes, every introspection response type", () => {
  for (const introspectionResponse of responseTypes) {
    it(`phantom with ${introspectionResponse}: upstream gets a JWT, never the opaque token; second call is a hit`, async () => {
      const h = await harness(await startAs(), { introspectionResponse });
      const token = await getToken(h.as, "read_invoice high_video_stream");
      const route = routeFor("phantom");

      expect(h.authenticator.cached(fingerprintToken(token), route)).toBeUndefined();
      const first = await h.authenticator.authenticate(token, route);
      expect(first.cacheHit).toBe(false);
      expect(first.facts).toMatchObject({ active: true, clientId: "demo-client", sub: "demo-client" });
      expect(first.facts.scopes).toEqual(["read_invoice", "high_video_stream"]);
      expect(upstreamToken(first)).not.toBe(token);
      expect(upstreamToken(first)).not.toContain(token);

      if (introspectionResponse === "jwt") {
        // The AS's own phantom JWT, verified by the gateway, forwarded as is.
        const { payload, protectedHeader } = await verifyAsSigned(h.as, upstreamToken(first), h.as.issuer);
        expect(protectedHeader.typ).toBe("at+jwt");
        expect(payload).toMatchObject({ client_id: "demo-client", scope: "read_invoice high_video_stream" });
      } else {
        // The AS gave facts only: phantom mints like mint mode.
        const { payload } = await verifyMinted(h, upstreamToken(first));
        expect(payload).toMatchObject({
          sub: "demo-client",
          client_id: "demo-client",
          scope: "read_invoice",
        });
      }

      const second = await h.authenticator.authenticate(token, route);
      expect(second.cacheHit).toBe(true);
      expect(upstreamToken(second)).toBe(upstreamToken(first));
      // The pipeline's synchronous look-up sees the same entry.
      const cached = h.authenticator.cached(fingerprintToken(token), route);
      expect(cached).toMatchObject({
        cacheHit: true,
        upstreamAuthorization: first.upstreamAuthorization,
        facts: first.facts,
      });
      expect(h.as.stats.introspections).toBe(1);
    });

    it(`mint with ${introspectionResponse}: a gateway JWT with only the route's audience, scopes and claims`, async () => {
      const h = await harness(await startAs(), { introspectionResponse });
      const token = await getToken(h.as, "read_invoice write_invoice video_metadata");
      const route = routeFor("mint", {
        upstreamScopes: ["write_invoice"],
        forwardClaims: ["token_type", "iss"],
      });
      const result = await h.authenticator.authenticate(token, route);
      const { payload, protectedHeader } = await verifyMinted(h, upstreamToken(result));
      expect(protectedHeader.kid).toBe(h.minter.keyId);
      expect(payload["scope"]).toBe("write_invoice");
      expect(payload["iss"]).toBe(DEFAULT_MINT_ISSUER);
      expect(payload.exp).toBe(payload.iat! + 60);
      // Facts keep every scope: authorization is decided on them, not on what goes upstream.
      expect(result.facts.scopes).toEqual(["read_invoice", "write_invoice", "video_metadata"]);
    });
  }

  it("says which loads would start a call to the AS: not while one they join is under way, not for a cached introspection, never in jwt mode", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const fingerprint = fingerprintToken(token);
    const mintA = routeFor("mint", { audience: "urn:a" });
    const mintB = routeFor("mint", { audience: "urn:b" });
    const exchange = routeFor("exchange");
    const jwt = routeFor("jwt");
    expect(h.authenticator.asksAuthServer(fingerprint, mintA)).toBe(true);
    expect(h.authenticator.asksAuthServer(fingerprint, jwt)).toBe(false);
    const loading = h.authenticator.loadUncached(token, mintA, fingerprint);
    loading.catch(() => undefined);
    // Under way: the same route joins it at once; another mint route, once the load asks for the introspection
    // (a microtask later; requests arrive in I/O callbacks, after that), waits for the same one.
    expect(h.authenticator.asksAuthServer(fingerprint, mintA)).toBe(false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(h.authenticator.asksAuthServer(fingerprint, mintB)).toBe(false);
    await loading;
    // The introspection is cached: another mint route signs locally; an exchange still asks the AS.
    expect(h.authenticator.asksAuthServer(fingerprint, mintB)).toBe(false);
    expect(h.authenticator.asksAuthServer(fingerprint, exchange)).toBe(true);
    expect(h.as.stats.introspections).toBe(1);
  });

  it("one introspection serves every route and mode of the AS; each route gets its own upstream token", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const a = await h.authenticator.authenticate(token, routeFor("mint", { audience: "urn:a" }));
    const b = await h.authenticator.authenticate(token, routeFor("phantom", { audience: "urn:b" }));
    expect(payloadOf(upstreamToken(a))["aud"]).toBe("urn:a");
    expect(payloadOf(upstreamToken(b))["aud"]).toBe("urn:b");
    expect(h.as.stats.introspections).toBe(1);
  });

  it("mint routes whose claim lists differ only in how names split never share a minted JWT", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const spaced = routeFor("mint", { forwardClaims: ["a b"] });
    const split = routeFor("mint", { forwardClaims: ["a", "b"] });
    const first = await h.authenticator.authenticate(token, spaced);
    const second = await h.authenticator.authenticate(token, split);
    expect(second.cacheHit).toBe(false);
    expect(upstreamToken(second)).not.toBe(upstreamToken(first));
    const again = await h.authenticator.authenticate(token, routeFor("mint", { forwardClaims: ["a b"] }));
    expect(again.cacheHit).toBe(true);
    expect(upstreamToken(again)).toBe(upstreamToken(first));
  });
});

// ---- client authentication ------------------------------------------------------------------------------------

describe("client authentication to the AS", () => {
  it("client_secret_basic", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: false,
    });
  });

  it("client_secret_post", async () => {
    const as = await startAs();
    const h = await harness(as, {
      client: { id: "gateway-post", method: "client_secret_post", secret: "gateway-secret" },
    });
    const token = await getToken(as, "read_invoice");
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: false,
    });
  });

  it("private_key_jwt, for introspection and token exchange", async () => {
    const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
    const kid = randomUUID();
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
    const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "ES256" };
    const as = await startAs({ gatewayClientJwks: { keys: [publicJwk] } });
    const h = await harness(as, {
      client: { id: "gateway-jwt", method: "private_key_jwt", secret: JSON.stringify(privateJwk) },
    });
    const token = await getToken(as, "read_invoice");
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: false,
    });
    const exchanged = await h.authenticator.authenticate(token, routeFor("exchange"));
    expect(payloadOf(upstreamToken(exchanged))["aud"]).toBe("urn:invoices");
  });

  it("wrong credentials fail closed with PG_ERR_AS_UNAVAILABLE, not as a client error", async () => {
    const as = await startAs();
    const h = await harness(as, {
      client: { id: "gateway", method: "client_secret_basic", secret: "wrong" },
    });
    const token = await getToken(as, "read_invoice");
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
    const metrics = await h.registry.metrics();
    expect(metrics).toMatch(
      /phantomgate_as_requests_total\{[^}]*endpoint="introspection"[^}]*outcome="rejected"\} 1/,
    );
  });
});

// ---- token states ---------------------------------------------------------------------------------------------

describe("inactive, expired and revoked tokens", () => {
  for (const introspectionResponse of responseTypes) {
    it(`an unknown token is PG_ERR_TOKEN_INVALID and negatively cached (${introspectionResponse})`, async () => {
      const h = await harness(await startAs(), { introspectionResponse });
      const garbage = `not-a-token-${randomUUID()}`;
      for (let i = 0; i < 3; i += 1) {
        await expect(h.authenticator.authenticate(garbage, routeFor("phantom"))).rejects.toMatchObject({
          code: "PG_ERR_TOKEN_INVALID",
        });
      }
      expect(h.as.stats.introspections).toBe(1);
      expect(() => h.authenticator.cached(fingerprintToken(garbage), routeFor("phantom"))).toThrow(
        expect.objectContaining({ code: "PG_ERR_TOKEN_INVALID" }),
      );
      h.clock.advance(30_000); // negativeTtlSeconds
      await expect(h.authenticator.authenticate(garbage, routeFor("phantom"))).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
      });
      expect(h.as.stats.introspections).toBe(2);
    });
  }

  for (const introspectionResponse of responseTypes) {
    it(`a by-value JWT sent to a phantom route, which the AS refuses to introspect, is PG_ERR_TOKEN_INVALID and negatively cached (${introspectionResponse})`, async () => {
      const h = await harness(await startAs(), { introspectionResponse });
      const jwt = await getToken(h.as, "read_invoice", JWT_API);
      for (let i = 0; i < 3; i += 1) {
        await expect(h.authenticator.authenticate(jwt, routeFor("phantom"))).rejects.toMatchObject({
          code: "PG_ERR_TOKEN_INVALID",
          reason: "introspection refused the token: unsupported_token_type",
        });
      }
      expect(h.as.stats.introspections).toBe(1);
    });
  }

  it("an RFC 9701 answer signed over a minute ago (beyond the skew) is refused, whatever it says", async () => {
    const h = await harness(await startAs(), { introspectionResponse: "token-introspection+jwt" });
    const token = await getToken(h.as, "read_invoice");
    // The gateway's clock runs 2 minutes ahead of the AS's: every answer looks 2 minutes old; the token is
    // still well within its hour.
    h.clock.advance(120_000);
    await expect(h.authenticator.authenticate(token, routeFor("phantom"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
    // An answer from the future is refused too.
    h.clock.advance(-240_000);
    await expect(h.authenticator.authenticate(token, routeFor("phantom"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
    h.clock.advance(120_000);
    expect((await h.authenticator.authenticate(token, routeFor("phantom"))).facts.scopes).toContain(
      "read_invoice",
    );
  });

  it("an expired token is never served from the cache, and the AS's answer is checked against exp", async () => {
    const h = await harness(await startAs({ accessTokenTtlSeconds: 5 }));
    const token = await getToken(h.as, "read_invoice");
    const route = routeFor("mint");
    const first = await h.authenticator.authenticate(token, route);
    expect((first.facts.expiresAt ?? 0) - Date.now() / 1000).toBeLessThanOrEqual(5);
    h.clock.advance(6_000);
    await expect(h.authenticator.authenticate(token, route)).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
    expect(h.as.stats.introspections).toBe(2);
  });

  it("a token the AS has expired is inactive", async () => {
    const h = await harness(await startAs({ accessTokenTtlSeconds: 1 }));
    const token = await getToken(h.as, "read_invoice");
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    h.clock.set(Date.now());
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
  });

  it("a revoked token is rejected once its fingerprint is evicted", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const route = routeFor("phantom");
    await h.authenticator.authenticate(token, route);
    await revokeToken(h.as, token);
    // Until the revocation reaches the gateway the cached facts stand (bounded by maxTtlSeconds)...
    await expect(h.authenticator.authenticate(token, route)).resolves.toMatchObject({ cacheHit: true });
    // ...and once the fingerprint is evicted, the AS's answer counts.
    expect(h.caches.evictFingerprint(fingerprintToken(token))).toBeGreaterThan(0);
    await expect(h.authenticator.authenticate(token, route)).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
  });
});

// ---- AS failures ----------------------------------------------------------------------------------------------

describe("when the AS is down or slow", () => {
  it("cached tokens keep authenticating; uncached ones fail closed with PG_ERR_AS_UNAVAILABLE", async () => {
    const as = await startAs();
    const h = await harness(as, {}, { ownPools: true });
    const cached = await getToken(as, "read_invoice");
    const uncached = await getToken(as, "read_invoice");
    await h.authenticator.authenticate(cached, routeFor("mint"));
    await as.close();
    await expect(h.authenticator.authenticate(cached, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: true,
    });
    await expect(h.authenticator.authenticate(uncached, routeFor("mint"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
    // Not negatively cached: the failure was the AS's, not the token's.
    expect(h.caches.counts().entries).toBe(2);
  });

  it("a slow AS times out within responseMs", async () => {
    const as = await startAs();
    const h = await harness(as, { timeouts: { connectMs: 500, responseMs: 300 } });
    await h.authenticator.authenticate(await getToken(as, "read_invoice"), routeFor("mint")); // discovery done
    const token = await getToken(as, "read_invoice");
    as.setDelayMs(10_000);
    const started = performance.now();
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
      reason: "introspection: no answer within 300 ms",
    });
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1_000);
    as.setDelayMs(0);
    expect(await h.registry.metrics()).toMatch(/endpoint="introspection",outcome="timeout"\} 1/);
  });

  it("calls beyond maxPendingAsCalls fail at once instead of queueing behind a slow AS", async () => {
    const as = await startAs();
    const h = await harness(
      as,
      { timeouts: { connectMs: 500, responseMs: 5_000 } },
      { maxPendingAsCalls: 3 },
    );
    await h.authenticator.authenticate(await getToken(as, "read_invoice"), routeFor("mint")); // discovery done
    const tokens = await Promise.all(Array.from({ length: 7 }, () => getToken(as, "read_invoice")));
    const before = as.stats.introspections;
    as.setDelayMs(1_500);
    const started = performance.now();
    const settled = tokens.map((token) =>
      h.authenticator.authenticate(token, routeFor("mint")).then(
        () => ({ ok: true, reason: "", ms: performance.now() - started }),
        (error: unknown) => ({
          ok: false,
          reason: (error as { reason?: string }).reason ?? String(error),
          ms: performance.now() - started,
        }),
      ),
    );
    const results = await Promise.all(settled);
    const refused = results.filter((result) => !result.ok);
    expect(refused.map((result) => result.reason)).toEqual(
      Array.from(
        { length: 4 },
        () => "introspection: not sent, 3 calls to the authorization server already waiting or under way",
      ),
    );
    // Refused without waiting for the slow AS; the three sent calls waited for it and succeeded.
    for (const result of refused) expect(result.ms).toBeLessThan(1_000);
    const served = results.filter((result) => result.ok);
    expect(served).toHaveLength(3);
    for (const result of served) expect(result.ms).toBeGreaterThanOrEqual(1_400);
    expect(as.stats.introspections - before).toBe(3);
    const metrics = await h.registry.metrics();
    expect(metrics).toMatch(/endpoint="introspection",outcome="overloaded"\} 4/);
    // A refused call has no duration: the histogram counts the calls sent (the first token's and these 3) only.
    expect(metrics).toMatch(
      /as_request_duration_seconds_count\{auth_server="[^"]+",endpoint="introspection"\} 4/,
    );

    // The bound counts calls under way, not calls ever made: once they ended, a new token gets through.
    as.setDelayMs(0);
    await expect(h.authenticator.authenticate(tokens[6] ?? "", routeFor("mint"))).resolves.toMatchObject({
      cacheHit: false,
    });
  });

  it("discovery failure backs off instead of retrying on every request", async () => {
    const as = await startAs();
    const h = await harness(as, {
      issuer: `${as.issuer}/nope`,
      timeouts: { connectMs: 500, responseMs: 500 },
    });
    const token = await getToken(as, "read_invoice");
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).rejects.toMatchObject({
      reason: "discovery failed recently; backing off",
    });
  });
});

// ---- single-flight --------------------------------------------------------------------------------------------

describe("cache accounting", () => {
  it("the pipeline's path (cached, then loadUncached) counts one miss per uncached request, then hits", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const fingerprint = fingerprintToken(token);
    const route = routeFor("phantom");
    const before = h.caches.counts();
    expect(h.authenticator.cached(fingerprint, route)).toBeUndefined();
    const first = await h.authenticator.loadUncached(token, route, fingerprint);
    expect(first.cacheHit).toBe(false);
    expect(h.authenticator.cached(fingerprint, route)).toMatchObject({ cacheHit: true });
    const after = h.caches.counts();
    // One request, one miss: loadUncached does not look the cache up again.
    expect(after.misses - before.misses).toBe(1);
    expect(after.hits - before.hits).toBe(1);
    const again = h.caches.counts();
    await h.authenticator.authenticate(token, route);
    expect(h.caches.counts().misses).toBe(again.misses);
  });
});

describe("single-flight", () => {
  it("1,000 concurrent requests with one fresh token make exactly one introspection", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    await h.authenticator.authenticate(await getToken(h.as, "read_invoice"), routeFor("mint")); // discovery done
    h.as.stats.introspections = 0;
    const results = await Promise.all(
      Array.from({ length: 1_000 }, () => h.authenticator.authenticate(token, routeFor("mint"))),
    );
    expect(h.as.stats.introspections).toBe(1);
    expect(new Set(results.map((result) => result.upstreamAuthorization)).size).toBe(1);
  });

  it("1,000 concurrent exchanges with one fresh token make one introspection and one exchange", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const results = await Promise.all(
      Array.from({ length: 1_000 }, () => h.authenticator.authenticate(token, routeFor("exchange"))),
    );
    expect(h.as.stats.introspections).toBe(1);
    expect(h.as.stats.exchanges).toBe(1);
    expect(new Set(results.map((result) => result.upstreamAuthorization)).size).toBe(1);
  });
});

// ---- exchange -------------------------------------------------------------------------------------------------

describe("exchange mode", () => {
  it("refuses a token for another audience before exchanging; routes without the list never share that refusal", async () => {
    const as = await startAs();
    const h = await harness(as);
    const token = await getToken(as, "read_invoice");
    const billing = await getToken(as, "read_invoice", "urn:phantomgate:billing");
    const open = routeFor("exchange");
    const closed = routeFor("exchange", { acceptedAudiences: ["urn:phantomgate:billing"] });
    for (const mode of ["exchange", "mint"] as const) {
      const closedRoute =
        mode === "exchange" ? closed : routeFor("mint", { acceptedAudiences: ["urn:phantomgate:billing"] });
      const openRoute = mode === "exchange" ? open : routeFor("mint");
      // Concurrently: a load of the closed route must not answer the open route's request, nor the reverse.
      const [refused, passed] = await Promise.allSettled([
        h.authenticator.authenticate(token, closedRoute),
        h.authenticator.authenticate(token, openRoute),
      ]);
      expect(refused, mode).toMatchObject({ status: "rejected", reason: { code: "PG_ERR_TOKEN_AUDIENCE" } });
      expect(passed, mode).toMatchObject({ status: "fulfilled" });
    }
    // One exchange: the open route's. The closed route refused from the introspection alone.
    expect(as.stats.exchanges).toBe(1);
    await expect(h.authenticator.authenticate(billing, closed)).resolves.toMatchObject({ cacheHit: false });
    expect(as.stats.exchanges).toBe(2);
  });

  it("never asks for an exchange without scope, which would widen to all of the subject's scopes", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice high_video_stream");
    // No scope the route may pass upstream (compile refuses exchange rules without a ScopePolicy), or none the
    // token holds: refused before the token endpoint is called.
    for (const upstreamScopes of [[], ["write_invoice"]]) {
      await expect(
        h.authenticator.authenticate(token, routeFor("exchange", { upstreamScopes })),
      ).rejects.toMatchObject({ code: "PG_ERR_INSUFFICIENT_SCOPE" });
    }
    expect(h.as.stats.exchanges).toBe(0);
  });

  it("narrows the audience and the scopes, and reuses the exchanged token", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice high_video_stream video_metadata");
    const route = routeFor("exchange", {
      audience: "urn:invoices",
      upstreamScopes: ["read_invoice", "write_invoice"],
    });
    const result = await h.authenticator.authenticate(token, route);
    const { payload } = await verifyAsSigned(h.as, upstreamToken(result), "urn:invoices");
    expect(payload).toMatchObject({
      aud: "urn:invoices",
      scope: "read_invoice",
      sub: "demo-client",
      act: { sub: "gateway" },
    });
    expect(result.facts.scopes).toEqual(["read_invoice", "high_video_stream", "video_metadata"]);
    await expect(h.authenticator.authenticate(token, route)).resolves.toMatchObject({
      cacheHit: true,
      upstreamAuthorization: result.upstreamAuthorization,
    });
    expect(h.as.stats.exchanges).toBe(1);

    // Another audience is another exchange; the introspection is still shared.
    const video = routeFor("exchange", {
      audience: "urn:video",
      upstreamScopes: ["high_video_stream", "low_video_stream"],
    });
    const other = await h.authenticator.authenticate(token, video);
    expect(payloadOf(upstreamToken(other))).toMatchObject({ aud: "urn:video", scope: "high_video_stream" });
    expect(h.as.stats.exchanges).toBe(2);
    expect(h.as.stats.introspections).toBe(1);
  });

  it("refuses to exchange a token holding none of the route's upstream scopes (no silent widening)", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "video_metadata");
    await expect(h.authenticator.authenticate(token, routeFor("exchange"))).rejects.toMatchObject({
      code: "PG_ERR_INSUFFICIENT_SCOPE",
    });
    expect(h.as.stats.exchanges).toBe(0);
  });

  it("exchanges a revoked (inactive) token for nothing", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    await revokeToken(h.as, token);
    await expect(h.authenticator.authenticate(token, routeFor("exchange"))).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
  });

  it("a token revoked at the AS while its facts are cached: the refused exchange asks introspection again, and every route of the AS refuses it from then on", async () => {
    const h = await harness(await startAs());
    const token = await getToken(h.as, "read_invoice");
    const phantom = routeFor("phantom");
    await h.authenticator.authenticate(token, phantom); // introspection cached as active
    await revokeToken(h.as, token);
    expect(h.as.stats.introspections).toBe(1);
    await expect(h.authenticator.authenticate(token, routeFor("exchange"))).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
    // One exchange refused, one introspection to learn why; no 503 for the client to retry into.
    expect(h.as.stats.exchanges).toBe(1);
    expect(h.as.stats.introspections).toBe(2);
    // The cached active facts are gone: the phantom route refuses it too, without asking the AS again.
    await expect(h.authenticator.authenticate(token, phantom)).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
    await expect(h.authenticator.authenticate(token, routeFor("exchange"))).rejects.toMatchObject({
      code: "PG_ERR_TOKEN_INVALID",
    });
    expect(h.as.stats.introspections).toBe(2);
    expect(h.as.stats.exchanges).toBe(1);
  });

  it("re-exchanges once the exchanged token is past half its lifetime", async () => {
    const h = await harness(await startAs({ accessTokenTtlSeconds: 120 }));
    const token = await getToken(h.as, "read_invoice");
    const first = await h.authenticator.authenticate(token, routeFor("exchange"));
    h.clock.advance(61_000);
    const second = await h.authenticator.authenticate(token, routeFor("exchange"));
    expect(second.cacheHit).toBe(false);
    expect(upstreamToken(second)).not.toBe(upstreamToken(first));
    expect(h.as.stats.exchanges).toBe(2);
  });
});

// ---- jwt mode and JWKS ----------------------------------------------------------------------------------------

describe("jwt mode", () => {
  it("verifies the AS's JWT locally and forwards it as is, without calling introspection", async () => {
    const h = await harness(await startAs());
    const jwt = await getToken(h.as, "read_invoice", JWT_API);
    const result = await h.authenticator.authenticate(jwt, routeFor("jwt"));
    expect(upstreamToken(result)).toBe(jwt);
    expect(result.facts).toMatchObject({
      clientId: "demo-client",
      scopes: ["read_invoice"],
      audience: [JWT_API],
    });
    expect(h.as.stats.introspections).toBe(0);
    await expect(h.authenticator.authenticate(jwt, routeFor("jwt"))).resolves.toMatchObject({
      cacheHit: true,
    });
    expect(h.as.stats.jwksRequests).toBe(1);
  });

  it("rejects a wrong audience, a wrong issuer, an expired token, alg none and HS256", async () => {
    const as = await startAs();
    const h = await harness(as);
    const jwt = await getToken(as, "read_invoice", JWT_API);
    const rejected = (reason: RegExp) => ({
      code: "PG_ERR_TOKEN_INVALID",
      reason: expect.stringMatching(reason) as unknown,
    });

    await expect(
      h.authenticator.authenticate(jwt, routeFor("jwt", { audience: "urn:other" })),
    ).rejects.toMatchObject(rejected(/\(aud\)/));

    const otherIssuer = await harness(as, {
      issuer: "https://not-the-issuer.example",
      discovery: false,
      endpoints: { jwks: as.jwksUri },
    });
    await expect(otherIssuer.authenticator.authenticate(jwt, routeFor("jwt"))).rejects.toMatchObject(
      rejected(/\(iss\)/),
    );

    const { kid } = decodeProtectedHeader(jwt);
    const claims = { ...payloadOf(jwt), exp: Math.floor(Date.now() / 1000) + 600 };
    const none = new UnsecuredJWT(claims).encode();
    await expect(h.authenticator.authenticate(none, routeFor("jwt"))).rejects.toMatchObject(
      rejected(/ERR_JOSE_ALG_NOT_ALLOWED/),
    );
    const hs256 = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", ...(kid === undefined ? {} : { kid }) })
      .sign(new TextEncoder().encode("a-shared-secret-of-at-least-32-bytes!"));
    await expect(h.authenticator.authenticate(hs256, routeFor("jwt"))).rejects.toMatchObject(
      rejected(/ERR_JOSE_ALG_NOT_ALLOWED/),
    );
    // None of these made the gateway fetch keys again.
    expect(as.stats.jwksRequests).toBe(2);

    h.clock.advance(3_600_000 + 6_000); // past exp + skew
    await expect(h.authenticator.authenticate(jwt, routeFor("jwt"))).rejects.toMatchObject(
      rejected(/ERR_JWT_EXPIRED/),
    );
  });

  it("rejects an RFC 9701 introspection response replayed as an access token", async () => {
    const as = await startAs();
    const h = await harness(as, { introspectionResponse: "token-introspection+jwt" });
    const token = await getToken(as, "read_invoice");
    const response = await fetch(as.introspectionEndpoint, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from("gateway:gateway-secret").toString("base64")}`,
        accept: "application/token-introspection+jwt",
      },
      body: new URLSearchParams({ token }),
    });
    const signed = await response.text();
    await expect(
      h.authenticator.authenticate(signed, routeFor("jwt", { audience: "gateway" })),
    ).rejects.toMatchObject({ code: "PG_ERR_TOKEN_INVALID" });
  });

  it("JWKS rotation: a new kid triggers one refetch and verifies; made-up kids refetch at most once per cooldown", async () => {
    const as = await startAs();
    const h = await harness(as, { jwksCooldownMs: 30_000 });
    await h.authenticator.authenticate(await getToken(as, "read_invoice", JWT_API), routeFor("jwt"));
    expect(as.stats.jwksRequests).toBe(1);

    const newKid = await as.rotateSigningKey();
    const rotated = await getToken(as, "read_invoice", JWT_API);
    expect(decodeProtectedHeader(rotated).kid).toBe(newKid);
    h.clock.advance(30_000);
    await expect(h.authenticator.authenticate(rotated, routeFor("jwt"))).resolves.toMatchObject({
      cacheHit: false,
    });
    expect(as.stats.jwksRequests).toBe(2);

    // Tokens signed by a key the AS never had, each naming a fresh kid.
    const rogue = await generateKeyPair("ES256");
    const forge = (kid: string) =>
      new SignJWT({ ...payloadOf(rotated) })
        .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" })
        .sign(rogue.privateKey);
    for (let i = 0; i < 50; i += 1) {
      await expect(
        h.authenticator.authenticate(await forge(`garbage-${i}`), routeFor("jwt")),
      ).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
        reason: "JWT rejected: ERR_JWKS_NO_MATCHING_KEY",
      });
    }
    expect(as.stats.jwksRequests).toBe(2); // still inside the cooldown of the rotation refetch
    h.clock.advance(30_000);
    await Promise.allSettled(
      Array.from({ length: 50 }, async (_, i) =>
        h.authenticator.authenticate(await forge(`later-${i}`), routeFor("jwt")),
      ),
    );
    expect(as.stats.jwksRequests).toBe(3);
  });

  it("phantom with jwt introspection verifies JWTs signed with a rotated key", async () => {
    const as = await startAs();
    const h = await harness(as, { introspectionResponse: "jwt", jwksCooldownMs: 0 });
    await h.authenticator.authenticate(await getToken(as, "read_invoice"), routeFor("phantom"));
    await as.rotateSigningKey({ dropOld: true });
    const result = await h.authenticator.authenticate(
      await getToken(as, "read_invoice"),
      routeFor("phantom"),
    );
    expect(decodeProtectedHeader(upstreamToken(result)).kid).not.toBeUndefined();
    expect(as.stats.jwksRequests).toBe(2);
  });
});

// ---- snapshot swaps -------------------------------------------------------------------------------------------

describe("updateAuthServers", () => {
  it("keeps the client of an unchanged AS, replaces a changed one, and forgets a removed one", async () => {
    const as = await startAs();
    const h = await harness(as);
    const before = h.authenticator.authServerClient("demo/as");
    h.authenticator.updateAuthServers([authServerFor(as)]);
    expect(h.authenticator.authServerClient("demo/as")).toBe(before);
    h.authenticator.updateAuthServers([
      authServerFor(as, { timeouts: { connectMs: 1_000, responseMs: 1_500 } }),
    ]);
    expect(h.authenticator.authServerClient("demo/as")).not.toBe(before);
    h.authenticator.updateAuthServers([]);
    const token = await getToken(as, "read_invoice");
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
  });

  it("a timeout change keeps cached facts; an issuer change does not serve them", async () => {
    const as = await startAs();
    const h = await harness(as);
    const token = await getToken(as, "read_invoice");
    await h.authenticator.authenticate(token, routeFor("mint"));
    h.authenticator.updateAuthServers([
      authServerFor(as, { timeouts: { connectMs: 1_000, responseMs: 1_500 } }),
    ]);
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: true,
    });
    h.authenticator.updateAuthServers([
      authServerFor(as, { discovery: false, endpoints: { introspection: as.introspectionEndpoint } }),
    ]);
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: false,
    });
  });

  it("a lowered cache TTL applies at once: facts cached under the longer one are asked for again", async () => {
    const as = await startAs();
    const h = await harness(as);
    const token = await getToken(as, "read_invoice");
    await h.authenticator.authenticate(token, routeFor("phantom"));
    const { cache } = authServerFor(as);
    h.authenticator.updateAuthServers([authServerFor(as, { cache: { ...cache, maxTtlSeconds: 5 } })]);
    await expect(h.authenticator.authenticate(token, routeFor("phantom"))).resolves.toMatchObject({
      cacheHit: false,
    });
    h.clock.advance(6_000);
    await expect(h.authenticator.authenticate(token, routeFor("phantom"))).resolves.toMatchObject({
      cacheHit: false,
    });
    expect(as.stats.introspections).toBe(3);
  });

  it("turning requireAccessTokenTyp on does not serve facts cached under the laxer rule", async () => {
    const as = await startAs();
    const h = await harness(as);
    const jwt = await getToken(as, "read_invoice", JWT_API);
    const opaque = await getToken(as, "read_invoice");
    await h.authenticator.authenticate(jwt, routeFor("jwt"));
    await h.authenticator.authenticate(opaque, routeFor("phantom"));
    const introspections = as.stats.introspections;
    h.authenticator.updateAuthServers([authServerFor(as, { requireAccessTokenTyp: true })]);
    // The demo AS issues typ at+jwt (RFC 9068), so both still pass, after being verified again.
    await expect(h.authenticator.authenticate(jwt, routeFor("jwt"))).resolves.toMatchObject({
      cacheHit: false,
    });
    await expect(h.authenticator.authenticate(opaque, routeFor("phantom"))).resolves.toMatchObject({
      cacheHit: false,
    });
    expect(as.stats.introspections).toBe(introspections + 1);
  });
});

// ---- per-AuthServer cache bound -------------------------------------------------------------------------------

describe("cache.maxEntries", () => {
  it("bounds each AuthServer's own partition: a small one re-introspects its oldest token, a large one keeps all", async () => {
    const as = await startAs();
    const h = await harness(as);
    const cache = { maxTtlSeconds: 300, negativeTtlSeconds: 30, maxEntries: 2 };
    h.authenticator.updateAuthServers([
      authServerFor(as, { id: "demo/small", cache }),
      authServerFor(as, { id: "demo/large", cache: { ...cache, maxEntries: 10_000 } }),
    ]);
    const small = routeFor("mint", { authServer: "demo/small" });
    const large = routeFor("mint", { authServer: "demo/large" });
    const tokens = [
      await getToken(as, "read_invoice"),
      await getToken(as, "read_invoice"),
      await getToken(as, "read_invoice"),
    ];
    const [first, , third] = tokens as [string, string, string];

    for (const token of tokens) {
      await expect(h.authenticator.authenticate(token, small)).resolves.toMatchObject({ cacheHit: false });
      await expect(h.authenticator.authenticate(token, large)).resolves.toMatchObject({ cacheHit: false });
    }
    expect(as.stats.introspections).toBe(6);

    // The large AuthServer kept all three tokens, although the small one has been evicting all along.
    for (const token of tokens) {
      await expect(h.authenticator.authenticate(token, large)).resolves.toMatchObject({ cacheHit: true });
    }
    expect(as.stats.introspections).toBe(6);

    // The small one kept the two most recent: the third is still a hit, the first goes to the AS again.
    await expect(h.authenticator.authenticate(third, small)).resolves.toMatchObject({ cacheHit: true });
    await expect(h.authenticator.authenticate(first, small)).resolves.toMatchObject({ cacheHit: false });
    expect(as.stats.introspections).toBe(7);
    // Two tokens × (facts + minted JWT) in the small partition, three in the large; the small one evicted the
    // first and then the second token.
    expect(h.caches.counts()).toMatchObject({ entries: 10, evictions: 4 });
  });

  it("a maxEntries change empties that AuthServer's partition once; other AuthServers stay warm", async () => {
    const as = await startAs();
    const h = await harness(as);
    const other = authServerFor(as, { id: "demo/other" });
    h.authenticator.updateAuthServers([authServerFor(as), other]);
    const token = await getToken(as, "read_invoice");
    await h.authenticator.authenticate(token, routeFor("mint"));
    await h.authenticator.authenticate(token, routeFor("mint", { authServer: "demo/other" }));
    expect(as.stats.introspections).toBe(2);

    const resized = authServerFor(as, {
      cache: { maxTtlSeconds: 300, negativeTtlSeconds: 30, maxEntries: 500 },
    });
    h.authenticator.updateAuthServers([resized, other]);
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: false,
    });
    await expect(
      h.authenticator.authenticate(token, routeFor("mint", { authServer: "demo/other" })),
    ).resolves.toMatchObject({ cacheHit: true });
    expect(as.stats.introspections).toBe(3);

    // Applying the same bound again (with another change) keeps the new partition warm.
    h.authenticator.updateAuthServers([
      { ...resized, timeouts: { connectMs: 1_000, responseMs: 1_500 } },
      other,
    ]);
    await expect(h.authenticator.authenticate(token, routeFor("mint"))).resolves.toMatchObject({
      cacheHit: true,
    });
    // A removed AuthServer's partition goes with it.
    h.authenticator.updateAuthServers([resized]);
    expect(h.caches.counts().entries).toBe(2);
    expect(as.stats.introspections).toBe(3);
  });
});
