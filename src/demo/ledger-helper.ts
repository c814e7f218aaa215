// The demo ledger helper: a small API in the billing security domain that books charges and payments per invoice.
// The invoices API calls it by sharing its own token (same domain); the payments API calls it with the billing
// token the authorization server embedded in the payments token. Either way it verifies the JWT and checks that
// the caller owns the invoice.
import Fastify, { type FastifyInstance } from "fastify";
import type { Dispatcher } from "undici";
import {
  createInternalJwtVerifier,
  createScopeChecker,
  enforce,
  ownedBy,
  phantomgateFastify,
  requireScopes,
  type Clock,
} from "../sdk/index.ts";
import { billingScopePolicy, demoSecurityDomains, describeToken } from "./security-domains.ts";

export interface LedgerHelperOptions {
  /** Issuer of the tokens it accepts (the demo authorization server). */
  readonly issuer: string;
  readonly jwksUri: string;
  readonly dispatcher?: Dispatcher;
  readonly clock?: Clock;
}

interface LedgerAccount {
  readonly invoiceId: string;
  readonly owner: string;
  readonly entries: readonly { readonly kind: "charge" | "payment"; readonly amount: number }[];
}

const ownsAccount = ownedBy<LedgerAccount>((account) => account.owner, {
  name: "owns-ledger-account",
  reason: "this ledger account belongs to another customer",
});

export function createLedgerHelper(options: LedgerHelperOptions): FastifyInstance {
  const accounts = new Map<string, LedgerAccount>([
    [
      "inv-1001",
      {
        invoiceId: "inv-1001",
        owner: "demo-client",
        entries: [
          { kind: "charge", amount: 120 },
          { kind: "payment", amount: 120 },
        ],
      },
    ],
    [
      "inv-1002",
      { invoiceId: "inv-1002", owner: "demo-client", entries: [{ kind: "charge", amount: 75.5 }] },
    ],
    [
      "inv-2001",
      { invoiceId: "inv-2001", owner: "partner-client", entries: [{ kind: "charge", amount: 990 }] },
    ],
  ]);
  const scopes = createScopeChecker(billingScopePolicy);
  const verifier = createInternalJwtVerifier({
    issuer: options.issuer,
    audience: demoSecurityDomains(options.issuer).billing.audiences,
    jwksUri: options.jwksUri,
    ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  const app = Fastify({ logger: false });
  void app.register(phantomgateFastify, { verifier });
  app.addHook("onClose", () => verifier.close());

  app.get<{ Params: { invoiceId: string } }>(
    "/ledger/:invoiceId",
    { preHandler: requireScopes(scopes, "read_invoice") },
    (request, reply) => {
      const account = accounts.get(request.params.invoiceId);
      if (account === undefined) {
        void reply.code(404).type("application/problem+json");
        return {
          type: "about:blank",
          title: "Not Found",
          status: 404,
          detail: "no ledger account for this invoice",
        };
      }
      enforce(request.identity, ownsAccount, account);
      const balance = account.entries.reduce(
        (sum, e) => sum + (e.kind === "charge" ? e.amount : -e.amount),
        0,
      );
      return {
        invoiceId: account.invoiceId,
        balance,
        entries: account.entries,
        tokenSeen: describeToken(request.identity),
      };
    },
  );
  return app;
}
