// The whole chain through a real gateway process: client (opaque token) → gateway (phantom route) → invoices API
// (phantom JWT, SDK ownership and scope checks) → ledger helper by share and payments API by exchange → ledger by
// embed. The demo AS and APIs run in this process on port 0; no raw token reaches any log or audit line.
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { createInvoicesApi } from "../../src/demo/invoices-api.ts";
import { createLedgerHelper } from "../../src/demo/ledger-helper.ts";
import { createPaymentsApi } from "../../src/demo/payments-api.ts";
import type { TokenSeen } from "../../src/demo/security-domains.ts";
import { fingerprintToken, type ApiCallAuditRecord } from "../../src/sdk/index.ts";
import { makeConfigDir, startGatewayProcess, type GatewayProcess } from "../helpers/gateway-process.ts";
import { getToken } from "../helpers/http.ts";
import { authServerYaml, scopePoliciesYaml } from "../helpers/manifests.ts";

let as: DemoAuthServer;
let apis: FastifyInstance[] = [];
let gateway: GatewayProcess;
let invoicesHits = 0;
const audit: ApiCallAuditRecord[] = [];
const opaqueTokens: string[] = [];

const urlOf = (app: FastifyInstance): string =>
  `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;

function invoicesRouteYaml(invoicesUrl: string): string {
  return `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata:
  name: invoices
spec:
  authServerRef:
    name: demo-as
  scopePolicyRefs:
    - name: billing
  rules:
    - matches:
        - path: { type: PathPrefix, value: /invoices }
          methods: [GET]
      authentication:
        mode: phantom
      requiredScopes:
        allOf: [read_invoice]
      backendRefs:
        - url: ${invoicesUrl}
    - matches:
        - path: { type: PathPrefix, value: /invoices }
          methods: [POST, PUT, PATCH, DELETE]
      authentication:
        mode: phantom
      requiredScopes:
        allOf: [write_invoice]
      backendRefs:
        - url: ${invoicesUrl}
`;
}

async function token(scope: string, clientId = "demo-client"): Promise<string> {
  const value = await getToken(as.tokenEndpoint, scope, {
    clientId,
    secret: clientId === "demo-client" ? "demo-secret" : "partner-secret",
  });
  opaqueTokens.push(value);
  return value;
}

async function call(
  path: string,
  opaque: string,
  options: { method?: "GET" | "POST"; body?: unknown } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: Record<string, unknown> }> {
  const response = await request(`${gateway.url}${path}`, {
    method: options.method ?? "GET",
    headers: { authorization: `Bearer ${opaque}`, "content-type": "application/json" },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  });
  return {
    status: response.statusCode,
    headers: response.headers,
    body: (await response.body.json()) as Record<string, unknown>,
  };
}

beforeAll(async () => {
  as = await startDemoAuthServer({ port: 0 });
  const sink = (record: ApiCallAuditRecord): void => {
    audit.push(record);
  };
  const ledger = createLedgerHelper({ issuer: as.issuer, jwksUri: as.jwksUri });
  await ledger.listen({ port: 0, host: "127.0.0.1" });
  const payments = createPaymentsApi({
    issuer: as.issuer,
    jwksUri: as.jwksUri,
    ledgerUrl: urlOf(ledger),
    audit: sink,
  });
  await payments.listen({ port: 0, host: "127.0.0.1" });
  const invoices = createInvoicesApi({
    issuer: as.issuer,
    jwksUri: as.jwksUri,
    tokenEndpoint: as.tokenEndpoint,
    ledgerUrl: urlOf(ledger),
    paymentsUrl: urlOf(payments),
    audit: sink,
  });
  invoices.addHook("onRequest", (_request, _reply, done) => {
    invoicesHits += 1;
    done();
  });
  await invoices.listen({ port: 0, host: "127.0.0.1" });
  apis = [invoices, payments, ledger];
  const dir = makeConfigDir({
    "auth-server.yaml": authServerYaml({ issuer: as.issuer, echoOrigin: "http://127.0.0.1:1" }),
    "scope-policies.yaml": scopePoliciesYaml,
    "routes.yaml": invoicesRouteYaml(urlOf(invoices)),
  });
  gateway = await startGatewayProcess(dir);
});

afterAll(async () => {
  await gateway.stop();
  for (const api of apis) await api.close();
  await as.close();
});

describe("an API behind the gateway, built on phantomgate/sdk", () => {
  it("lists only the caller's invoices and denies another customer's with the API's reason", async () => {
    const demo = await token("read_invoice");
    const list = await call("/invoices", demo);
    expect(list.status).toBe(200);
    expect((list.body["invoices"] as { id: string }[]).map((i) => i.id)).toEqual(["inv-1001", "inv-1002"]);

    const denied = await call("/invoices/inv-2001", demo);
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({
      code: "PG_SDK_FORBIDDEN",
      detail: "this invoice belongs to another customer",
      policy: "owns-invoice",
    });
    expect((await call("/invoices/inv-2001", await token("read_invoice", "partner-client"))).status).toBe(
      200,
    );
  });

  it("writes: the gateway stops a read-only token; a write_invoice token creates an invoice owned by the caller", async () => {
    const before = invoicesHits;
    const reader = await call("/invoices", await token("read_invoice"), {
      method: "POST",
      body: { amount: 10, currency: "EUR" },
    });
    expect(reader.status).toBe(403);
    expect(reader.body).toMatchObject({ code: "PG_ERR_INSUFFICIENT_SCOPE", scope: "write_invoice" });
    expect(invoicesHits).toBe(before);

    const created = await call("/invoices", await token("write_invoice"), {
      method: "POST",
      body: { amount: 10, currency: "EUR" },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ owner: "demo-client", amount: 10 });
  });

  it("shows the three API-to-API patterns in one request", async () => {
    const opaque = await token("read_invoice write_invoice");
    const response = await call("/invoices/inv-1001/status", opaque);
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
    // The ledger (same domain) received the JWT the gateway forwarded: signed by the AS, not the opaque token.
    const forwarded = body.ledger.body.tokenSeen;
    expect(body.ledger).toMatchObject({ via: "share", status: 200 });
    expect(forwarded).toMatchObject({
      sub: "demo-client",
      aud: [as.issuer],
      scopes: ["read_invoice", "write_invoice"],
    });
    expect(forwarded.fingerprint).not.toBe(fingerprintToken(opaque));
    // The payments API (another domain) received an exchanged token: its audience, only read_invoice.
    expect(body.payment).toMatchObject({ via: "exchange", status: 200 });
    expect(body.payment.body.tokenSeen).toMatchObject({
      sub: "demo-client",
      aud: ["urn:phantomgate:payments"],
      scopes: ["read_invoice"],
      actors: ["invoices-api"],
    });
    // The payments API reached the ledger with the billing token embedded in its own.
    expect(body.payment.body.ledger).toMatchObject({ via: "embed", status: 200 });
    expect(body.payment.body.ledger.body.tokenSeen).toMatchObject({
      sub: "demo-client",
      aud: ["urn:phantomgate:billing"],
      scopes: ["read_invoice"],
    });

    const calls = audit.filter((record) => record.callerTokenFingerprint === forwarded.fingerprint);
    expect(calls.map((record) => record.pattern).sort()).toEqual(["exchange", "share"]);
    const requestIds = new Set(audit.slice(-3).map((record) => record.requestId));
    expect(requestIds.size).toBe(1);
    expect([...requestIds][0]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("leaves no raw token in the gateway's audit and output or the APIs' audit lines", async () => {
    // The gateway writes its audit line after the response; wait for the last request's line.
    const last = fingerprintToken(opaqueTokens[opaqueTokens.length - 1]!);
    let gatewayAudit = readFileSync(gateway.auditFile, "utf8");
    for (let tries = 0; !gatewayAudit.includes(last) && tries < 40; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      gatewayAudit = readFileSync(gateway.auditFile, "utf8");
    }
    const fingerprints = gatewayAudit
      .trim()
      .split("\n")
      .map((line) => (JSON.parse(line) as { tokenFingerprint?: string }).tokenFingerprint);
    expect(fingerprints).toContain(fingerprintToken(opaqueTokens[0]!));
    const everything = [
      gatewayAudit,
      gateway.output(),
      ...audit.map((record) => JSON.stringify(record)),
    ].join("\n");
    for (const opaque of opaqueTokens) expect(everything).not.toContain(opaque);
    expect(everything).not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}\./);
  });
});
