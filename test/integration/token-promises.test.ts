// Promises the token layer makes, each pinned by a test that fails when the promise is broken: a cache entry is
// never served to a route it was not made for (jwt audience, mint and exchange scopes), and signed answers from
// the AS are verified (a key it does not publish, an RFC 9701 answer for another client or of another typ).
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import type { CompiledAuthServer } from "../../src/snapshot/snapshot.ts";
import { createAuthenticator } from "../../src/tokens/authenticate.ts";
import { bearerToken } from "../../src/tokens/bearer.ts";
import { createManualClock } from "../../src/tokens/clock.ts";
import { loadMinter } from "../../src/tokens/minter.ts";
import { createTokenCacheSet } from "../../src/tokens/token-cache.ts";
import { compiledAuthServer, compiledRoute, JWT_API } from "../helpers/compiled.ts";
import { json, startStubAs, stubAuthServer } from "../helpers/stub-as.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function demo(server: Partial<CompiledAuthServer> = {}) {
  const as: DemoAuthServer = await startDemoAuthServer({ port: 0 });
  cleanups.push(() => as.close());
  const clock = createManualClock(Date.now());
  const dispatcher = new Agent();
  cleanups.push(() => dispatcher.close());
  const authenticator = createAuthenticator({
    authServers: [compiledAuthServer(as.issuer, server)],
    dispatcher,
    clock,
    caches: createTokenCacheSet({ clock }),
    minter: await loadMinter({ clock }),
  });
  cleanups.push(() => authenticator.close());
  return { as, authenticator };
}

async function getToken(as: DemoAuthServer, scope: string, resource?: string): Promise<string> {
  const form = new URLSearchParams({ grant_type: "client_credentials", scope });
  if (resource !== undefined) form.set("resource", resource);
  const r = await fetch(as.tokenEndpoint, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from("demo-client:demo-secret").toString("base64")}` },
    body: form,
  });
  return ((await r.json()) as { access_token: string }).access_token;
}

const scopeOf = (auth: string) =>
  (
    JSON.parse(Buffer.from(bearerToken(auth).split(".")[1] ?? "", "base64url").toString()) as {
      scope?: string;
    }
  ).scope;

describe("cache purposes keep routes apart", () => {
  it("jwt mode: a JWT cached for one audience is still refused by a route expecting another", async () => {
    const { as, authenticator } = await demo();
    const jwt = await getToken(as, "read_invoice", JWT_API);
    await authenticator.authenticate(jwt, compiledRoute("jwt"));
    await expect(
      authenticator.authenticate(jwt, compiledRoute("jwt", { audience: "urn:other" })),
    ).rejects.toMatchObject({ code: "PG_ERR_TOKEN_INVALID" });
  });

  it("mint: two routes with one audience but different policies never share a minted JWT", async () => {
    const { as, authenticator } = await demo();
    const token = await getToken(as, "read_invoice write_invoice");
    const wide = await authenticator.authenticate(
      token,
      compiledRoute("mint", { upstreamScopes: ["read_invoice", "write_invoice"] }),
    );
    expect(scopeOf(wide.upstreamAuthorization)).toBe("read_invoice write_invoice");
    const narrow = await authenticator.authenticate(
      token,
      compiledRoute("mint", { upstreamScopes: ["read_invoice"] }),
    );
    expect(scopeOf(narrow.upstreamAuthorization)).toBe("read_invoice");
  });

  it("exchange: two routes with one audience but different policies never share an exchanged token", async () => {
    const { as, authenticator } = await demo();
    const token = await getToken(as, "read_invoice write_invoice");
    const wide = await authenticator.authenticate(
      token,
      compiledRoute("exchange", { upstreamScopes: ["read_invoice", "write_invoice"] }),
    );
    expect(scopeOf(wide.upstreamAuthorization)).toBe("read_invoice write_invoice");
    const narrow = await authenticator.authenticate(
      token,
      compiledRoute("exchange", { upstreamScopes: ["read_invoice"] }),
    );
    expect(scopeOf(narrow.upstreamAuthorization)).toBe("read_invoice");
  });
});

describe("signed answers from the AS", () => {
  async function stubWithKey(introspectionResponse: CompiledAuthServer["introspectionResponse"]) {
    const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
    const rogue = await generateKeyPair("ES256", { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    let answer: { type: string; body: string } = { type: "application/json", body: "{}" };
    const stub = await startStubAs((req, res) => {
      if (req.url === "/jwks") json(res, 200, { keys: [jwk] });
      else res.writeHead(200, { "content-type": answer.type }).end(answer.body);
    });
    cleanups.push(() => stub.close());
    const server = stubAuthServer(stub, { introspectionResponse });
    const clock = createManualClock(Date.now());
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
    const now = Math.floor(clock.now() / 1000);
    const sign = (claims: Record<string, unknown>, header: Record<string, unknown>, key = privateKey) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid: "k1", ...header })
        .setIssuer(stub.url)
        .setIssuedAt(now)
        .setExpirationTime(now + 600)
        .sign(key);
    const route = compiledRoute("phantom", { authServer: "test/stub", audience: "urn:api" });
    return {
      authenticator,
      sign,
      route,
      rogue,
      set: (type: string, body: string) => (answer = { type, body }),
    };
  }

  it("phantom/jwt: an answer signed with a key the AS does not publish (same kid) is refused", async () => {
    const s = await stubWithKey("jwt");
    s.set(
      "application/jwt",
      await s.sign({ scope: "read", client_id: "c" }, { typ: "at+jwt" }, s.rogue.privateKey),
    );
    await expect(s.authenticator.authenticate("opaque-1", s.route)).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
  });

  it("RFC 9701: an answer addressed to another client (aud) is refused", async () => {
    const s = await stubWithKey("token-introspection+jwt");
    s.set(
      "application/token-introspection+jwt",
      await s.sign(
        { aud: "another-client", token_introspection: { active: true, scope: "read", client_id: "c" } },
        { typ: "token-introspection+jwt" },
      ),
    );
    await expect(s.authenticator.authenticate("opaque-2", s.route)).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
  });

  it("RFC 9701: a JWT of another typ (an access token) is not taken as an introspection answer", async () => {
    const s = await stubWithKey("token-introspection+jwt");
    s.set(
      "application/token-introspection+jwt",
      await s.sign(
        { aud: "gateway", token_introspection: { active: true, scope: "read", client_id: "c" } },
        { typ: "at+jwt" },
      ),
    );
    await expect(s.authenticator.authenticate("opaque-3", s.route)).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
    });
  });
});
