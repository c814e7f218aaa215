// AS client edge cases against a stub AS on a real socket (port 0). The stub exists because the demo AS cannot be
// made to misbehave: oversized, malformed, 5xx and mix-up responses, exotic client credentials, tokens that are
// not plain bearer tokens.
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import type { CompiledAuthServer } from "../../src/snapshot/snapshot.ts";
import { createAuthServerClient, MAX_AS_RESPONSE_BYTES } from "../../src/tokens/as-client.ts";
import { createManualClock } from "../../src/tokens/clock.ts";
import {
  json,
  startStubAs as startStub,
  stubAuthServer,
  type StubAs,
  type StubHandler,
} from "../helpers/stub-as.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startStubAs(handle: StubHandler): Promise<StubAs> {
  const stub = await startStub(handle);
  cleanups.push(() => stub.close());
  return stub;
}

const serverFor = stubAuthServer;

function clientFor(
  server: CompiledAuthServer,
  clock = createManualClock(Date.now()),
  options: { verifyIssuedTokens?: boolean } = {},
) {
  const dispatcher = new Agent();
  cleanups.push(() => dispatcher.close());
  return createAuthServerClient(server, { dispatcher, clock, ...options });
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

describe("client authentication encoding", () => {
  it("client_secret_basic form-urlencodes id and secret before base64 (RFC 6749 §2.3.1)", async () => {
    const stub = await startStubAs((_req, res) => json(res, 200, { active: false }));
    const id = "gate way:1";
    const secret = "s€cret+/%&=";
    await clientFor(
      serverFor(stub, { client: { id, method: "client_secret_basic", secret } }),
    ).introspectToken("t");
    const header = stub.requests[0]?.headers.authorization ?? "";
    const decoded = Buffer.from(header.replace(/^Basic /, ""), "base64").toString("utf8");
    expect(decoded).toBe("gate+way%3A1:s%E2%82%ACcret%2B%2F%25%26%3D");
    const [encodedId = "", encodedSecret = ""] = decoded.split(":");
    const formDecode = (value: string) => decodeURIComponent(value.replaceAll("+", " "));
    expect([formDecode(encodedId), formDecode(encodedSecret)]).toEqual([id, secret]);
  });

  it("client_secret_post sends the credentials in the form, not in a header", async () => {
    const stub = await startStubAs((_req, res) => json(res, 200, { active: false }));
    await clientFor(
      serverFor(stub, { client: { id: "gateway-post", method: "client_secret_post", secret: "s3cret" } }),
    ).introspectToken("t");
    const request = stub.requests[0];
    expect(request?.headers.authorization).toBeUndefined();
    const form = new URLSearchParams(request?.body);
    expect(form.get("client_id")).toBe("gateway-post");
    expect(form.get("client_secret")).toBe("s3cret");
    expect(form.get("token")).toBe("t");
  });
});

describe("responses that fail closed", () => {
  it("a body over the size bound is PG_ERR_AS_UNAVAILABLE, with or without Content-Length", async () => {
    const huge = JSON.stringify({ active: true, padding: "x".repeat(MAX_AS_RESPONSE_BYTES) });
    let chunked = false;
    const stub = await startStubAs((_req, res) => {
      if (chunked) {
        res.writeHead(200, { "content-type": "application/json" });
        res.write(huge.slice(0, 1000));
        res.end(huge.slice(1000));
      } else json(res, 200, JSON.parse(huge));
    });
    const client = clientFor(serverFor(stub));
    await expect(client.introspectToken("t")).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
      reason: `introspection response exceeds ${MAX_AS_RESPONSE_BYTES} bytes`,
    });
    chunked = true;
    await expect(client.introspectToken("t")).rejects.toMatchObject({
      reason: `introspection response exceeds ${MAX_AS_RESPONSE_BYTES} bytes`,
    });
  });

  it("5xx, non-JSON and non-RFC 7662 bodies are PG_ERR_AS_UNAVAILABLE; no reason contains the token", async () => {
    const token = "secret-opaque-token";
    const answers: StubHandler[] = [
      (_req, res) => json(res, 503, { error: "temporarily_unavailable" }),
      (_req, res) => res.writeHead(200, { "content-type": "application/json" }).end("<html>"),
      (_req, res) => json(res, 200, { active: "yes" }),
      (_req, res) => json(res, 401, { error: "invalid_client", error_description: `bad ${token}` }),
      (_req, res) => res.writeHead(302, { location: "http://elsewhere.example/" }).end(),
    ];
    const stub = await startStubAs(() => undefined);
    const client = clientFor(serverFor(stub));
    const reasons: string[] = [];
    for (const answer of answers) {
      stub.handle = answer;
      const error = (await client.introspectToken(token).catch((caught: unknown) => caught)) as {
        code: string;
        reason: string;
        message: string;
      };
      expect(error.code).toBe("PG_ERR_AS_UNAVAILABLE");
      expect(error.message).not.toContain(token);
      reasons.push(error.reason);
    }
    expect(reasons).toEqual([
      "introspection answered HTTP 503",
      "introspection response is invalid: not JSON",
      "introspection response is invalid: not an RFC 7662 response",
      "introspection rejected the gateway's request: HTTP 401 invalid_client",
      "introspection answered HTTP 302",
    ]);
  });

  it("an AS that does not answer in time is PG_ERR_AS_UNAVAILABLE after responseMs", async () => {
    const stub = await startStubAs(() => undefined); // never answers
    const client = clientFor(serverFor(stub, { timeouts: { connectMs: 500, responseMs: 200 } }));
    const started = performance.now();
    await expect(client.introspectToken("t")).rejects.toMatchObject({
      reason: "introspection: no answer within 200 ms",
    });
    expect(performance.now() - started).toBeLessThan(800);
  });

  it("an unreachable AS is PG_ERR_AS_UNAVAILABLE", async () => {
    const stub = await startStubAs(() => undefined);
    const server = serverFor(stub, { endpoints: { introspection: "http://127.0.0.1:1/introspect" } });
    await expect(clientFor(server).introspectToken("t")).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
      reason: expect.stringMatching(/^introspection: network error/) as unknown,
    });
  });
});

describe("introspection answers", () => {
  it("active: true with a past exp is inactive (expired); nbf ahead is inactive", async () => {
    let answer: Record<string, unknown> = {};
    const stub = await startStubAs((_req, res) => json(res, 200, answer));
    const client = clientFor(serverFor(stub));
    answer = { active: true, exp: nowSeconds() - 1 };
    await expect(client.introspectToken("t")).resolves.toEqual({ active: false, reason: "expired" });
    const nbf = nowSeconds() + 600;
    answer = { active: true, nbf };
    const early = await client.introspectToken("t");
    expect(early).toMatchObject({ active: false, reason: "not yet valid" });
    // Valid from nbf, less the allowed skew.
    const validFromMs = (early as { validFromMs?: number }).validFromMs ?? 0;
    expect(validFromMs).toBeLessThanOrEqual(nbf * 1000);
    expect(validFromMs).toBeGreaterThan(Date.now());
    // A claim written as null is a claim left out, not a broken answer.
    answer = { active: true, scope: null, client_id: "c", sub: null, exp: nowSeconds() + 60 };
    await expect(client.introspectToken("t")).resolves.toMatchObject({
      active: true,
      scopes: [],
      clientId: "c",
    });
    answer = { active: null };
    await expect(client.introspectToken("t")).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
    answer = { active: true, scp: ["a", "b"], client_id: "c", exp: nowSeconds() + 60 };
    await expect(client.introspectToken("t")).resolves.toMatchObject({
      active: true,
      scopes: ["a", "b"],
      clientId: "c",
    });
  });
});

describe("tokens that are not plain bearer tokens", () => {
  it("a sender-constrained token (cnf) or another token_type than Bearer is inactive", async () => {
    let answer: Record<string, unknown> = {};
    const stub = await startStubAs((_req, res) => json(res, 200, answer));
    const client = clientFor(serverFor(stub));
    const active = { active: true, scope: "a", exp: nowSeconds() + 60 };
    answer = { ...active, token_type: "DPoP", cnf: { jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" } };
    await expect(client.introspectToken("t")).resolves.toEqual({
      active: false,
      reason: "sender-constrained token (cnf) without proof of possession",
    });
    answer = {
      ...active,
      token_type: "Bearer",
      cnf: { "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2" },
    };
    await expect(client.introspectToken("t")).resolves.toMatchObject({ active: false });
    for (const tokenType of ["DPoP", "refresh_token", "N_A", 1]) {
      answer = { ...active, token_type: tokenType };
      await expect(client.introspectToken("t")).resolves.toEqual({
        active: false,
        reason: "token_type is not Bearer",
      });
    }
    for (const tokenType of ["Bearer", "bearer", undefined]) {
      answer = { ...active, token_type: tokenType };
      await expect(client.introspectToken("t")).resolves.toMatchObject({ active: true, scopes: ["a"] });
    }
  });

  it("400 unsupported_token_type or invalid_token is the token's problem (inactive); other 400s are the gateway's", async () => {
    let error = "";
    const stub = await startStubAs((_req, res) => json(res, 400, { error }));
    const client = clientFor(serverFor(stub));
    for (const code of ["unsupported_token_type", "invalid_token"]) {
      error = code;
      await expect(client.introspectToken("eyJhbGciOiJFUzI1NiJ9.e30.c2ln")).resolves.toEqual({
        active: false,
        reason: `introspection refused the token: ${code}`,
      });
    }
    error = "invalid_request";
    await expect(client.introspectToken("t")).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
      reason: "introspection rejected the gateway's request: HTTP 400 invalid_request",
    });
  });
});

describe("introspection answers when a signed JWT was asked for (responseType jwt)", () => {
  it("an unsigned JSON answer may say inactive, never active", async () => {
    let answer: Record<string, unknown> = {};
    const stub = await startStubAs((_req, res) => json(res, 200, answer));
    const client = clientFor(serverFor(stub, { introspectionResponse: "jwt" }));
    answer = { active: false };
    await expect(client.introspectToken("t")).resolves.toEqual({ active: false, reason: "inactive" });
    // Anyone between the gateway and the AS could write this: facts of an active token need the AS's signature.
    answer = { active: true, sub: "attacker", scope: "read write", exp: nowSeconds() + 3600 };
    await expect(client.introspectToken("t")).rejects.toMatchObject({
      code: "PG_ERR_AS_UNAVAILABLE",
      reason: "introspection response is invalid: an active token answered without a signed JWT",
    });
    expect(stub.requests.at(-1)?.headers.accept).toBe("application/jwt");
    answer = { nonsense: true };
    await expect(client.introspectToken("t")).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
  });
});

describe("discovery", () => {
  it("is fetched once, completes explicit endpoints, and refuses metadata naming another issuer", async () => {
    let issuer = "";
    const stub = await startStubAs((req, res) => {
      if (req.url === "/.well-known/openid-configuration") {
        json(res, 200, {
          issuer,
          introspection_endpoint: `${issuer}/from-discovery`,
          jwks_uri: `${issuer}/jwks`,
        });
      } else json(res, 200, { active: false });
    });
    issuer = stub.url;
    const client = clientFor(
      serverFor(stub, { discovery: true, endpoints: { token: `${stub.url}/explicit-token` } }),
    );
    await expect(client.resolveEndpoints()).resolves.toEqual({
      introspection: `${stub.url}/from-discovery`,
      jwks: `${stub.url}/jwks`,
      token: `${stub.url}/explicit-token`,
    });
    await client.introspectToken("a");
    await client.introspectToken("b");
    expect(stub.requests.map((request) => request.path)).toEqual([
      "/.well-known/openid-configuration",
      "/from-discovery",
      "/from-discovery",
    ]);

    issuer = "https://attacker.example";
    const mixUp = clientFor(serverFor(stub, { discovery: true, endpoints: {} }));
    await expect(mixUp.resolveEndpoints()).rejects.toMatchObject({
      reason: "discovery response is invalid: issuer mismatch",
    });
  });

  it("backs off after a failure and recovers once the backoff has passed", async () => {
    let healthy = false;
    const stub = await startStubAs((_req, res) => {
      if (healthy) json(res, 200, { issuer: stub.url, introspection_endpoint: `${stub.url}/introspect` });
      else json(res, 500, {});
    });
    const clock = createManualClock(Date.now());
    const client = clientFor(serverFor(stub, { discovery: true, endpoints: {} }), clock);
    await expect(client.resolveEndpoints()).rejects.toMatchObject({ reason: "discovery answered HTTP 500" });
    healthy = true;
    await expect(client.resolveEndpoints()).rejects.toMatchObject({
      reason: "discovery failed recently; backing off",
    });
    expect(stub.requests).toHaveLength(1);
    clock.advance(1_000);
    await expect(client.resolveEndpoints()).resolves.toMatchObject({
      introspection: `${stub.url}/introspect`,
    });
    expect(stub.requests).toHaveLength(2);
  });
});

describe("token exchange answers", () => {
  // The shape of the answer, with the issued token's own verification off (as the SDK runs without the AS's keys;
  // the gateway's verification is tested with signed tokens in token-authenticator-stub.test.ts).
  it("reads expires_in, refuses wider scopes, and maps invalid_grant to inactive", async () => {
    let answer: { status: number; body: unknown } = { status: 200, body: {} };
    const stub = await startStubAs((_req, res) => json(res, answer.status, answer.body));
    const clock = createManualClock(Date.now());
    const client = clientFor(serverFor(stub), clock, { verifyIssuedTokens: false });
    const request = { audience: "urn:api", scopes: ["read_invoice"] };

    answer = { status: 200, body: { access_token: "x.y.z", token_type: "Bearer", expires_in: 120 } };
    await expect(client.exchangeToken("t", request)).resolves.toEqual({
      active: true,
      accessToken: "x.y.z",
      expiresAt: Math.floor(clock.now() / 1000) + 120,
      scopes: ["read_invoice"],
    });
    const form = new URLSearchParams(stub.requests[0]?.body);
    expect(Object.fromEntries(form)).toMatchObject({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: "t",
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      audience: "urn:api",
      scope: "read_invoice",
    });

    answer = {
      status: 200,
      body: { access_token: "x", token_type: "Bearer", scope: "read_invoice write_invoice" },
    };
    await expect(client.exchangeToken("t", request)).rejects.toMatchObject({
      reason: "token response is invalid: granted scopes exceed the requested ones",
    });

    // Only an access token (plain or as a JWT) is forwarded as Bearer.
    answer = {
      status: 200,
      body: {
        access_token: "x.y.z",
        token_type: "Bearer",
        issued_token_type: "urn:ietf:params:oauth:token-type:jwt",
      },
    };
    await expect(client.exchangeToken("t", request)).resolves.toMatchObject({ active: true });
    answer = {
      status: 200,
      body: {
        access_token: "r",
        token_type: "N_A",
        issued_token_type: "urn:ietf:params:oauth:token-type:refresh_token",
      },
    };
    await expect(client.exchangeToken("t", request)).rejects.toMatchObject({
      reason:
        "token response is invalid: issued a urn:ietf:params:oauth:token-type:refresh_token, not an access token",
    });
    answer = { status: 200, body: { access_token: "x", token_type: "N_A" } };
    await expect(client.exchangeToken("t", request)).rejects.toMatchObject({
      reason: "token response is invalid: token_type is not Bearer",
    });

    // The token goes upstream in an Authorization header: a space, a comma or a line break could split it.
    for (const accessToken of ["a b", "a,b", "a\r\nx-injected: 1", "a=b"]) {
      answer = { status: 200, body: { access_token: accessToken, token_type: "Bearer" } };
      await expect(client.exchangeToken("t", request)).rejects.toMatchObject({
        code: "PG_ERR_AS_UNAVAILABLE",
        reason: "token response is invalid: access_token is not an RFC 6750 b64token",
      });
    }
    answer = { status: 200, body: { access_token: "AZaz09-._~+/==", token_type: "Bearer" } };
    await expect(client.exchangeToken("t", request)).resolves.toMatchObject({
      accessToken: "AZaz09-._~+/==",
    });

    answer = { status: 400, body: { error: "invalid_grant" } };
    await expect(client.exchangeToken("t", request)).resolves.toEqual({
      active: false,
      reason: "exchange refused: invalid_grant",
    });

    // RFC 8693 §2.2.2 names invalid_request for a subject token that is invalid or refused by policy.
    answer = { status: 400, body: { error: "invalid_request" } };
    await expect(client.exchangeToken("t", request)).resolves.toEqual({
      active: false,
      reason: "exchange refused: invalid_request",
    });

    answer = { status: 400, body: { error: "invalid_target" } };
    await expect(client.exchangeToken("t", request)).rejects.toMatchObject({ code: "PG_ERR_AS_UNAVAILABLE" });
  });
});
