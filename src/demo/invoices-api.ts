// The demo invoices API, built on phantomgate/sdk: it trusts only the internal JWT the gateway forwards and does
// the fine-grained part of authorization itself — a caller sees only its own invoices, writes need
// `write_invoice`. `GET /invoices/:id/status` shows the API-to-API patterns: the ledger helper (same security
// domain) gets the caller's token shared, the payments API (another domain) a token obtained by exchange, and the
// payments API in turn reaches the ledger with the token the authorization server embedded for it.
import { randomUUID } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyReply } from "fastify";
import type { Dispatcher } from "undici";
import {
  createApiClient,
  createInternalJwtVerifier,
  createScopeChecker,
  enforce,
  filterAllowed,
  ownedBy,
  phantomgateFastify,
  requireScopes,
  SdkError,
  type ApiResponse,
  type AuditSink,
  type Clock,
} from "../sdk/index.ts";
import { billingScopePolicy, demoSecurityDomains } from "./security-domains.ts";

export interface InvoicesApiOptions {
  /** Issuer of the internal JWTs (the authorization server in phantom mode). */
  readonly issuer: string;
  readonly jwksUri: string;
  /** Token endpoint for exchanges (default `${issuer}/token`). */
  readonly tokenEndpoint?: string;
  /** This API's client at the authorization server (default `invoices-api` / `invoices-secret`). */
  readonly clientId?: string;
  readonly clientSecret?: string;
  /** Base URLs of the APIs it calls (default the demo ports 9104 and 9105). */
  readonly ledgerUrl?: string;
  readonly paymentsUrl?: string;
  readonly dispatcher?: Dispatcher;
  readonly clock?: Clock;
  /** Audit of its API-to-API calls; default off. */
  readonly audit?: AuditSink | false;
}

interface Invoice {
  readonly id: string;
  readonly owner: string;
  readonly amount: number;
  readonly currency: string;
  readonly description: string;
}

const ownsInvoice = ownedBy<Invoice>((invoice) => invoice.owner, {
  name: "owns-invoice",
  reason: "this invoice belongs to another customer",
});

/** A callee's answer for the status page: how it was reached, then its status and body or the SDK's error code. */
async function summarise(via: string, call: Promise<ApiResponse>): Promise<Record<string, unknown>> {
  let response: ApiResponse;
  try {
    response = await call;
  } catch (error) {
    // The page shows what went wrong with one dependency instead of failing as a whole.
    if (error instanceof SdkError) return { via, error: error.code };
    throw error;
  }
  const text = await response.body.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    // not JSON: shown as text
  }
  return { via, status: response.statusCode, body };
}

function notFound(reply: FastifyReply, detail: string): Record<string, unknown> {
  void reply.code(404).type("application/problem+json");
  return { type: "about:blank", title: "Not Found", status: 404, detail };
}

export function createInvoicesApi(options: InvoicesApiOptions): FastifyInstance {
  const invoices = new Map<string, Invoice>([
    [
      "inv-1001",
      { id: "inv-1001", owner: "demo-client", amount: 120, currency: "EUR", description: "Hosting" },
    ],
    [
      "inv-1002",
      { id: "inv-1002", owner: "demo-client", amount: 75.5, currency: "EUR", description: "Support" },
    ],
    [
      "inv-2001",
      { id: "inv-2001", owner: "partner-client", amount: 990, currency: "USD", description: "Licence" },
    ],
  ]);
  const inject = {
    ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  };
  const domains = demoSecurityDomains(options.issuer);
  const scopes = createScopeChecker(billingScopePolicy);
  const verifier = createInternalJwtVerifier({
    issuer: options.issuer,
    audience: domains.billing.audiences,
    jwksUri: options.jwksUri,
    ...inject,
  });
  const client = createApiClient({
    service: "invoices-api",
    domain: "billing",
    domains,
    services: {
      ledger: { url: options.ledgerUrl ?? "http://127.0.0.1:9104", domain: "billing" },
      payments: { url: options.paymentsUrl ?? "http://127.0.0.1:9105", domain: "payments" },
    },
    authServer: {
      issuer: options.issuer,
      tokenEndpoint: options.tokenEndpoint ?? `${options.issuer}/token`,
      // The exchanged token is checked against the AS's keys before it is sent on.
      jwksUri: options.jwksUri,
      clientId: options.clientId ?? "invoices-api",
      clientSecret: options.clientSecret ?? "invoices-secret",
    },
    scopes,
    audit: options.audit ?? false,
    ...inject,
  });

  const app = Fastify({ logger: false });
  void app.register(phantomgateFastify, { verifier });
  app.addHook("onClose", async () => {
    await client.close();
    await verifier.close();
  });

  const findInvoice = (id: string): Invoice | undefined => invoices.get(id);

  app.get("/invoices", { preHandler: requireScopes(scopes, "read_invoice") }, (request) => {
    const mine = filterAllowed(request.identity, ownsInvoice, invoices.values());
    return { owner: request.identity.sub, invoices: mine };
  });

  app.get<{ Params: { id: string } }>(
    "/invoices/:id",
    { preHandler: requireScopes(scopes, "read_invoice") },
    (request, reply) => {
      const invoice = findInvoice(request.params.id);
      if (invoice === undefined) return notFound(reply, "no such invoice");
      enforce(request.identity, ownsInvoice, invoice);
      return invoice;
    },
  );

  app.get<{ Params: { id: string } }>(
    "/invoices/:id/status",
    { preHandler: requireScopes(scopes, "read_invoice") },
    async (request, reply) => {
      const invoice = findInvoice(request.params.id);
      if (invoice === undefined) return notFound(reply, "no such invoice");
      enforce(request.identity, ownsInvoice, invoice);
      const { identity } = request;
      const requestId = request.headers["x-request-id"];
      const path = encodeURIComponent(invoice.id);
      const [ledger, payment] = await Promise.all([
        // Same security domain: the ledger accepts the very token the gateway gave us.
        summarise("share", client.share(identity, "ledger", { path: `/ledger/${path}`, requestId })),
        // Another domain: a token for the payments audience, with only the scope the payments API needs.
        summarise(
          "exchange",
          client.exchange(identity, "payments", {
            path: `/payments/${path}`,
            scopes: ["read_invoice"],
            requestId,
          }),
        ),
      ]);
      return { invoice, ledger, payment };
    },
  );

  app.post<{ Body: { amount?: unknown; currency?: unknown; description?: unknown } | undefined }>(
    "/invoices",
    { preHandler: requireScopes(scopes, "write_invoice") },
    (request, reply) => {
      const { amount, currency, description } = request.body ?? {};
      if (
        typeof amount !== "number" ||
        !Number.isFinite(amount) ||
        amount <= 0 ||
        typeof currency !== "string"
      ) {
        void reply.code(400).type("application/problem+json");
        return {
          type: "about:blank",
          title: "Bad Request",
          status: 400,
          detail: "amount (positive number) and currency are required",
        };
      }
      const invoice: Invoice = {
        id: `inv-${randomUUID().slice(0, 8)}`,
        owner: request.identity.sub,
        amount,
        currency,
        description: typeof description === "string" ? description : "",
      };
      invoices.set(invoice.id, invoice);
      void reply.code(201);
      return invoice;
    },
  );

  return app;
}
