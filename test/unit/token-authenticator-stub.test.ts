// The token layer against a stub AS, for answers the demo AS never gives: exchanged tokens without a stated
// lifetime, sender-constrained (cnf) JWTs, signed introspection answers for bound tokens, JWTs whose typ is JWT
// or missing.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import type { CompiledAuthServer, CompiledRoute } from "../../src/snapshot/snapshot.ts";
import { createAuthServerClient } from "../../src/tokens/as-client.ts";
import { createAuthenticator, UNSTATED_EXCHANGE_LIFETIME_SECONDS } from "../../src/tokens/authenticate.ts";
import { createManualClock, type ManualClock } from "../../src/tokens/clock.ts";
import { loadMinter } from "../../src/tokens/minter.ts";
import { createTokenCacheSet } from "../../src/tokens/token-cache.ts";
import { compiledRoute } from "../helpers/compiled.ts";
import { json, startStubAs, stubAuthServer, type StubAs } from "../helpers/stub-as.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const AUDIENCE = "urn:api";

function route(mode: CompiledRoute["auth"]["mode"], authServer: string): CompiledRoute {
  return compiledRoute(mode, { authServer, audience: AUDIENCE, upstreamScopes: ["read"] });
}

/** The stub AS with an ES256 key at /jwks, and an authenticator in front of it on a manual clock. */
async function setUp(): Promise<{
  stub: StubAs;
  server: CompiledAuthServer;
  clock: ManualClock;
  /** `typ` null: a header without typ. */
  sign: (claims: Record<string, unknown>, typ?: string | null) => Promise<string>;
  authenticator: ReturnType<typeof createAuthenticator>;
}> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
  const stub = await startStubAs((_req, res) => json(res, 404, { error: "not_found" }));
  cleanups.push(() => stub.close());
  const server = stubAuthServer(stub);
  const clock = createManualClock(Date.now());
  const sign = (claims: Record<string, unknown>, typ: string | null = "at+jwt"): Promise<string> =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "k1", ...(typ === null ? {} : { typ }) })
      .setIssuer(stub.url)
      .setIssuedAt(Math.floor(clock.now() / 1000))
      .setExpirationTime(Math.floor(clock.now() / 1000) + 3600)
      .sign(privateKey);
  stub.handle = (req, res) => {
    if (req.url === "/jwks") json(res, 200, { keys: [jwk] });
    else json(res, 404, { error: "not_found" });
  };
  const dispatcher = new Agent();
  cleanups.push(() => dispatcher.close());
  const authenticator = createAuthenticator({
    authServers: [server],
    dispatcher,
    clock,
    caches: createTokenCacheSet({ clock }),
    minter: await loadMinter({ clock }),
  });
  cleanups.push(() => authenticator.close());
  return { stub, server, clock, sign, authenticator };
}

describe("exchange mode", () => {
  it("reuses an exchanged token whose lifetime the AS does not state for half the assumed lifetime only", async () => {
    const { stub, server, clock, authenticator } = await setUp();
    let exchanges = 0;
    stub.handle = (req, res) => {
      if (req.url === "/introspect") {
        json(res, 200, {
          active: true,
          scope: "read",
          sub: "alice",
          exp: Math.floor(clock.now() / 1000) + 3600,
        });
      } else if (req.url === "/token") {
        exchanges += 1;
        // Opaque, and no expires_in: nothing says when it ends.
        json(res, 200, { access_token: `opaque-${exchanges}`, token_type: "Bearer" });
      } else json(res, 404, {});
    };
    const exchange = route("exchange", server.id);
    const first = await authenticator.authenticate("client-token", exchange);
    expect(first.upstreamAuthorization).toBe("Bearer opaque-1");
    clock.advance((UNSTATED_EXCHANGE_LIFETIME_SECONDS / 2) * 1000 - 1_000);
    await expect(authenticator.authenticate("client-token", exchange)).resolves.toMatchObject({
      cacheHit: true,
      upstreamAuthorization: "Bearer opaque-1",
    });
    clock.advance(1_000);
    await expect(authenticator.authenticate("client-token", exchange)).resolves.toMatchObject({
      cacheHit: false,
      upstreamAuthorization: "Bearer opaque-2",
    });
    expect(exchanges).toBe(2);
  });
});

describe("tokens not valid yet", () => {
  it("are refused until their nbf only, not for the whole negative TTL, in a JSON and a signed answer alike", async () => {
    for (const responseType of ["json", "jwt"] as const) {
      const { stub, server, clock, sign } = await setUp();
      const jwksHandler = stub.handle;
      let introspections = 0;
      const nbf = Math.floor(clock.now() / 1000) + 10; // valid in 10 s; the negative TTL is 30 s
      const claims = { active: true, sub: "alice", scope: "read", nbf };
      stub.handle = (req, res, body) => {
        if (req.url !== "/introspect") {
          jwksHandler(req, res, body);
          return;
        }
        introspections += 1;
        if (responseType === "json") json(res, 200, claims);
        else
          void sign(claims).then((jwt) => res.writeHead(200, { "content-type": "application/jwt" }).end(jwt));
      };
      const dispatcher = new Agent();
      cleanups.push(() => dispatcher.close());
      const authenticator = createAuthenticator({
        authServers: [{ ...server, introspectionResponse: responseType }],
        dispatcher,
        clock,
        caches: createTokenCacheSet({ clock }),
        minter: await loadMinter({ clock }),
      });
      cleanups.push(() => authenticator.close());
      const mint = route("mint", server.id);
      await expect(authenticator.authenticate("early-token", mint)).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
      });
      clock.advance(5_000);
      await expect(authenticator.authenticate("early-token", mint)).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
      });
      expect(introspections, responseType).toBe(1); // the refusal is cached…
      clock.advance(5_000);
      await expect(authenticator.authenticate("early-token", mint)).resolves.toMatchObject({
        cacheHit: false,
      });
      expect(introspections, responseType).toBe(2); // …until nbf, not for 30 s
    }
  });
});

describe("sender-constrained tokens (cnf)", () => {
  it("jwt mode refuses a bound JWT presented as a bearer token, and caches the refusal", async () => {
    const { stub, server, sign, authenticator } = await setUp();
    const jwtRoute = route("jwt", server.id);
    const bound = await sign({ sub: "alice", aud: AUDIENCE, scope: "read", cnf: { jkt: "thumbprint" } });
    for (let i = 0; i < 2; i += 1) {
      await expect(authenticator.authenticate(bound, jwtRoute)).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
        reason: "sender-constrained token (cnf) without proof of possession",
      });
    }
    const plain = await sign({ sub: "alice", aud: AUDIENCE, scope: "read" });
    await expect(authenticator.authenticate(plain, jwtRoute)).resolves.toMatchObject({
      upstreamAuthorization: `Bearer ${plain}`,
    });
    expect(stub.requests.filter((request) => request.path === "/jwks")).toHaveLength(1);
  });

  it("a signed introspection answer (application/jwt) for a bound token is inactive", async () => {
    const { stub, server, clock, sign } = await setUp();
    const jwksHandler = stub.handle;
    let claims: Record<string, unknown> = {};
    stub.handle = (req, res, body) => {
      if (req.url !== "/introspect") {
        jwksHandler(req, res, body);
        return;
      }
      void sign(claims).then((jwt) => res.writeHead(200, { "content-type": "application/jwt" }).end(jwt));
    };
    const dispatcher = new Agent();
    cleanups.push(() => dispatcher.close());
    const client = createAuthServerClient({ ...server, introspectionResponse: "jwt" }, { dispatcher, clock });
    claims = { sub: "alice", scope: "read", cnf: { jkt: "thumbprint" } };
    await expect(client.introspectToken("t")).resolves.toEqual({
      active: false,
      reason: "sender-constrained token (cnf) without proof of possession",
    });
    claims = { sub: "alice", scope: "read" };
    await expect(client.introspectToken("t")).resolves.toMatchObject({ active: true, sub: "alice" });
  });
});

describe("requireAccessTokenTyp", () => {
  it("jwt mode: with it only typ at+jwt is an access token; without it JWT and no typ are too", async () => {
    const { server, sign, authenticator } = await setUp();
    const strictServer: CompiledAuthServer = { ...server, id: "test/strict", requireAccessTokenTyp: true };
    authenticator.updateAuthServers([server, strictServer]);
    const claims = { sub: "alice", aud: AUDIENCE, scope: "read" };
    const lax = route("jwt", server.id);
    const strict = route("jwt", strictServer.id);
    const atJwt = await sign(claims, "at+jwt");
    await expect(authenticator.authenticate(atJwt, lax)).resolves.toMatchObject({ facts: { sub: "alice" } });
    await expect(authenticator.authenticate(atJwt, strict)).resolves.toMatchObject({
      facts: { sub: "alice" },
    });
    for (const typ of ["JWT", null]) {
      const token = await sign(claims, typ);
      await expect(authenticator.authenticate(token, lax), String(typ)).resolves.toMatchObject({
        facts: { sub: "alice" },
      });
      await expect(authenticator.authenticate(token, strict), String(typ)).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
        reason: "JWT is not an access token (typ)",
      });
    }
    const answer = await sign(claims, "token-introspection+jwt");
    for (const target of [lax, strict]) {
      await expect(authenticator.authenticate(answer, target)).rejects.toMatchObject({
        code: "PG_ERR_TOKEN_INVALID",
      });
    }
  });

  it("phantom with responseType jwt: with it an answer whose JWT is not typ at+jwt is an AS error", async () => {
    const { stub, server, clock, sign } = await setUp();
    const jwksHandler = stub.handle;
    let typ: string | null = "JWT";
    stub.handle = (req, res, body) => {
      if (req.url !== "/introspect") {
        jwksHandler(req, res, body);
        return;
      }
      void sign({ sub: "alice", scope: "read" }, typ).then((jwt) =>
        res.writeHead(200, { "content-type": "application/jwt" }).end(jwt),
      );
    };
    const dispatcher = new Agent();
    cleanups.push(() => dispatcher.close());
    const options = { dispatcher, clock };
    const lax = createAuthServerClient({ ...server, introspectionResponse: "jwt" }, options);
    const strict = createAuthServerClient(
      { ...server, introspectionResponse: "jwt", requireAccessTokenTyp: true },
      options,
    );
    await expect(lax.introspectToken("t")).resolves.toMatchObject({ active: true, sub: "alice" });
    await expect(strict.introspectToken("t")).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
    typ = "at+jwt";
    await expect(strict.introspectToken("t")).resolves.toMatchObject({ active: true, sub: "alice" });
  });
});
