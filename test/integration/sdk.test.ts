// phantomgate/sdk against the real demo authorization server and the real demo APIs (invoices, payments, ledger
// helper) on port 0: internal JWT verification (expired, wrong audience), ownership and write scopes in the
// invoices API, token exchange end to end (narrower audience and scopes seen by the callee, cache, single-flight,
// fewest scopes, refusals), embedded tokens and their failure modes, sharing refused across domains, and audit
// records that name tokens only by fingerprint.
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { createInvoicesApi } from "../../src/demo/invoices-api.ts";
import { createLedgerHelper } from "../../src/demo/ledger-helper.ts";
import { createPaymentsApi } from "../../src/demo/payments-api.ts";
import { billingScopePolicy, demoSecurityDomains, type TokenSeen } from "../../src/demo/security-domains.ts";
import {
  createApiClient,
  createInternalJwtVerifier,
  createManualClock,
  createScopeChecker,
  fingerprintToken,
  SdkError,
  type ApiCallAuditRecord,
  type ApiClientAuthServer,
  type ApiClient,
  type Clock,
  type Identity,
  type InternalJwtVerifier,
} from "../../src/sdk/index.ts";

const BILLING = "urn:phantomgate:billing";
const PAYMENTS = "urn:phantomgate:payments";

let as: DemoAuthServer;
let ledger: FastifyInstance;
let payments: FastifyInstance;
let invoices: FastifyInstance;
let ledgerUrl: string;
let paymentsUrl: string;
let invoicesUrl: string;
const hits = { ledger: 0, payments: 0 };
const audit: ApiCallAuditRecord[] = [];
const rawTokens: string[] = [];
const closeLater: { close(): Promise<unknown> }[] = [];

// ---- tokens from the demo AS ----------------------------------------------------------------------------------

const basic = (id: string, secret: string): string =>
  `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;

async function opaqueToken(
  scope: string,
  client: "demo-client" | "partner-client" = "demo-client",
): Promise<string> {
  const secret = client === "demo-client" ? "demo-secret" : "partner-secret";
  const response = await fetch(as.tokenEndpoint, {
    method: "POST",
    headers: { authorization: basic(client, secret) },
    body: new URLSearchParams({ grant_type: "client_credentials", scope }),
  });
  const body = (await response.json()) as { access_token?: string };
  if (body.access_token === undefined) throw new Error(`token request failed (${response.status})`);
  rawTokens.push(body.access_token);
  return body.access_token;
}

/** What the gateway forwards in phantom mode: the AS's JWT for an opaque token (Accept: application/jwt). */
async function phantomJwt(
  scope: string,
  client: "demo-client" | "partner-client" = "demo-client",
  server: DemoAuthServer = as,
): Promise<string> {
  const token = server === as ? await opaqueToken(scope, client) : await opaqueFrom(server, scope);
  const response = await fetch(server.introspectionEndpoint, {
    method: "POST",
    headers: { authorization: basic("gateway", "gateway-secret"), accept: "application/jwt" },
    body: new URLSearchParams({ token }),
  });
  expect(response.headers.get("content-type")).toContain("application/jwt");
  const jwt = await response.text();
  rawTokens.push(jwt);
  return jwt;
}

async function opaqueFrom(server: DemoAuthServer, scope: string): Promise<string> {
  const response = await fetch(server.tokenEndpoint, {
    method: "POST",
    headers: { authorization: basic("demo-client", "demo-secret") },
    body: new URLSearchParams({ grant_type: "client_credentials", scope }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

/** A token for the payments domain, exchanged by the gateway client (it carries an embedded `ledger_token`). */
async function paymentsToken(scope = "read_invoice"): Promise<string> {
  const response = await fetch(as.tokenEndpoint, {
    method: "POST",
    headers: { authorization: basic("gateway", "gateway-secret") },
    body: new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: await opaqueToken(scope),
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      audience: PAYMENTS,
      scope,
    }),
  });
  const token = ((await response.json()) as { access_token: string }).access_token;
  rawTokens.push(token);
  return token;
}

// ---- SDK pieces configured like the demo APIs ------------------------------------------------------------------

function billingVerifier(clock?: Clock): InternalJwtVerifier {
  const verifier = createInternalJwtVerifier({
    issuer: as.issuer,
    audience: demoSecurityDomains(as.issuer).billing.audiences,
    jwksUri: as.jwksUri,
    ...(clock === undefined ? {} : { clock }),
  });
  closeLater.push(verifier);
  return verifier;
}

function paymentsVerifier(): InternalJwtVerifier {
  const verifier = createInternalJwtVerifier({ issuer: as.issuer, audience: PAYMENTS, jwksUri: as.jwksUri });
  closeLater.push(verifier);
  return verifier;
}

type TestService = "ledger" | "payments" | "elsewhere";

/** An API-to-API client in the billing domain, like the invoices API's. */
function invoicesClient(clock?: Clock): ApiClient<TestService> {
  const client = createApiClient({
    service: "test-invoices",
    domain: "billing",
    domains: { ...demoSecurityDomains(as.issuer), other: { audiences: ["urn:phantomgate:elsewhere"] } },
    services: {
      ledger: { url: ledgerUrl, domain: "billing" },
      payments: { url: paymentsUrl, domain: "payments" },
      elsewhere: { url: paymentsUrl, domain: "other" },
    },
    authServer: {
      issuer: as.issuer,
      tokenEndpoint: as.tokenEndpoint,
      jwksUri: as.jwksUri,
      clientId: "invoices-api",
      clientSecret: "invoices-secret",
    },
    scopes: createScopeChecker(billingScopePolicy),
    audit: (record) => audit.push(record),
    ...(clock === undefined ? {} : { clock }),
  });
  closeLater.push(client);
  return client;
}

/** A payments-domain client that reaches the ledger with the embedded billing token. */
function embeddingClient(clock?: Clock, authServer?: ApiClientAuthServer): ApiClient<"ledger"> {
  const client = createApiClient({
    service: "test-payments",
    domain: "payments",
    domains: demoSecurityDomains(as.issuer),
    services: { ledger: { url: ledgerUrl, domain: "billing", embeddedTokenClaim: "ledger_token" } },
    authServer: authServer ?? { issuer: as.issuer, jwksUri: as.jwksUri },
    audit: (record) => audit.push(record),
    ...(clock === undefined ? {} : { clock }),
  });
  closeLater.push(client);
  return client;
}

async function sdkFailure(promise: Promise<unknown>): Promise<SdkError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SdkError) return error;
    throw error;
  }
  throw new Error("expected an SdkError");
}

async function json(
  promise: Promise<{ statusCode: number; body: { json(): Promise<unknown> } }>,
): Promise<{ status: number; body: unknown }> {
  const response = await promise;
  return { status: response.statusCode, body: await response.body.json() };
}

async function callInvoices(
  path: string,
  token: string,
  options: { method?: "GET" | "POST"; body?: unknown } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: Record<string, unknown> }> {
  const response = await request(`${invoicesUrl}${path}`, {
    method: options.method ?? "GET",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  });
  return {
    status: response.statusCode,
    headers: response.headers,
    body: (await response.body.json()) as Record<string, unknown>,
  };
}

const lastAudit = (): ApiCallAuditRecord => audit[audit.length - 1]!;
const urlOf = (app: FastifyInstance): string =>
  `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;

beforeAll(async () => {
  as = await startDemoAuthServer({ port: 0 });
  ledger = createLedgerHelper({ issuer: as.issuer, jwksUri: as.jwksUri });
  ledger.addHook("onRequest", (_request, _reply, done) => {
    hits.ledger += 1;
    done();
  });
  await ledger.listen({ port: 0, host: "127.0.0.1" });
  ledgerUrl = urlOf(ledger);
  payments = createPaymentsApi({
    issuer: as.issuer,
    jwksUri: as.jwksUri,
    ledgerUrl,
    audit: (r) => audit.push(r),
  });
  payments.addHook("onRequest", (_request, _reply, done) => {
    hits.payments += 1;
    done();
  });
  await payments.listen({ port: 0, host: "127.0.0.1" });
  paymentsUrl = urlOf(payments);
  invoices = createInvoicesApi({
    issuer: as.issuer,
    jwksUri: as.jwksUri,
    tokenEndpoint: as.tokenEndpoint,
    ledgerUrl,
    paymentsUrl,
    audit: (r) => audit.push(r),
  });
  await invoices.listen({ port: 0, host: "127.0.0.1" });
  invoicesUrl = urlOf(invoices);
});

afterAll(async () => {
  for (const item of closeLater) await item.close();
  await invoices.close();
  await payments.close();
  await ledger.close();
  await as.close();
});

// ---- inbound -------------------------------------------------------------------------------------------------

describe("internal JWTs from the demo authorization server", () => {
  it("verifies a phantom-mode JWT into a typed identity", async () => {
    const jwt = await phantomJwt("read_invoice write_invoice");
    const identity = await billingVerifier().verify(jwt);
    expect(identity).toMatchObject({
      sub: "demo-client",
      clientId: "demo-client",
      scopes: ["read_invoice", "write_invoice"],
      issuer: as.issuer,
      audience: [as.issuer],
      actor: undefined,
      tokenFingerprint: fingerprintToken(jwt),
    });
  });

  it("rejects an expired internal JWT", async () => {
    const clock = createManualClock(Date.now());
    const verifier = billingVerifier(clock);
    const jwt = await phantomJwt("read_invoice");
    await verifier.verify(jwt);
    clock.advance((3600 + 31) * 1000);
    expect(await sdkFailure(verifier.verify(jwt))).toMatchObject({
      code: "PG_SDK_TOKEN_EXPIRED",
      status: 401,
    });

    const api = createInvoicesApi({ issuer: as.issuer, jwksUri: as.jwksUri, clock, audit: false });
    const response = await api.inject({ url: "/invoices", headers: { authorization: `Bearer ${jwt}` } });
    await api.close();
    expect(response.statusCode).toBe(401);
    expect(response.headers["www-authenticate"]).toContain('error="invalid_token"');
    expect(response.json()).toMatchObject({ code: "PG_SDK_TOKEN_EXPIRED" });
  });

  it("rejects a JWT for another audience (a payments token at the invoices API)", async () => {
    const token = await paymentsToken();
    expect(await sdkFailure(billingVerifier().verify(token))).toMatchObject({
      code: "PG_SDK_TOKEN_WRONG_AUDIENCE",
    });
    const response = await callInvoices("/invoices", token);
    expect(response.status).toBe(401);
    expect(response.body).toMatchObject({ code: "PG_SDK_TOKEN_WRONG_AUDIENCE" });
    expect(JSON.stringify(response.body)).not.toContain(token);
  });

  it("rejects a JWT signed by another key that claims the demo issuer", async () => {
    const { privateKey } = await generateKeyPair("ES256");
    const forged = await new SignJWT({ scope: "write_invoice" })
      .setProtectedHeader({ alg: "ES256", typ: "at+jwt" })
      .setIssuer(as.issuer)
      .setAudience(BILLING)
      .setSubject("demo-client")
      .setExpirationTime("5m")
      .sign(privateKey);
    const response = await callInvoices("/invoices", forged);
    expect(response.status).toBe(401);
    expect(response.body).toMatchObject({ code: "PG_SDK_TOKEN_INVALID" });
  });
});

describe("the invoices API: ownership and writes", () => {
  it("lists only the caller's own invoices", async () => {
    const mine = await callInvoices("/invoices", await phantomJwt("read_invoice"));
    expect(mine.status).toBe(200);
    expect((mine.body["invoices"] as { id: string }[]).map((i) => i.id)).toEqual(["inv-1001", "inv-1002"]);
    const partners = await callInvoices("/invoices", await phantomJwt("read_invoice", "partner-client"));
    expect((partners.body["invoices"] as { id: string }[]).map((i) => i.id)).toEqual(["inv-2001"]);
  });

  it("allows the owner and denies others with 403 and a clear reason", async () => {
    const demo = await phantomJwt("read_invoice");
    expect((await callInvoices("/invoices/inv-1001", demo)).status).toBe(200);
    const denied = await callInvoices("/invoices/inv-2001", demo);
    expect(denied.status).toBe(403);
    expect(denied.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(denied.body).toMatchObject({
      code: "PG_SDK_FORBIDDEN",
      detail: "this invoice belongs to another customer",
      policy: "owns-invoice",
    });
    expect(
      (await callInvoices("/invoices/inv-2001", await phantomJwt("read_invoice", "partner-client"))).status,
    ).toBe(200);
  });

  it("needs write_invoice to create, and the new invoice belongs to the caller", async () => {
    const invoice = { amount: 42, currency: "EUR", description: "test" };
    const reader = await callInvoices("/invoices", await phantomJwt("read_invoice"), {
      method: "POST",
      body: invoice,
    });
    expect(reader.status).toBe(403);
    expect(reader.headers["www-authenticate"]).toContain('scope="write_invoice"');
    expect(reader.body).toMatchObject({ code: "PG_SDK_INSUFFICIENT_SCOPE", scope: "write_invoice" });

    const writer = await phantomJwt("write_invoice");
    const created = await callInvoices("/invoices", writer, { method: "POST", body: invoice });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ owner: "demo-client", amount: 42 });
    const id = String(created.body["id"]);
    // write_invoice implies read_invoice; the partner still cannot see it.
    expect((await callInvoices(`/invoices/${id}`, writer)).status).toBe(200);
    expect(
      (await callInvoices(`/invoices/${id}`, await phantomJwt("read_invoice", "partner-client"))).status,
    ).toBe(403);
  });
});

// ---- API to API ----------------------------------------------------------------------------------------------

describe("exchange", () => {
  it("gets a narrower token for the callee's audience, verified by the callee", async () => {
    const identity = await billingVerifier().verify(await phantomJwt("read_invoice write_invoice"));
    const before = as.stats.exchanges;
    const { status, body: raw } = await json(
      invoicesClient().exchange(identity, "payments", {
        path: "/payments/inv-1001",
        scopes: ["read_invoice"],
      }),
    );
    const body = raw as { tokenSeen: TokenSeen; ledger: { via: string; status: number } };
    expect(status).toBe(200);
    expect(as.stats.exchanges).toBe(before + 1);
    expect(body.tokenSeen).toMatchObject({
      sub: "demo-client",
      aud: [PAYMENTS],
      scopes: ["read_invoice"],
      actors: ["invoices-api"],
    });
    expect(body.tokenSeen.fingerprint).not.toBe(identity.tokenFingerprint);
    expect(lastAudit()).toMatchObject({
      pattern: "exchange",
      from: "test-invoices",
      to: "payments",
      toDomain: "payments",
      callerTokenFingerprint: identity.tokenFingerprint,
      sentTokenFingerprint: body.tokenSeen.fingerprint,
      audience: [PAYMENTS],
      scopes: ["read_invoice"],
      exchangeCache: "miss",
      outcome: "ok",
      status: 200,
    });
  });

  it("reuses the exchanged token until shortly before it expires, and shares one exchange among concurrent calls", async () => {
    const clock = createManualClock(Date.now());
    const client = invoicesClient(clock);
    const identity = await billingVerifier().verify(await phantomJwt("read_invoice"));
    const call = () =>
      client.exchange(identity, "payments", { path: "/payments/inv-1002", scopes: ["read_invoice"] });
    const before = as.stats.exchanges;

    const responses = await Promise.all([call(), call(), call(), call(), call()]);
    for (const response of responses) await response.body.dump();
    expect(as.stats.exchanges).toBe(before + 1);
    await (await call()).body.dump();
    expect(as.stats.exchanges).toBe(before + 1);
    expect(lastAudit().exchangeCache).toBe("hit");

    // Renewed 30 s (refreshBeforeExpirySeconds) before the exchanged token's exp, which is the caller token's.
    clock.advance((3600 - 45) * 1000);
    await (await call()).body.dump();
    expect(as.stats.exchanges).toBe(before + 1);
    clock.advance(25_000);
    await (await call()).body.dump();
    expect(as.stats.exchanges).toBe(before + 2);
    expect(lastAudit().exchangeCache).toBe("miss");
  });

  it("asks for the fewest held scopes that satisfy the need (write_invoice implies read_invoice)", async () => {
    const identity = await billingVerifier().verify(await phantomJwt("write_invoice"));
    const { status, body: raw } = await json(
      invoicesClient().exchange(identity, "payments", {
        path: "/payments/inv-1001",
        scopes: ["read_invoice"],
      }),
    );
    const body = raw as { tokenSeen: TokenSeen };
    expect(status).toBe(200);
    expect(body.tokenSeen.scopes).toEqual(["write_invoice"]);
  });

  it("refuses without asking the AS when the caller's scopes cannot cover the need", async () => {
    const identity = await billingVerifier().verify(await phantomJwt("video_metadata"));
    const before = as.stats.exchanges;
    const paymentsBefore = hits.payments;
    const error = await sdkFailure(
      invoicesClient().exchange(identity, "payments", {
        path: "/payments/inv-1001",
        scopes: ["read_invoice"],
      }),
    );
    expect(error).toMatchObject({ code: "PG_SDK_INSUFFICIENT_SCOPE", extra: { scope: "read_invoice" } });
    expect(as.stats.exchanges).toBe(before);
    expect(hits.payments).toBe(paymentsBefore);
    expect(lastAudit()).toMatchObject({ outcome: "refused", errorCode: "PG_SDK_INSUFFICIENT_SCOPE" });
    expect(lastAudit().sentTokenFingerprint).toBeUndefined();
  });

  it("reports the AS refusing an audience this API may not obtain", async () => {
    const identity = await billingVerifier().verify(await phantomJwt("read_invoice"));
    const error = await sdkFailure(
      invoicesClient().exchange(identity, "elsewhere", {
        path: "/payments/inv-1001",
        scopes: ["read_invoice"],
      }),
    );
    expect(error.code).toBe("PG_SDK_EXCHANGE_FAILED");
    expect(error.reason).toContain("invalid_target");
  });

  it("reports an exchange refused because the caller's token has expired at the AS", async () => {
    const shortLived = await startDemoAuthServer({ port: 0, accessTokenTtlSeconds: 1 });
    try {
      const jwt = await phantomJwt("read_invoice", "demo-client", shortLived);
      const verifier = createInternalJwtVerifier({
        issuer: shortLived.issuer,
        audience: shortLived.issuer,
        jwksUri: shortLived.jwksUri,
      });
      const identity = await verifier.verify(jwt);
      const client = createApiClient({
        service: "short",
        domain: "billing",
        domains: demoSecurityDomains(shortLived.issuer),
        services: { payments: { url: paymentsUrl, domain: "payments" } },
        authServer: {
          issuer: shortLived.issuer,
          tokenEndpoint: shortLived.tokenEndpoint,
          clientId: "invoices-api",
          clientSecret: "invoices-secret",
        },
        audit: false,
      });
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const error = await sdkFailure(
        client.exchange(identity, "payments", { path: "/payments/inv-1001", scopes: ["read_invoice"] }),
      );
      expect(error).toMatchObject({ code: "PG_SDK_EXCHANGE_REFUSED", status: 401 });
      await client.close();
      await verifier.close();
    } finally {
      await shortLived.close();
    }
  });
});

describe("embed", () => {
  it("forwards the billing token the AS embedded in the payments token, checked first", async () => {
    const outer = await paymentsToken();
    const nested = decodeJwt(outer)["ledger_token"];
    expect(typeof nested).toBe("string");
    rawTokens.push(String(nested));
    const identity = await paymentsVerifier().verify(outer);
    const { status, body: raw } = await json(
      embeddingClient().embed(identity, "ledger", { path: "/ledger/inv-1001" }),
    );
    const body = raw as { tokenSeen: TokenSeen };
    expect(status).toBe(200);
    expect(body.tokenSeen).toMatchObject({ sub: "demo-client", aud: [BILLING], scopes: ["read_invoice"] });
    expect(body.tokenSeen.fingerprint).toBe(fingerprintToken(String(nested)));
    expect(lastAudit()).toMatchObject({
      pattern: "embed",
      from: "test-payments",
      fromDomain: "payments",
      to: "ledger",
      toDomain: "billing",
      callerTokenFingerprint: identity.tokenFingerprint,
      sentTokenFingerprint: fingerprintToken(String(nested)),
      audience: [BILLING],
      outcome: "ok",
    });
  });

  describe("failure modes (outer tokens signed by a test issuer, nested tokens from the demo AS)", () => {
    let testKey: CryptoKey;
    let testJwk: JWK;
    let outerVerifier: InternalJwtVerifier;
    let realNested: string;

    const outerToken = (claims: Record<string, unknown>, sub = "demo-client"): Promise<string> =>
      new SignJWT({ scope: "read_invoice", ...claims })
        .setProtectedHeader({ alg: "ES256", kid: "outer", typ: "at+jwt" })
        .setIssuer("urn:test:outer")
        .setAudience(PAYMENTS)
        .setSubject(sub)
        .setExpirationTime("10m")
        .sign(testKey);

    beforeAll(async () => {
      const pair = await generateKeyPair("ES256", { extractable: true });
      testKey = pair.privateKey;
      const jwk: JWK = { ...(await exportJWK(pair.publicKey)), kid: "outer", alg: "ES256" };
      testJwk = jwk;
      outerVerifier = createInternalJwtVerifier({
        issuer: "urn:test:outer",
        audience: PAYMENTS,
        jwks: { keys: [jwk] },
      });
      realNested = String(decodeJwt(await paymentsToken())["ledger_token"]);
    });

    async function refused(outer: string, code: string, client = embeddingClient()): Promise<SdkError> {
      const identity = await outerVerifier.verify(outer);
      const before = hits.ledger;
      const error = await sdkFailure(client.embed(identity, "ledger", { path: "/ledger/inv-1001" }));
      expect(error.code).toBe(code);
      expect(hits.ledger).toBe(before);
      expect(lastAudit()).toMatchObject({ pattern: "embed", outcome: "refused", errorCode: code });
      return error;
    }

    it("the test issuer's token with the real nested token goes through", async () => {
      const identity = await outerVerifier.verify(await outerToken({ ledger_token: realNested }));
      const response = await embeddingClient().embed(identity, "ledger", { path: "/ledger/inv-1001" });
      expect(response.statusCode).toBe(200);
      await response.body.dump();
    });

    it("missing claim", async () => {
      const error = await refused(await outerToken({}), "PG_SDK_EMBEDDED_TOKEN_MISSING");
      expect(error.reason).toContain("ledger_token");
    });

    it("not a JWT, or a JWT not signed by the AS", async () => {
      await refused(await outerToken({ ledger_token: "garbage" }), "PG_SDK_EMBEDDED_TOKEN_INVALID");
      const { privateKey } = await generateKeyPair("ES256");
      const forged = await new SignJWT({ scope: "read_invoice" })
        .setProtectedHeader({ alg: "ES256", typ: "at+jwt" })
        .setIssuer(as.issuer)
        .setAudience(BILLING)
        .setSubject("demo-client")
        .setExpirationTime("5m")
        .sign(privateKey);
      await refused(await outerToken({ ledger_token: forged }), "PG_SDK_EMBEDDED_TOKEN_INVALID");
    });

    it("addressed to another audience", async () => {
      const wrong = await paymentsToken();
      await refused(await outerToken({ ledger_token: wrong }), "PG_SDK_EMBEDDED_TOKEN_WRONG_AUDIENCE");
    });

    it("expired", async () => {
      const clock = createManualClock(Date.now());
      clock.advance((3600 + 31) * 1000);
      await refused(
        await outerToken({ ledger_token: realNested }),
        "PG_SDK_EMBEDDED_TOKEN_EXPIRED",
        embeddingClient(clock),
      );
    });

    it("typ JWT, when the client takes only at+jwt (requireAccessTokenTyp)", async () => {
      // The demo AS signs every nested token at+jwt: this one comes from the test issuer, as the client is told.
      const nested = await new SignJWT({ scope: "read_invoice" })
        .setProtectedHeader({ alg: "ES256", kid: "outer", typ: "JWT" })
        .setIssuer("urn:test:outer")
        .setAudience(BILLING)
        .setSubject("demo-client")
        .setExpirationTime("5m")
        .sign(testKey);
      const testIssuer = { issuer: "urn:test:outer", jwks: { keys: [testJwk] } };
      const error = await refused(
        await outerToken({ ledger_token: nested }),
        "PG_SDK_EMBEDDED_TOKEN_INVALID",
        embeddingClient(undefined, { ...testIssuer, requireAccessTokenTyp: true }),
      );
      expect(error.reason).toContain("typ");
      // Without the option the SDK passes it on; the ledger, which trusts the demo AS only, answers 401 itself.
      const identity = await outerVerifier.verify(await outerToken({ ledger_token: nested }));
      const response = await embeddingClient(undefined, testIssuer).embed(identity, "ledger", {
        path: "/ledger/inv-1001",
      });
      expect(response.statusCode).toBe(401);
      await response.body.dump();
      expect(lastAudit()).toMatchObject({
        pattern: "embed",
        outcome: "ok",
        status: 401,
        sentTokenFingerprint: fingerprintToken(nested),
      });
    });

    it("about another subject", async () => {
      const error = await refused(
        await outerToken({ ledger_token: realNested }, "partner-client"),
        "PG_SDK_EMBEDDED_TOKEN_INVALID",
      );
      expect(error.reason).toContain("another subject");
    });
  });
});

describe("share", () => {
  it("forwards the caller's own token within the security domain", async () => {
    const identity: Identity = await billingVerifier().verify(await phantomJwt("read_invoice"));
    const { status, body: raw } = await json(
      invoicesClient().share(identity, "ledger", { path: "/ledger/inv-1002", requestId: "req-share-1" }),
    );
    const body = raw as { tokenSeen: TokenSeen };
    expect(status).toBe(200);
    expect(body.tokenSeen.fingerprint).toBe(identity.tokenFingerprint);
    expect(lastAudit()).toMatchObject({
      pattern: "share",
      sentTokenFingerprint: identity.tokenFingerprint,
      requestId: "req-share-1",
      outcome: "ok",
    });
  });

  it("refuses to share across security domains and says to exchange", async () => {
    const identity = await billingVerifier().verify(await phantomJwt("read_invoice"));
    const before = hits.payments;
    const error = await sdkFailure(
      invoicesClient().share(identity, "payments", { path: "/payments/inv-1001" }),
    );
    expect(error.code).toBe("PG_SDK_SHARE_ACROSS_DOMAINS");
    expect(error.message).toContain("use exchange()");
    expect(error.message).toContain("'payments'");
    expect(hits.payments).toBe(before);
    expect(lastAudit()).toMatchObject({
      pattern: "share",
      to: "payments",
      outcome: "refused",
      errorCode: "PG_SDK_SHARE_ACROSS_DOMAINS",
      sentTokenFingerprint: undefined,
    });
  });

  it("refuses to share a token that is not addressed to the domain", async () => {
    const identity = await paymentsVerifier().verify(await paymentsToken());
    const error = await sdkFailure(invoicesClient().share(identity, "ledger", { path: "/ledger/inv-1001" }));
    expect(error.code).toBe("PG_SDK_SHARE_ACROSS_DOMAINS");
  });
});

describe("the demo chain in one call", () => {
  it("GET /invoices/:id/status: ledger by share, payments by exchange, payments to ledger by embed", async () => {
    const jwt = await phantomJwt("read_invoice");
    const response = await callInvoices("/invoices/inv-1001/status", jwt);
    expect(response.status).toBe(200);
    const body = response.body as {
      ledger: { via: string; status: number; body: { tokenSeen: TokenSeen } };
      payment: {
        via: string;
        status: number;
        body: {
          tokenSeen: TokenSeen;
          ledger: { via: string; status: number; body: { tokenSeen: TokenSeen } };
        };
      };
    };
    expect(body.ledger).toMatchObject({ via: "share", status: 200 });
    expect(body.ledger.body.tokenSeen.fingerprint).toBe(fingerprintToken(jwt));
    expect(body.payment).toMatchObject({ via: "exchange", status: 200 });
    expect(body.payment.body.tokenSeen).toMatchObject({
      aud: [PAYMENTS],
      scopes: ["read_invoice"],
      actors: ["invoices-api"],
    });
    expect(body.payment.body.ledger).toMatchObject({ via: "embed", status: 200 });
    expect(body.payment.body.ledger.body.tokenSeen).toMatchObject({ aud: [BILLING], sub: "demo-client" });
  });

  it("another customer's invoice stops at the invoices API", async () => {
    const before = { ...hits };
    const response = await callInvoices("/invoices/inv-2001/status", await phantomJwt("read_invoice"));
    expect(response.status).toBe(403);
    expect(hits).toEqual(before);
  });
});

describe("audit records", () => {
  it("name tokens only by fingerprint", () => {
    expect(audit.length).toBeGreaterThan(10);
    const text = audit.map((record) => JSON.stringify(record)).join("\n");
    for (const token of rawTokens) expect(text).not.toContain(token);
    // No JWT of any kind (exchanged and embedded tokens never reach the test as values).
    expect(text).not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}\./);
    for (const record of audit) {
      expect(record.callerTokenFingerprint).toMatch(/^[\w-]{43}$/);
      if (record.sentTokenFingerprint !== undefined)
        expect(record.sentTokenFingerprint).toMatch(/^[\w-]{43}$/);
    }
  });
});
