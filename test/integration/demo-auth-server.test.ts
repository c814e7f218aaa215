// Integration tests for the demo authorization server: real oidc-provider, real sockets on port 0, jose for every signature.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

import {
  SignJWT,
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  type CryptoKey,
  type JSONWebKeySet,
} from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  JWT_API_RESOURCE,
  OPAQUE_API_RESOURCES,
  startDemoAuthServer,
  type DemoAuthServer,
} from "../../src/demo/auth-server.ts";

const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";
const ALL_SCOPES = "read_invoice write_invoice high_video_stream low_video_stream video_metadata";

type ClientAuth =
  | { readonly basic: readonly [clientId: string, secret: string] }
  | { readonly post: readonly [clientId: string, secret: string] }
  | { readonly assertion: () => Promise<string> };

const demoBasic: ClientAuth = { basic: ["demo-client", "demo-secret"] };
const demoPost: ClientAuth = { post: ["demo-client", "demo-secret"] };
const partner: ClientAuth = { basic: ["partner-client", "partner-secret"] };
const gateway: ClientAuth = { basic: ["gateway", "gateway-secret"] };
const gatewayPost: ClientAuth = { post: ["gateway-post", "gateway-secret"] };

interface JsonResponse {
  readonly status: number;
  readonly contentType: string;
  readonly json: Record<string, unknown>;
}

async function postForm(
  url: string,
  params: Record<string, string>,
  auth: ClientAuth,
  accept?: string,
): Promise<Response> {
  const body = new URLSearchParams(params);
  const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
  if (accept !== undefined) headers["accept"] = accept;
  if ("basic" in auth) {
    const [id, secret] = auth.basic;
    headers["authorization"] = `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;
  } else if ("post" in auth) {
    body.set("client_id", auth.post[0]);
    body.set("client_secret", auth.post[1]);
  } else {
    body.set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    body.set("client_assertion", await auth.assertion());
  }
  return fetch(url, { method: "POST", headers, body });
}

async function asJson(response: Response): Promise<JsonResponse> {
  return {
    status: response.status,
    contentType: response.headers.get("content-type") ?? "",
    json: (await response.json()) as Record<string, unknown>,
  };
}

function stringField(record: Record<string, unknown>, name: string): string {
  const value = record[name];
  if (typeof value !== "string") throw new Error(`expected string field ${name}`);
  return value;
}

function numberField(record: Record<string, unknown>, name: string): number {
  const value = record[name];
  if (typeof value !== "number") throw new Error(`expected number field ${name}`);
  return value;
}

async function getToken(
  as: DemoAuthServer,
  scope: string,
  auth: ClientAuth = demoBasic,
  extra: Record<string, string> = {},
): Promise<string> {
  const response = await asJson(
    await postForm(as.tokenEndpoint, { grant_type: "client_credentials", scope, ...extra }, auth),
  );
  expect(response.status).toBe(200);
  return stringField(response.json, "access_token");
}

async function introspect(
  as: DemoAuthServer,
  token: string,
  auth: ClientAuth = gateway,
): Promise<JsonResponse> {
  return asJson(await postForm(as.introspectionEndpoint, { token }, auth, "application/json"));
}

async function exchange(as: DemoAuthServer, params: Record<string, string>, auth: ClientAuth = gateway) {
  return asJson(await postForm(as.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, ...params }, auth));
}

async function fetchJwks(as: DemoAuthServer): Promise<JSONWebKeySet> {
  return (await (await fetch(as.jwksUri)).json()) as JSONWebKeySet;
}

/** Verifies against the AS's published JWKS as it is now (a fresh set each time: rotation tests need that). */
async function verifyWithAs(as: DemoAuthServer, jwt: string, typ: string, audience?: string) {
  return jwtVerify(jwt, createRemoteJWKSet(new URL(as.jwksUri)), {
    issuer: as.issuer,
    typ,
    algorithms: ["ES256", "RS256"],
    ...(audience === undefined ? {} : { audience }),
  });
}

function isOpaque(token: string): boolean {
  return token.split(".").length !== 3;
}

describe("demo authorization server", () => {
  let as: DemoAuthServer;
  let gatewayJwtKey: CryptoKey;
  let gatewayJwt: ClientAuth;

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    gatewayJwtKey = privateKey;
    const publicJwk = { ...(await exportJWK(publicKey)), kid: "gw-1", alg: "ES256", use: "sig" };
    as = await startDemoAuthServer({ gatewayClientJwks: { keys: [publicJwk] } });
    gatewayJwt = {
      assertion: () =>
        new SignJWT({})
          .setProtectedHeader({ alg: "ES256", kid: "gw-1" })
          .setIssuer("gateway-jwt")
          .setSubject("gateway-jwt")
          .setAudience(as.issuer)
          .setJti(crypto.randomUUID())
          .setIssuedAt()
          .setExpirationTime("1m")
          .sign(gatewayJwtKey),
    };
  });

  afterAll(async () => {
    await as.close();
  });

  it("publishes OpenID discovery with the endpoints it serves", async () => {
    expect(as.port).toBeGreaterThan(0);
    expect(as.issuer).toBe(`http://127.0.0.1:${as.port}`);
    const response = await fetch(`${as.issuer}/.well-known/openid-configuration`);
    expect(response.status).toBe(200);
    const discovery = (await response.json()) as Record<string, unknown>;
    expect(discovery).toMatchObject({
      issuer: as.issuer,
      token_endpoint: as.tokenEndpoint,
      introspection_endpoint: as.introspectionEndpoint,
      revocation_endpoint: as.revocationEndpoint,
      jwks_uri: as.jwksUri,
    });
    expect(discovery["grant_types_supported"]).toEqual(
      expect.arrayContaining(["client_credentials", TOKEN_EXCHANGE]),
    );
    expect(discovery["scopes_supported"]).toEqual(expect.arrayContaining(ALL_SCOPES.split(" ")));
    const jwks = await fetchJwks(as);
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).not.toHaveProperty("d");
  });

  it("issues opaque tokens by client_secret_basic and client_secret_post", async () => {
    for (const auth of [demoBasic, demoPost]) {
      const response = await asJson(
        await postForm(as.tokenEndpoint, { grant_type: "client_credentials", scope: "read_invoice" }, auth),
      );
      expect(response.status).toBe(200);
      expect(response.json).toMatchObject({ token_type: "Bearer", expires_in: 3600, scope: "read_invoice" });
      expect(isOpaque(stringField(response.json, "access_token"))).toBe(true);
    }
  });

  it("rejects bad client credentials and unknown scopes", async () => {
    const badSecret = await asJson(
      await postForm(
        as.tokenEndpoint,
        { grant_type: "client_credentials" },
        { basic: ["demo-client", "nope"] },
      ),
    );
    expect(badSecret.status).toBe(401);
    expect(badSecret.json["error"]).toBe("invalid_client");

    const unknownScope = await asJson(
      await postForm(
        as.tokenEndpoint,
        { grant_type: "client_credentials", scope: "read_invoice reed_invoice" },
        demoBasic,
      ),
    );
    expect(unknownScope.status).toBe(400);
    expect(unknownScope.json).toMatchObject({ error: "invalid_scope", scope: "reed_invoice" });
  });

  it("introspects an opaque token as RFC 7662 JSON with scope, sub and client_id", async () => {
    const token = await getToken(as, "read_invoice video_metadata");
    const before = Math.floor(Date.now() / 1000);
    for (const auth of [gateway, gatewayPost, gatewayJwt]) {
      const response = await introspect(as, token, auth);
      expect(response.status).toBe(200);
      expect(response.contentType).toMatch(/^application\/json/);
      expect(response.json).toMatchObject({
        active: true,
        scope: "read_invoice video_metadata",
        client_id: "demo-client",
        sub: "demo-client",
        iss: as.issuer,
        token_type: "Bearer",
      });
      const { exp, iat, jti } = response.json;
      expect(numberField({ exp }, "exp") - numberField({ iat }, "iat")).toBe(3600);
      expect(iat).toBeGreaterThanOrEqual(before - 1);
      // The jti identifies the token without being it.
      expect(typeof jti).toBe("string");
      expect(jti).not.toBe(token);
    }

    const partnerToken = await getToken(as, "read_invoice", partner);
    expect((await introspect(as, partnerToken)).json).toMatchObject({
      active: true,
      sub: "partner-client",
      client_id: "partner-client",
    });
  });

  it("answers inactive for unknown tokens and for other clients' tokens unless the caller is a gateway", async () => {
    expect((await introspect(as, "no-such-token")).json).toEqual({ active: false });
    const demoToken = await getToken(as, "read_invoice");
    expect((await introspect(as, demoToken, partner)).json).toEqual({ active: false });
    expect((await introspect(as, demoToken, demoPost)).json).toMatchObject({ active: true });
  });

  it("answers Accept: application/jwt with a phantom JWT signed by the AS keys", async () => {
    const token = await getToken(as, "read_invoice write_invoice");
    const response = await postForm(as.introspectionEndpoint, { token }, gateway, "application/jwt");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/jwt/);
    const jwt = await response.text();
    const { payload, protectedHeader } = await verifyWithAs(as, jwt, "at+jwt", as.issuer);
    expect(protectedHeader.kid).toBe((await fetchJwks(as)).keys[0]?.kid);
    expect(payload).toMatchObject({
      iss: as.issuer,
      sub: "demo-client",
      client_id: "demo-client",
      scope: "read_invoice write_invoice",
      aud: as.issuer,
    });
    expect(payload.jti).toEqual(expect.any(String));
    expect(payload.jti).not.toBe(token);
    expect(jwt).not.toContain(token);

    const inactive = await postForm(
      as.introspectionEndpoint,
      { token: "unknown" },
      gateway,
      "application/jwt",
    );
    expect(inactive.status).toBe(200);
    expect(inactive.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await inactive.json()).toEqual({ active: false });
  });

  it("answers Accept: application/token-introspection+jwt with an RFC 9701 signed response", async () => {
    const token = await getToken(as, "low_video_stream");
    const accept = "application/token-introspection+jwt";
    const response = await postForm(as.introspectionEndpoint, { token }, gateway, accept);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/token-introspection\+jwt/);
    const { payload } = await verifyWithAs(as, await response.text(), "token-introspection+jwt", "gateway");
    expect(payload["token_introspection"]).toMatchObject({
      active: true,
      scope: "low_video_stream",
      sub: "demo-client",
      client_id: "demo-client",
    });

    const inactive = await postForm(as.introspectionEndpoint, { token: "unknown" }, gateway, accept);
    const { payload: inactivePayload } = await verifyWithAs(
      as,
      await inactive.text(),
      "token-introspection+jwt",
    );
    expect(inactivePayload["token_introspection"]).toEqual({ active: false });
  });

  it("turns a revoked token inactive", async () => {
    const token = await getToken(as, "read_invoice");
    expect((await introspect(as, token)).json["active"]).toBe(true);
    // Another client cannot revoke it (RFC 7009 still answers 200).
    expect((await postForm(as.revocationEndpoint, { token }, partner)).status).toBe(200);
    expect((await introspect(as, token)).json["active"]).toBe(true);
    expect((await postForm(as.revocationEndpoint, { token }, demoBasic)).status).toBe(200);
    expect((await introspect(as, token)).json).toEqual({ active: false });
  });

  it("issues a JWT access token for resource=urn:phantomgate:jwt-api", async () => {
    const token = await getToken(as, "read_invoice video_metadata", demoBasic, {
      resource: JWT_API_RESOURCE,
    });
    expect(isOpaque(token)).toBe(false);
    const { payload } = await verifyWithAs(as, token, "at+jwt", JWT_API_RESOURCE);
    expect(payload).toMatchObject({
      iss: as.issuer,
      sub: "demo-client",
      client_id: "demo-client",
      scope: "read_invoice video_metadata",
      aud: JWT_API_RESOURCE,
    });
    expect(payload.jti).toEqual(expect.any(String));
    expect(payload.exp! - payload.iat!).toBe(3600);

    const unknownResource = await asJson(
      await postForm(as.tokenEndpoint, { grant_type: "client_credentials", resource: "urn:nope" }, demoBasic),
    );
    expect(unknownResource.json["error"]).toBe("invalid_target");
  });

  it("issues an opaque token with that audience for a security domain's resource", async () => {
    for (const resource of OPAQUE_API_RESOURCES) {
      const token = await getToken(as, "read_invoice", demoBasic, { resource });
      expect(isOpaque(token)).toBe(true);
      expect((await introspect(as, token)).json).toMatchObject({
        active: true,
        aud: resource,
        scope: "read_invoice",
      });
    }
    // Without a resource, no audience: routes with acceptedAudiences refuse such a token.
    const plain = await getToken(as, "read_invoice");
    expect((await introspect(as, plain)).json["aud"]).toBeUndefined();
  });

  describe("token exchange", () => {
    it("narrows audience and scope, keeps the subject and names the gateway as actor", async () => {
      const subject = await getToken(as, "read_invoice write_invoice");
      const subjectExp = numberField((await introspect(as, subject)).json, "exp");
      for (const auth of [gateway, gatewayPost, gatewayJwt]) {
        const response = await exchange(
          as,
          {
            subject_token: subject,
            subject_token_type: ACCESS_TOKEN_TYPE,
            audience: "urn:api:invoices",
            scope: "read_invoice",
          },
          auth,
        );
        expect(response.status).toBe(200);
        expect(response.json).toMatchObject({
          issued_token_type: JWT_TYPE,
          token_type: "Bearer",
          scope: "read_invoice",
        });
        const { payload } = await verifyWithAs(
          as,
          stringField(response.json, "access_token"),
          "at+jwt",
          "urn:api:invoices",
        );
        const actor = "basic" in auth ? auth.basic[0] : "post" in auth ? auth.post[0] : "gateway-jwt";
        expect(payload).toMatchObject({
          iss: as.issuer,
          sub: "demo-client",
          client_id: "demo-client",
          aud: "urn:api:invoices",
          scope: "read_invoice",
          act: { sub: actor },
        });
        expect(payload.exp).toBeLessThanOrEqual(subjectExp);
        expect(numberField(response.json, "expires_in")).toBeLessThanOrEqual(3600);
      }
    });

    it("keeps the subject's scopes when none are asked for and refuses widening", async () => {
      const subject = await getToken(as, "read_invoice write_invoice");
      const kept = await exchange(as, {
        subject_token: subject,
        subject_token_type: ACCESS_TOKEN_TYPE,
        audience: "urn:api:invoices",
      });
      expect(kept.json["scope"]).toBe("read_invoice write_invoice");

      const widened = await exchange(as, {
        subject_token: subject,
        subject_token_type: ACCESS_TOKEN_TYPE,
        audience: "urn:api:invoices",
        scope: "read_invoice video_metadata",
      });
      expect(widened.status).toBe(400);
      expect(widened.json).toMatchObject({ error: "invalid_scope", scope: "video_metadata" });
    });

    it("accepts a JWT access token of this AS as subject and nests the earlier actor", async () => {
      const jwtSubject = await getToken(as, "high_video_stream low_video_stream", demoBasic, {
        resource: JWT_API_RESOURCE,
      });
      const first = await exchange(as, {
        subject_token: jwtSubject,
        subject_token_type: JWT_TYPE,
        audience: "urn:api:video",
        scope: "low_video_stream",
      });
      expect(first.status).toBe(200);
      const firstJwt = stringField(first.json, "access_token");

      const second = await exchange(
        as,
        { subject_token: firstJwt, subject_token_type: JWT_TYPE, audience: "urn:api:cdn" },
        gatewayPost,
      );
      expect(second.status).toBe(200);
      const { payload } = await verifyWithAs(
        as,
        stringField(second.json, "access_token"),
        "at+jwt",
        "urn:api:cdn",
      );
      expect(payload).toMatchObject({
        sub: "demo-client",
        scope: "low_video_stream",
        act: { sub: "gateway-post", act: { sub: "gateway" } },
      });
    });

    it("refuses inactive subjects, missing audience, non-gateway clients and foreign JWTs", async () => {
      const subject = await getToken(as, "read_invoice");
      const base = {
        subject_token: subject,
        subject_token_type: ACCESS_TOKEN_TYPE,
        audience: "urn:api:invoices",
      };

      const noAudience = await exchange(as, {
        subject_token: subject,
        subject_token_type: ACCESS_TOKEN_TYPE,
      });
      expect(noAudience.json["error"]).toBe("invalid_request");

      const byApp = await exchange(as, base, demoBasic);
      expect(byApp.status).toBe(400);
      expect(byApp.json["error"]).toBe("invalid_request");

      const { privateKey } = await generateKeyPair("ES256");
      const forged = await new SignJWT({ client_id: "demo-client", scope: "read_invoice" })
        .setProtectedHeader({ alg: "ES256", typ: "at+jwt" })
        .setIssuer(as.issuer)
        .setSubject("demo-client")
        .setExpirationTime("5m")
        .sign(privateKey);
      const foreign = await exchange(as, { ...base, subject_token: forged, subject_token_type: JWT_TYPE });
      expect(foreign.json["error"]).toBe("invalid_grant");

      expect((await exchange(as, { ...base, subject_token: "unknown" })).json["error"]).toBe("invalid_grant");
      await postForm(as.revocationEndpoint, { token: subject }, demoBasic);
      const revoked = await exchange(as, base);
      expect(revoked.status).toBe(400);
      expect(revoked.json["error"]).toBe("invalid_grant");
    });
  });

  it("counts the calls it serves", async () => {
    const token = await getToken(as, "read_invoice");
    const before = { ...as.stats };
    await introspect(as, token);
    await fetchJwks(as);
    await exchange(as, {
      subject_token: token,
      subject_token_type: ACCESS_TOKEN_TYPE,
      audience: "urn:api:x",
    });
    await getToken(as, "read_invoice");
    expect(as.stats).toEqual({
      introspections: before.introspections + 1,
      jwksRequests: before.jwksRequests + 1,
      exchanges: before.exchanges + 1,
      tokenRequests: before.tokenRequests + 2,
    });
  });

  it("delays or holds every endpoint on request", async () => {
    try {
      as.setDelayMs(250);
      const started = performance.now();
      expect((await fetch(as.jwksUri)).status).toBe(200);
      expect(performance.now() - started).toBeGreaterThanOrEqual(240);

      as.setDelayMs(Infinity);
      await expect(fetch(as.jwksUri, { signal: AbortSignal.timeout(100) })).rejects.toThrow();
      const held = fetch(as.jwksUri);
      const outcome = await Promise.race([
        held.then(() => "answered"),
        new Promise((resolve) => setTimeout(resolve, 100, "held")),
      ]);
      expect(outcome).toBe("held");
      as.setDelayMs(0);
      expect((await held).status).toBe(200);
    } finally {
      as.setDelayMs(0);
    }
    expect(() => {
      as.setDelayMs(-1);
    }).toThrow(RangeError);
  });

  it("rotates signing keys without losing the port or issued tokens", async () => {
    const opaque = await getToken(as, "read_invoice");
    const oldJwt = await getToken(as, "read_invoice", demoBasic, { resource: JWT_API_RESOURCE });
    const oldKid = decodeProtectedHeader(oldJwt).kid;
    const port = as.port;

    const newKid = await as.rotateSigningKey();
    expect(newKid).not.toBe(oldKid);
    expect((await fetchJwks(as)).keys.map((key) => key.kid)).toEqual([newKid, oldKid]);
    expect(as.port).toBe(port);
    expect((await introspect(as, opaque)).json["active"]).toBe(true);

    const newJwt = await getToken(as, "read_invoice", demoBasic, { resource: JWT_API_RESOURCE });
    expect(decodeProtectedHeader(newJwt).kid).toBe(newKid);
    await verifyWithAs(as, newJwt, "at+jwt", JWT_API_RESOURCE);
    // Old keys stay published, so tokens signed before the rotation still verify.
    await verifyWithAs(as, oldJwt, "at+jwt", JWT_API_RESOURCE);
    const phantom = await postForm(as.introspectionEndpoint, { token: opaque }, gateway, "application/jwt");
    expect(decodeProtectedHeader(await phantom.text()).kid).toBe(newKid);

    const droppedKid = await as.rotateSigningKey({ dropOld: true });
    const jwks = await fetchJwks(as);
    expect(jwks.keys.map((key) => key.kid)).toEqual([droppedKid]);
    await expect(
      jwtVerify(oldJwt, createLocalJWKSet(jwks), { issuer: as.issuer, typ: "at+jwt" }),
    ).rejects.toThrow();
    expect((await introspect(as, opaque)).json["active"]).toBe(true);
  });
});

describe("demo authorization server with short-lived tokens", () => {
  let as: DemoAuthServer;

  beforeAll(async () => {
    as = await startDemoAuthServer({ accessTokenTtlSeconds: 1 });
  });

  afterAll(async () => {
    await as.close();
  });

  it("reports an expired token inactive and refuses to exchange it", async () => {
    const token = await getToken(as, "read_invoice");
    const active = await introspect(as, token);
    expect(active.json["active"]).toBe(true);
    const exp = numberField(active.json, "exp");
    // The AS compares whole seconds: the token is expired once the clock reaches exp.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, exp * 1000 - Date.now()) + 20));
    expect((await introspect(as, token)).json).toEqual({ active: false });
    const exchanged = await exchange(as, {
      subject_token: token,
      subject_token_type: ACCESS_TOKEN_TYPE,
      audience: "urn:api:invoices",
    });
    expect(exchanged.json["error"]).toBe("invalid_grant");
  });
});

describe("demo authorization server under an issuer with a path", () => {
  it("serves every endpoint under the issuer's path", async () => {
    const port = await freePort();
    const as = await startDemoAuthServer({ port, issuer: `http://127.0.0.1:${port}/as` });
    try {
      expect(as.port).toBe(port);
      expect(as.tokenEndpoint).toBe(`http://127.0.0.1:${port}/as/token`);
      const discovery = (await (
        await fetch(`${as.issuer}/.well-known/openid-configuration`)
      ).json()) as Record<string, unknown>;
      expect(discovery["introspection_endpoint"]).toBe(as.introspectionEndpoint);
      const token = await getToken(as, "read_invoice");
      const phantom = await postForm(as.introspectionEndpoint, { token }, gateway, "application/jwt");
      await verifyWithAs(as, await phantom.text(), "at+jwt");
      expect(as.stats.introspections).toBe(1);
      expect((await fetch(`http://127.0.0.1:${port}/token`, { method: "POST" })).status).toBe(404);
    } finally {
      await as.close();
    }
  });
});

describe("auth-server-main", () => {
  it("prints one ready line, serves, and exits cleanly on SIGTERM", async () => {
    const entry = fileURLToPath(new URL("../../src/demo/auth-server-main.ts", import.meta.url));
    const child = spawn(process.execPath, [entry, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
    const exited = once(child, "exit");
    const lines: string[] = [];
    const reader = createInterface({ input: child.stdout });
    reader.on("line", (line) => lines.push(line));
    const [firstLine] = (await once(reader, "line")) as [string];
    const ready = JSON.parse(firstLine) as { ready: boolean; issuer: string; port: number };
    expect(ready).toEqual({ ready: true, issuer: `http://127.0.0.1:${ready.port}`, port: ready.port });

    const discovery = await fetch(`${ready.issuer}/.well-known/openid-configuration`);
    expect(discovery.status).toBe(200);

    child.kill("SIGTERM");
    const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(lines).toEqual([firstLine]);
  });

  it("rejects unknown flags with exit code 2", async () => {
    const entry = fileURLToPath(new URL("../../src/demo/auth-server-main.ts", import.meta.url));
    const child = spawn(process.execPath, [entry, "--prot", "9000"], { stdio: ["ignore", "ignore", "pipe"] });
    const [code] = (await once(child, "exit")) as [number | null];
    expect(code).toBe(2);
  });
});

/** A port the OS just handed out and released, for the one test that needs the port before the issuer. */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  server.close();
  await once(server, "close");
  return address.port;
}
