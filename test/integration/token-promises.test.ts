// A promise the token layer makes, pinned by tests that fail when it is broken: a cache entry is never served to a
// route it was not made for (jwt audience, mint and exchange scopes). The signed-answer checks are pinned with a
// stub AS in test/unit/token-authenticator-stub.test.ts.
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
