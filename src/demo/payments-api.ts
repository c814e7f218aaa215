// The demo payments API: its own security domain (`payments`), so it accepts only tokens addressed to it — the
// invoices API gets one by token exchange. To confirm a payment it asks the ledger helper (billing domain) with the
// billing token the authorization server embedded in the payments token: the "embed" pattern, no exchange needed.
import Fastify, { type FastifyInstance } from "fastify";
import type { Dispatcher } from "undici";
import {
  createApiClient,
  createInternalJwtVerifier,
  createScopeChecker,
  enforce,
  ownedBy,
  phantomgateFastify,
  requireScopes,
  type AuditSink,
  type Clock,
} from "../sdk/index.ts";
import { billingScopePolicy, demoSecurityDomains, describeToken } from "./security-domains.ts";

export interface PaymentsApiOptions {
  /** Issuer of the tokens it accepts and of the embedded ones (the demo authorization server). */
  readonly issuer: string;
  readonly jwksUri: string;
  /** Base URL of the ledger helper. */
  readonly ledgerUrl: string;
  readonly dispatcher?: Dispatcher;
  readonly clock?: Clock;
  /** Audit of its calls to the ledger; default off. */
  readonly audit?: AuditSink | false;
}

interface Payment {
  readonly invoiceId: string;
  readonly payer: string;
  readonly status: "paid" | "pending";
  readonly amount: number;
}

const paidByCaller = ownedBy<Payment>((payment) => payment.payer, {
  name: "payer",
  reason: "this payment was made by another customer",
});

export function createPaymentsApi(options: PaymentsApiOptions): FastifyInstance {
  const payments = new Map<string, Payment>([
    ["inv-1001", { invoiceId: "inv-1001", payer: "demo-client", status: "paid", amount: 120 }],
    ["inv-1002", { invoiceId: "inv-1002", payer: "demo-client", status: "pending", amount: 0 }],
    ["inv-2001", { invoiceId: "inv-2001", payer: "partner-client", status: "pending", amount: 0 }],
  ]);
  const inject = {
    ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  };
  const domains = demoSecurityDomains(options.issuer);
  const scopes = createScopeChecker(billingScopePolicy);
  const verifier = createInternalJwtVerifier({
    issuer: options.issuer,
    audience: domains.payments.audiences,
    jwksUri: options.jwksUri,
    ...inject,
  });
  const client = createApiClient({
    service: "payments-api",
    domain: "payments",
    domains,
    services: { ledger: { url: options.ledgerUrl, domain: "billing", embeddedTokenClaim: "ledger_token" } },
    authServer: { issuer: options.issuer, jwksUri: options.jwksUri },
    audit: options.audit ?? false,
    ...inject,
  });
  const app = Fastify({ logger: false });
  void app.register(phantomgateFastify, { verifier });
  app.addHook("onClose", async () => {
    await client.close();
    await verifier.close();
  });

  app.get<{ Params: { invoiceId: string } }>(
    "/payments/:invoiceId",
    { preHandler: requireScopes(scopes, "read_invoice") },
    async (request, reply) => {
      const payment = payments.get(request.params.invoiceId);
      if (payment === undefined) {
        return reply.code(404).type("application/problem+json").send({
          type: "about:blank",
          title: "Not Found",
          status: 404,
          detail: "no payment for this invoice",
        });
      }
      enforce(request.identity, paidByCaller, payment);
      const ledger = await client.embed(request.identity, "ledger", {
        path: `/ledger/${encodeURIComponent(payment.invoiceId)}`,
        requestId: request.headers["x-request-id"],
      });
      return {
        ...payment,
        tokenSeen: describeToken(request.identity),
        ledger: { via: "embed", status: ledger.statusCode, body: await ledger.body.json() },
      };
    },
  );
  return app;
}
