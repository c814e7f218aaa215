// SDK fastify plugin: every request verified before handlers run, `request.identity` set, SDK errors rendered as
// problem+json with challenges, other errors left to fastify, `skip` for public routes, requireScopes preHandler.
import { connect } from "node:net";
import Fastify, { type FastifyInstance } from "fastify";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createInternalJwtVerifier,
  createScopeChecker,
  definePolicy,
  enforce,
  phantomgateFastify,
  requireScopes,
  type Identity,
} from "../../src/sdk/index.ts";

const ISSUER = "https://as.example";
let key: CryptoKey;
let app: FastifyInstance;

const token = (scope: string, aud = "urn:billing"): Promise<string> =>
  new SignJWT({ scope })
    .setProtectedHeader({ alg: "ES256", kid: "k1", typ: "at+jwt" })
    .setIssuer(ISSUER)
    .setAudience(aud)
    .setSubject("alice")
    .setExpirationTime("5m")
    .sign(key);

beforeAll(async () => {
  const pair = await generateKeyPair("ES256", { extractable: true });
  key = pair.privateKey;
  const verifier = createInternalJwtVerifier({
    issuer: ISSUER,
    audience: "urn:billing",
    jwks: { keys: [{ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256" }] },
  });
  const scopes = createScopeChecker({
    domain: "billing",
    scopes: [{ name: "read_invoice" }, { name: "write_invoice", implies: ["read_invoice"] }],
  });
  const mine = definePolicy<{ owner: string }>({
    name: "owner",
    reason: "not yours",
    allow: (identity, doc) => identity.sub === doc.owner,
  });

  app = Fastify({ logger: false });
  await app.register(phantomgateFastify, {
    verifier,
    skip: (request) => request.url === "/healthz" || request.url.startsWith("/public"),
  });
  // Skipped routes have no identity: the decoration keeps its initial null.
  app.get("/healthz", (request) => ({ ok: true, identity: request.identity as Identity | null }));
  app.get("/me", (request) => ({ sub: request.identity.sub, scopes: request.identity.scopes }));
  app.get("/read", { preHandler: requireScopes(scopes, "read_invoice") }, () => ({ read: true }));
  app.post("/write", { preHandler: requireScopes(scopes, "write_invoice") }, () => ({ written: true }));
  app.get<{ Params: { owner: string } }>("/docs/:owner", (request) => {
    enforce(request.identity, mine, { owner: request.params.owner });
    return { owner: request.params.owner };
  });
  // Skipped by `skip`, yet guarded by a scope check: without a token that is a 401, not a crash.
  app.get("/public/report", { preHandler: requireScopes(scopes, "read_invoice") }, () => ({ report: true }));
  app.get("/boom", () => {
    throw new Error("not an SDK error");
  });
  await app.ready();
});

afterAll(async () => {
  await app.close();
});

describe("fastify plugin", () => {
  it("verifies the JWT and exposes the identity to handlers", async () => {
    const response = await app.inject({
      url: "/me",
      headers: { authorization: `Bearer ${await token("read_invoice")}` },
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ sub: "alice", scopes: ["read_invoice"] });
  });

  it("answers 401 problem+json with a challenge before any handler runs", async () => {
    const missing = await app.inject({ url: "/me" });
    expect(missing.statusCode).toBe(401);
    expect(missing.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(missing.headers["www-authenticate"]).toBe('Bearer realm="phantomgate"');
    const wrongAudience = await app.inject({
      url: "/me",
      headers: {
        authorization: `Bearer ${await token("read_invoice", "urn:payments")}`,
        "x-request-id": "req-9",
      },
    });
    expect(wrongAudience.statusCode).toBe(401);
    expect(wrongAudience.headers["www-authenticate"]).toContain('error="invalid_token"');
    expect(wrongAudience.json()).toMatchObject({ code: "PG_SDK_TOKEN_WRONG_AUDIENCE", requestId: "req-9" });
  });

  it("lets skipped routes through without a token", async () => {
    const response = await app.inject({ url: "/healthz" });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ ok: true, identity: null });
  });

  it("requireScopes answers 403 insufficient_scope naming the scope and honours implications", async () => {
    const reader = `Bearer ${await token("read_invoice")}`;
    const writer = `Bearer ${await token("write_invoice")}`;
    const denied = await app.inject({ method: "POST", url: "/write", headers: { authorization: reader } });
    expect(denied.statusCode).toBe(403);
    expect(denied.headers["www-authenticate"]).toContain('scope="write_invoice"');
    expect(denied.json()).toMatchObject({ code: "PG_SDK_INSUFFICIENT_SCOPE", scope: "write_invoice" });
    expect(
      (await app.inject({ method: "POST", url: "/write", headers: { authorization: writer } })).statusCode,
    ).toBe(200);
    expect((await app.inject({ url: "/read", headers: { authorization: writer } })).statusCode).toBe(200);
  });

  it("renders a policy denial as 403 with its reason", async () => {
    const authorization = `Bearer ${await token("read_invoice")}`;
    expect((await app.inject({ url: "/docs/alice", headers: { authorization } })).statusCode).toBe(200);
    const denied = await app.inject({ url: "/docs/bob", headers: { authorization } });
    expect(denied.statusCode).toBe(403);
    expect(denied.json()).toMatchObject({ code: "PG_SDK_FORBIDDEN", detail: "not yours", policy: "owner" });
  });

  it("a scope check on a route `skip` lets through answers 401 without a token, not 500", async () => {
    const response = await app.inject({ url: "/public/report" });
    expect(response.statusCode).toBe(401);
    expect(JSON.parse(response.body)).toMatchObject({ code: "PG_SDK_TOKEN_MISSING" });
  });

  it("refuses two Authorization headers (node keeps only the first in `headers`), over a real socket", async () => {
    const first = `Bearer ${await token("read_invoice")}`;
    const second = `Bearer ${await token("write_invoice")}`;
    // Closed with the app (afterAll).
    const address = await app.listen({ port: 0, host: "127.0.0.1" });
    {
      const { port } = new URL(address);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), "127.0.0.1");
        let data = "";
        socket.setEncoding("utf8");
        socket.on("data", (chunk: string) => (data += chunk));
        socket.on("error", reject);
        socket.on("end", () => resolve(data));
        socket.write(
          `GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: ${first}\r\nAuthorization: ${second}\r\nConnection: close\r\n\r\n`,
        );
      });
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer).toContain('"code":"PG_SDK_TOKEN_MALFORMED_HEADER"');
    }
  });

  it("leaves other errors to fastify's own handler", async () => {
    const response = await app.inject({
      url: "/boom",
      headers: { authorization: `Bearer ${await token("read_invoice")}` },
    });
    expect(response.statusCode).toBe(500);
    expect(response.headers["content-type"]).toContain("application/json");
    expect(response.json()).toMatchObject({ statusCode: 500 });
  });

  it("rejects a requirement naming an unknown scope when the route is defined", () => {
    const scopes = createScopeChecker({ domain: "d", scopes: [{ name: "a" }] });
    expect(() => requireScopes(scopes, "b")).toThrow(/not defined/);
  });
});
