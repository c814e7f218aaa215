// SDK API-to-API client, without an authorization server: option validation, what a shared call sends (and what
// a caller cannot override), transport failures, and audit records for every outcome. A real node:http server
// stands in for the callee; identities come from a verifier over a local key.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createApiClient,
  createInternalJwtVerifier,
  SdkError,
  type ApiCallAuditRecord,
  type ApiClientOptions,
  type Identity,
} from "../../src/sdk/index.ts";

let server: Server;
let url: string;
let identity: Identity;
let jwt: string;
const seen: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] = [];

const domains = {
  billing: { audiences: ["urn:billing"] },
  payments: { audiences: ["urn:payments"] },
} as const;

function client(overrides: Partial<ApiClientOptions<"ledger" | "payments", "billing" | "payments">> = {}) {
  return createApiClient<"ledger" | "payments", "billing" | "payments">({
    service: "test",
    domain: "billing",
    domains: { billing: { audiences: ["urn:billing"] }, payments: { audiences: ["urn:payments"] } },
    services: { ledger: { url: `${url}/base`, domain: "billing" }, payments: { url, domain: "payments" } },
    audit: false,
    ...overrides,
  });
}

async function failure(promise: Promise<unknown>): Promise<SdkError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SdkError) return error;
    throw error;
  }
  throw new Error("expected an SdkError");
}

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (req.url?.endsWith("/redirect") === true) {
        res.writeHead(302, { location: "http://evil.example/steal" }).end();
      } else if (req.url?.endsWith("/slow") === true) {
        setTimeout(() => res.writeHead(200).end("{}"), 500);
      } else if (req.url?.endsWith("/big-announced") === true) {
        res.writeHead(200, { "content-length": "5000" }).end("x".repeat(5000));
      } else if (req.url?.endsWith("/big-chunked") === true) {
        // No content-length: 20 chunks of 500 bytes.
        res.writeHead(200, { "content-type": "text/plain" });
        let left = 20;
        const next = () => {
          if (left-- === 0) {
            res.end();
            return;
          }
          res.write("y".repeat(500), () => setImmediate(next));
        };
        next();
      } else {
        res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const verifier = createInternalJwtVerifier({
    issuer: "https://as.example",
    audience: "urn:billing",
    jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: "k", alg: "ES256" }] },
  });
  jwt = await new SignJWT({ scope: "read_invoice", client_id: "web" })
    .setProtectedHeader({ alg: "ES256", kid: "k", typ: "at+jwt" })
    .setIssuer("https://as.example")
    .setAudience("urn:billing")
    .setSubject("alice")
    .setExpirationTime("5m")
    .sign(privateKey);
  identity = await verifier.verify(jwt);
});

afterAll(() => {
  server.close();
});

describe("API client options", () => {
  const invalid: [string, Partial<ApiClientOptions<"ledger" | "payments", "billing" | "payments">>][] = [
    ["this API's domain is not in domains", { domain: "nowhere" as "billing" }],
    [
      "a service in an unknown domain",
      {
        services: {
          ledger: { url: "http://x", domain: "x" as "billing" },
          payments: { url: "http://y", domain: "payments" },
        },
      },
    ],
    [
      "a service URL that is not http(s)",
      {
        services: {
          ledger: { url: "ftp://x", domain: "billing" },
          payments: { url: "http://y", domain: "payments" },
        },
      },
    ],
    [
      "a domain without audiences",
      { domains: { billing: { audiences: [] as unknown as [string] }, payments: domains.payments } },
    ],
    [
      "an embedded-token service without keys to check it",
      {
        services: {
          ledger: { url: "http://x", domain: "billing", embeddedTokenClaim: "t" },
          payments: { url: "http://y", domain: "payments" },
        },
      },
    ],
  ];
  for (const [what, overrides] of invalid) {
    it(`rejects ${what}`, () => {
      expect(() => client(overrides)).toThrow(
        expect.objectContaining({ code: "PG_SDK_CONFIG_INVALID" }) as Error,
      );
    });
  }

  it("exchange without this API's client credentials, or without scopes, is a configuration error", async () => {
    const noClient = client({ authServer: { issuer: "https://as.example", tokenEndpoint: `${url}/token` } });
    expect(
      (await failure(noClient.exchange(identity, "payments", { path: "/p", scopes: ["read_invoice"] }))).code,
    ).toBe("PG_SDK_CONFIG_INVALID");
    const withClient = client({
      authServer: {
        issuer: "https://as.example",
        tokenEndpoint: `${url}/token`,
        clientId: "c",
        clientSecret: "s",
      },
    });
    expect((await failure(withClient.exchange(identity, "payments", { path: "/p", scopes: [] }))).code).toBe(
      "PG_SDK_CONFIG_INVALID",
    );
  });

  it("an unknown service, a relative path or a hand-made identity is refused before anything is sent", async () => {
    const c = client();
    const before = seen.length;
    expect((await failure(c.share(identity, "nope" as "ledger", { path: "/x" }))).code).toBe(
      "PG_SDK_UNKNOWN_SERVICE",
    );
    expect((await failure(c.share(identity, "ledger", { path: "x" }))).code).toBe("PG_SDK_CONFIG_INVALID");
    const forged = { ...identity };
    expect((await failure(c.share(forged, "ledger", { path: "/x" }))).code).toBe("PG_SDK_CONFIG_INVALID");
    expect(seen.length).toBe(before);
  });
});

describe("request checks", () => {
  it("refuses, before anything is sent or exchanged, a path that could leave the service's base path, and unsendable headers", async () => {
    const records: ApiCallAuditRecord[] = [];
    const c = client({ audit: (record) => records.push(record) });
    const before = seen.length;
    const refused = [
      "/entries/../../payments/x",
      "/entries/%2e%2e/%2E%2E/payments/x",
      "/entries/..%2F..%2Fpayments%2Fx",
      "/entries/..%5c..%5cpayments",
      "/entries\\..\\payments",
      "/./entries",
      "/entries/.",
      "/entries#frag",
      "/entries/with space",
      "/entries/ünïcode",
      "/entries\r\nx-injected: 1",
    ];
    for (const path of refused) {
      const error = await failure(c.share(identity, "ledger", { path }));
      expect(error.code, path).toBe("PG_SDK_CONFIG_INVALID");
    }
    for (const headers of [{ "x-a": "1\r\nx-injected: 2" }, { "bad name": "1" }, { "x-a": "nul\0" }]) {
      expect((await failure(c.share(identity, "ledger", { path: "/x", headers }))).code).toBe(
        "PG_SDK_CONFIG_INVALID",
      );
    }
    expect(seen.length).toBe(before);
    expect(records.every((record) => record.outcome === "refused")).toBe(true);
    expect(records).toHaveLength(refused.length + 3);
    // Dots inside a segment, encoded characters other than slashes, and dots in the query are fine.
    for (const path of ["/entries/v1.2..3", "/entries/a%20b", "/entries?next=../x&q=%2F"]) {
      const response = await c.share(identity, "ledger", { path });
      expect(response.statusCode, path).toBe(200);
      await response.body.dump();
    }
    expect(seen.slice(before).map((request) => request.url)).toEqual([
      "/base/entries/v1.2..3",
      "/base/entries/a%20b",
      "/base/entries?next=../x&q=%2F",
    ]);
  });
});

describe("a shared call", () => {
  it("sends the caller's token, the request id and the body; callers cannot override authorization or host", async () => {
    const response = await client().share(identity, "ledger", {
      method: "POST",
      path: "/entries?x=1",
      json: { amount: 1 },
      requestId: ["req-1", "req-2"],
      headers: { Authorization: "Bearer stolen", Host: "evil.example", "X-Custom": "yes" },
    });
    expect(response.statusCode).toBe(200);
    expect(await response.body.json()).toEqual({ ok: true });
    const last = seen[seen.length - 1]!;
    expect(last).toMatchObject({ method: "POST", url: "/base/entries?x=1", body: '{"amount":1}' });
    expect(last.headers).toMatchObject({
      authorization: `Bearer ${jwt}`,
      "x-request-id": "req-1",
      "x-custom": "yes",
      "content-type": "application/json",
      accept: "application/json",
    });
    expect(last.headers.host).not.toBe("evil.example");
  });

  it("times the call to the response head: a body read later than requestTimeoutMs is still whole", async () => {
    const quick = client({ requestTimeoutMs: 100 });
    const response = await quick.share(identity, "ledger", { path: "/entries" });
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(await response.body.json()).toEqual({ ok: true });
    await quick.close();
  });

  it("bounds response bodies by maxResponseBytes: an announced length fails the call, a growing body its read", async () => {
    const records: ApiCallAuditRecord[] = [];
    const small = client({ maxResponseBytes: 4096, audit: (record) => records.push(record) });
    const announced = await failure(small.share(identity, "ledger", { path: "/big-announced" }));
    expect(announced).toMatchObject({ code: "PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE", status: 502 });
    expect(announced.message).toBe(
      "PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE: ledger: the response body (5000 bytes announced) is larger than maxResponseBytes (4096)",
    );
    expect(records.map((r) => [r.outcome, r.errorCode])).toEqual([
      ["failed", "PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE"],
    ]);
    const chunked = await small.share(identity, "ledger", { path: "/big-chunked" });
    expect(chunked.statusCode).toBe(200);
    const read = await chunked.body.text().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(read).toMatchObject({ code: "PG_SDK_UPSTREAM_RESPONSE_TOO_LARGE" });
    // Within the bound, and by default (10 MiB), the same bodies are whole; the connection is still usable.
    expect(await (await small.share(identity, "ledger", { path: "/entries" })).body.json()).toEqual({
      ok: true,
    });
    const roomy = client();
    expect((await (await roomy.share(identity, "ledger", { path: "/big-chunked" })).body.text()).length).toBe(
      10_000,
    );
    expect(
      (await (await roomy.share(identity, "ledger", { path: "/big-announced" })).body.text()).length,
    ).toBe(5000);
    await small.close();
    await roomy.close();
  });

  it("does not follow redirects", async () => {
    const response = await client().share(identity, "ledger", { path: "/redirect" });
    expect(response.statusCode).toBe(302);
    await response.body.dump();
  });

  it("reports a timeout and an unreachable service with distinct codes, audited as failed", async () => {
    const records: ApiCallAuditRecord[] = [];
    const slow = client({ requestTimeoutMs: 100, audit: (record) => records.push(record) });
    const timeout = await failure(slow.share(identity, "ledger", { path: "/slow" }));
    expect(timeout).toMatchObject({ code: "PG_SDK_UPSTREAM_TIMEOUT", status: 504 });
    const down = client({
      services: {
        ledger: { url: "http://127.0.0.1:1", domain: "billing" },
        payments: { url, domain: "payments" },
      },
      audit: (record) => records.push(record),
    });
    expect((await failure(down.share(identity, "ledger", { path: "/x" }))).code).toBe(
      "PG_SDK_UPSTREAM_UNAVAILABLE",
    );
    expect(records.map((r) => [r.outcome, r.errorCode])).toEqual([
      ["failed", "PG_SDK_UPSTREAM_TIMEOUT"],
      ["failed", "PG_SDK_UPSTREAM_UNAVAILABLE"],
    ]);
    expect(records[0]!.sentTokenFingerprint).toBe(identity.tokenFingerprint);
    await slow.close();
    await down.close();
  });

  it("a sink that throws does not fail the call; the record has no query string and no token", async () => {
    const records: ApiCallAuditRecord[] = [];
    const c = client({
      audit: (record) => {
        records.push(record);
        throw new Error("sink down");
      },
    });
    const response = await c.share(identity, "ledger", { path: "/entries?secret=1" });
    await response.body.dump();
    expect(response.statusCode).toBe(200);
    expect(records[0]).toMatchObject({
      event: "api_call",
      from: "test",
      fromDomain: "billing",
      to: "ledger",
      pattern: "share",
      path: "/entries",
      sub: "alice",
      clientId: "web",
      outcome: "ok",
      status: 200,
    });
    expect(JSON.stringify(records)).not.toContain(jwt);
  });
});
