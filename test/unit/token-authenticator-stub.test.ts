// The token layer against a stub AS, for answers the demo AS never gives: exchanged tokens it cannot verify,
// signed introspection answers from a key it does not publish or for another client, sender-constrained (cnf)
// JWTs, signed introspection answers for bound tokens, JWTs whose typ is JWT or missing.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import type { CompiledAuthServer, CompiledRoute } from "../../src/snapshot/snapshot.ts";
import { createAuthServerClient } from "../../src/tokens/as-client.ts";
import { createAuthenticator } from "../../src/tokens/authenticate.ts";
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
async function setUp(overrides: Partial<CompiledAuthServer> = {}): Promise<{
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
  const server = stubAuthServer(stub, overrides);
  const clock = createManualClock(Date.now());
  const sign = (claims: Record<string, unknown>, typ: string | null = "at+jwt"): Promise<string> =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "k1", ...(typ === null ? {} : { typ }) })
      .setIssuer(typeof claims["iss"] === "string" ? claims["iss"] : stub.url)
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
  /** The stub answers introspection (active, scope read) and exchange with `issue()`; JWKS as set up. */
  function exchangeWith(
    stub: StubAs,
    clock: ManualClock,
    issue: () => Promise<Record<string, unknown>>,
  ): { exchanges: () => number } {
    const jwks = stub.handle;
    let exchanges = 0;
    stub.handle = (req, res, body) => {
      if (req.url === "/introspect") {
        json(res, 200, {
          active: true,
          scope: "read",
          sub: "alice",
          exp: Math.floor(clock.now() / 1000) + 7200,
        });
      } else if (req.url === "/token") {
        exchanges += 1;
        void issue().then((answer) => json(res, 200, answer));
      } else jwks(req, res, body);
    };
    return { exchanges: () => exchanges };
  }

  it("forwards an exchanged JWT this AS signed for the audience asked for, and takes its exp when expires_in is absent", async () => {
    const { stub, server, clock, sign, authenticator } = await setUp();
    const issued = await sign({ aud: AUDIENCE, scope: "read" });
    exchangeWith(stub, clock, () => Promise.resolve({ access_token: issued, token_type: "Bearer" }));
    const result = await authenticator.authenticate("client-token", route("exchange", server.id));
    expect(result.upstreamAuthorization).toBe(`Bearer ${issued}`);
  });

  it("refuses an exchanged token it cannot verify as this AS's access token for the audience asked for", async () => {
    const { privateKey: strangerKey } = await generateKeyPair("ES256");
    const cases: [string, (setup: Awaited<ReturnType<typeof setUp>>) => Promise<string>, RegExp][] = [
      ["opaque", () => Promise.resolve("opaque-token"), /issued token rejected \(ERR_JWS_INVALID\)/],
      [
        "signed by a key the AS does not publish",
        ({ stub, clock }) =>
          new SignJWT({ aud: AUDIENCE, scope: "read" })
            .setProtectedHeader({ alg: "ES256", kid: "k1", typ: "at+jwt" })
            .setIssuer(stub.url)
            .setExpirationTime(Math.floor(clock.now() / 1000) + 600)
            .sign(strangerKey),
        /issued token rejected \(ERR_JWS_SIGNATURE_VERIFICATION_FAILED\)/,
      ],
      [
        "from another issuer",
        ({ sign }) => sign({ aud: AUDIENCE, scope: "read", iss: "https://evil.example" }),
        /issued token rejected \(ERR_JWT_CLAIM_VALIDATION_FAILED \(iss\)\)/,
      ],
      [
        "for another audience",
        ({ sign }) => sign({ aud: "urn:other", scope: "read" }),
        /issued token rejected \(ERR_JWT_CLAIM_VALIDATION_FAILED \(aud\)\)/,
      ],
      [
        "carrying a scope beyond the one asked for",
        ({ sign }) => sign({ aud: AUDIENCE, scope: "read admin" }),
        /granted scopes exceed the requested ones/,
      ],
      [
        "not an access token by its typ",
        ({ sign }) => sign({ aud: AUDIENCE, scope: "read" }, "id+jwt"),
        /issued JWT is not an access token \(typ\)/,
      ],
    ];
    for (const [what, token, reason] of cases) {
      const setup = await setUp();
      const counter = exchangeWith(setup.stub, setup.clock, async () => ({
        access_token: await token(setup),
        token_type: "Bearer",
        scope: "read",
      }));
      const exchange = route("exchange", setup.server.id);
      await expect(setup.authenticator.authenticate("client-token", exchange), what).rejects.toMatchObject({
        code: "PG_ERR_AS_UNAVAILABLE",
        reason: expect.stringMatching(reason) as unknown,
      });
      // Nothing was cached: the next request asks again.
      await expect(setup.authenticator.authenticate("client-token", exchange), what).rejects.toMatchObject({
        code: "PG_ERR_AS_UNAVAILABLE",
      });
      expect(counter.exchanges(), what).toBe(2);
    }
  });
});

describe("signed answers from the AS", () => {
  /** The stub answers introspection with `body` as `type`; JWKS as set up. */
  function answerIntrospection(stub: StubAs, type: string, body: string): void {
    const jwks = stub.handle;
    stub.handle = (req, res, raw) => {
      if (req.url === "/introspect") res.writeHead(200, { "content-type": type }).end(body);
      else jwks(req, res, raw);
    };
  }

  it("an application/jwt answer signed by a key the AS does not publish (same kid) is refused", async () => {
    const { stub, server, clock, authenticator } = await setUp({ introspectionResponse: "jwt" });
    const { privateKey: rogue } = await generateKeyPair("ES256");
    const now = Math.floor(clock.now() / 1000);
    const forged = await new SignJWT({ scope: "read", client_id: "c" })
      .setProtectedHeader({ alg: "ES256", kid: "k1", typ: "at+jwt" })
      .setIssuer(stub.url)
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(rogue);
    answerIntrospection(stub, "application/jwt", forged);
    await expect(authenticator.authenticate("opaque-1", route("phantom", server.id))).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
  });

  it("an RFC 9701 answer addressed to another client (aud), or of another typ, is refused", async () => {
    const answer = { active: true, scope: "read", client_id: "c" };
    for (const [what, aud, typ] of [
      ["another client", "another-client", "token-introspection+jwt"],
      ["an access token's typ", "gateway", "at+jwt"],
    ] as const) {
      const { stub, server, sign, authenticator } = await setUp({
        introspectionResponse: "token-introspection+jwt",
      });
      answerIntrospection(
        stub,
        "application/token-introspection+jwt",
        await sign({ aud, token_introspection: answer }, typ),
      );
      await expect(
        authenticator.authenticate("opaque-2", route("phantom", server.id)),
        what,
      ).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
    }
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
