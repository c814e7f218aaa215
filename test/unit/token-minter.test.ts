// Minter: claims and scopes narrowed to the route, lifetime capped by the token, verifiable with the published JWKS.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  jwtVerify,
} from "jose";
import { describe, expect, it } from "vitest";
import type { CompiledRoute } from "../../src/snapshot/snapshot.ts";
import { createManualClock } from "../../src/tokens/clock.ts";
import { factsFromClaims } from "../../src/tokens/facts.ts";
import { DEFAULT_MINT_ISSUER, loadMinter } from "../../src/tokens/minter.ts";
import { compiledRoute } from "../helpers/compiled.ts";

function route(auth: Partial<CompiledRoute["auth"]> = {}): CompiledRoute {
  return compiledRoute("mint", { forwardClaims: ["tenant", "exp", "scope"], ...auth });
}

const clock = createManualClock(Date.UTC(2030, 0, 1));
const nowSeconds = Math.floor(clock.now() / 1000);
const facts = factsFromClaims({
  sub: "alice",
  client_id: "demo-client",
  scope: "read_invoice high_video_stream write_invoice",
  exp: nowSeconds + 3600,
  tenant: "acme",
  secret_stuff: "not for upstream",
});

describe("minter", () => {
  it("never copies scp, cnf or act through forwardClaims (a snapshot that names them still gets the narrowed scope only)", async () => {
    const minter = await loadMinter({ clock });
    const wide = factsFromClaims({
      client_id: "c",
      scp: ["read_invoice", "admin"],
      cnf: { jkt: "thumbprint" },
      act: { sub: "someone" },
      exp: nowSeconds + 600,
    });
    const minted = await minter.mintInternalJwt(
      wide,
      compiledRoute("mint", { upstreamScopes: ["read_invoice"], forwardClaims: ["scp", "cnf", "act"] }),
    );
    const payload = JSON.parse(
      Buffer.from(minted.token.split(".")[1] ?? "", "base64url").toString(),
    ) as Record<string, unknown>;
    expect(payload).not.toHaveProperty("scp");
    expect(payload).not.toHaveProperty("cnf");
    expect(payload).not.toHaveProperty("act");
    expect(payload["scope"]).toBe("read_invoice");
  });

  it("mints a JWT for the route: audience, narrowed scope, forwarded claims only", async () => {
    const minter = await loadMinter({ clock });
    const minted = await minter.mintInternalJwt(facts, route());
    const { payload, protectedHeader } = await jwtVerify(
      minted.token,
      createLocalJWKSet(await minter.jwks()),
      {
        issuer: DEFAULT_MINT_ISSUER,
        audience: "urn:invoices",
        currentDate: new Date(clock.now()),
        typ: "at+jwt",
      },
    );
    expect(protectedHeader).toMatchObject({ alg: "ES256", kid: minter.keyId, typ: "at+jwt" });
    expect(payload).toMatchObject({
      sub: "alice",
      client_id: "demo-client",
      scope: "read_invoice write_invoice",
      tenant: "acme",
      iat: nowSeconds,
      exp: nowSeconds + 60,
    });
    expect(payload).not.toHaveProperty("secret_stuff");
    expect(typeof payload.jti).toBe("string");
  });

  it("never lets forwardClaims override the claims it sets itself", async () => {
    const minter = await loadMinter({ clock });
    const hostile = factsFromClaims({ ...facts.claims, exp: nowSeconds + 3600, iss: "evil", aud: "evil" });
    const minted = await minter.mintInternalJwt(
      hostile,
      route({ forwardClaims: ["iss", "aud", "exp", "tenant"] }),
    );
    const payload = JSON.parse(Buffer.from(minted.token.split(".")[1]!, "base64url").toString()) as Record<
      string,
      unknown
    >;
    expect(payload["iss"]).toBe(DEFAULT_MINT_ISSUER);
    expect(payload["aud"]).toBe("urn:invoices");
    expect(payload["exp"]).toBe(nowSeconds + 60);
  });

  it("omits scope when the token holds none of the route's scopes, and uses the client as subject without sub", async () => {
    const minter = await loadMinter({ clock });
    const noScopes = factsFromClaims({ client_id: "svc", scope: "video_metadata", exp: nowSeconds + 10 });
    const minted = await minter.mintInternalJwt(noScopes, route());
    const payload = JSON.parse(Buffer.from(minted.token.split(".")[1]!, "base64url").toString()) as Record<
      string,
      unknown
    >;
    expect(payload).not.toHaveProperty("scope");
    expect(payload["sub"]).toBe("svc");
    expect(minted.expiresAt).toBe(nowSeconds + 10); // capped by the token's exp
  });

  it("refuses to mint without an audience", async () => {
    const minter = await loadMinter({ clock });
    const { audience: _audience, ...auth } = route().auth;
    await expect(minter.mintInternalJwt(facts, { ...route(), auth })).rejects.toMatchObject({
      code: "PG_ERR_INTERNAL",
    });
  });

  it("publishes only the public key", async () => {
    const minter = await loadMinter({ clock, issuer: "urn:custom" });
    const jwks = await minter.jwks();
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({
      kty: "EC",
      crv: "P-256",
      kid: minter.keyId,
      alg: "ES256",
      use: "sig",
    });
    expect(jwks.keys[0]).not.toHaveProperty("d");
    expect(minter.issuer).toBe("urn:custom");
  });

  it("loads a private JWK or a PKCS#8 PEM from a file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pg-minter-"));
    try {
      const ec = await generateKeyPair("ES256", { extractable: true });
      const jwkFile = join(dir, "key.json");
      await writeFile(jwkFile, JSON.stringify({ ...(await exportJWK(ec.privateKey)), kid: "k1" }));
      const fromJwk = await loadMinter({ clock, keyFile: jwkFile });
      expect(fromJwk.keyId).toBe("k1");
      const token = (await fromJwk.mintInternalJwt(facts, route())).token;
      expect(decodeProtectedHeader(token).kid).toBe("k1");
      await expect(
        jwtVerify(token, ec.publicKey, { currentDate: new Date(clock.now()) }),
      ).resolves.toBeDefined();

      const rsa = await generateKeyPair("PS256", { extractable: true });
      const pemFile = join(dir, "key.pem");
      await writeFile(pemFile, await exportPKCS8(rsa.privateKey));
      const fromPem = await loadMinter({ clock, keyFile: pemFile, algorithm: "PS256" });
      const rsaToken = (await fromPem.mintInternalJwt(facts, route())).token;
      await expect(
        jwtVerify(rsaToken, rsa.publicKey, { currentDate: new Date(clock.now()) }),
      ).resolves.toBeDefined();
      expect((await fromPem.jwks()).keys[0]).not.toHaveProperty("d");

      // A key file exported by WebCrypto says what the private key is for (`key_ops: ["sign"]`, `ext`): the
      // published key must not, or verifiers skip it.
      const webCrypto = await generateKeyPair("ES256", { extractable: true });
      const exported = await crypto.subtle.exportKey("jwk", webCrypto.privateKey);
      expect(exported.key_ops).toEqual(["sign"]);
      const webCryptoFile = join(dir, "webcrypto.json");
      await writeFile(webCryptoFile, JSON.stringify(exported));
      const fromWebCrypto = await loadMinter({ clock, keyFile: webCryptoFile });
      const published = await fromWebCrypto.jwks();
      expect(published.keys[0]).not.toHaveProperty("key_ops");
      expect(published.keys[0]).not.toHaveProperty("ext");
      const minted = (await fromWebCrypto.mintInternalJwt(facts, route())).token;
      await expect(
        jwtVerify(minted, createLocalJWKSet(published), { currentDate: new Date(clock.now()) }),
      ).resolves.toBeDefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
