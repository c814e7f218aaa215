// The demo invoices API: trusts only the internal JWT the gateway forwards, and does the fine-grained part of
// authorization itself: a caller sees and changes only its own invoices; writes need `write_invoice`.
import { randomUUID } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyRequest } from "fastify";
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from "jose";

export interface InvoicesApiOptions {
  /** Issuer of the internal JWTs (the authorization server in phantom mode). */
  readonly issuer: string;
  readonly jwksUri: string;
}

interface Invoice {
  readonly id: string;
  readonly owner: string;
  readonly amount: number;
  readonly currency: string;
  readonly description: string;
}

function scopesOf(claims: JWTPayload): Set<string> {
  const raw = claims.scope ?? claims.scp;
  if (typeof raw === "string") return new Set(raw.split(" ").filter((s) => s !== ""));
  if (Array.isArray(raw)) return new Set(raw.filter((s): s is string => typeof s === "string"));
  return new Set();
}

function problem(status: number, title: string, detail: string): Record<string, unknown> {
  return { type: "about:blank", title, status, detail };
}

export function createInvoicesApi(options: InvoicesApiOptions): FastifyInstance {
  const jwks = createRemoteJWKSet(new URL(options.jwksUri));
  const invoices = new Map<string, Invoice>([
    ["inv-1001", { id: "inv-1001", owner: "demo-client", amount: 120, currency: "EUR", description: "Hosting" }],
    ["inv-1002", { id: "inv-1002", owner: "demo-client", amount: 75.5, currency: "EUR", description: "Support" }],
    ["inv-2001", { id: "inv-2001", owner: "partner-client", amount: 990, currency: "USD", description: "Licence" }],
  ]);
  const app = Fastify({ logger: false });

  async function identify(request: FastifyRequest): Promise<{ sub: string; scopes: Set<string> } | undefined> {
    const header = request.headers.authorization;
    if (header?.startsWith("Bearer ") !== true) return undefined;
    try {
      const { payload } = await jwtVerify(header.slice(7), jwks, {
        issuer: options.issuer,
        algorithms: ["RS256", "PS256", "ES256", "EdDSA"],
      });
      if (typeof payload.sub !== "string") return undefined;
      return { sub: payload.sub, scopes: scopesOf(payload) };
    } catch {
      return undefined;
    }
  }

  app.addHook("onRequest", async (request, reply) => {
    const identity = await identify(request);
    if (identity === undefined) {
      return reply.code(401).type("application/problem+json").send(problem(401, "Unauthorized", "internal JWT missing or invalid"));
    }
    request.identity = identity;
    return undefined;
  });

  app.get("/invoices", (request) => {
    const { sub } = request.identity;
    return { owner: sub, invoices: [...invoices.values()].filter((i) => i.owner === sub) };
  });

  app.get<{ Params: { id: string } }>("/invoices/:id", async (request, reply) => {
    const invoice = invoices.get(request.params.id);
    if (invoice === undefined) return reply.code(404).send(problem(404, "Not Found", "no such invoice"));
    if (invoice.owner !== request.identity.sub) {
      return reply.code(403).type("application/problem+json").send(problem(403, "Forbidden", "this invoice belongs to another customer"));
    }
    return invoice;
  });

  app.post<{ Body: { amount?: unknown; currency?: unknown; description?: unknown } }>("/invoices", async (request, reply) => {
    if (!request.identity.scopes.has("write_invoice")) {
      return reply.code(403).type("application/problem+json").send(problem(403, "Forbidden", "write_invoice scope required"));
    }
    const { amount, currency, description } = request.body;
    if (typeof amount !== "number" || !Number.isFinite(amount) || amount <= 0 || typeof currency !== "string") {
      return reply.code(400).send(problem(400, "Bad Request", "amount (positive number) and currency are required"));
    }
    const invoice: Invoice = {
      id: `inv-${randomUUID().slice(0, 8)}`,
      owner: request.identity.sub,
      amount,
      currency,
      description: typeof description === "string" ? description : "",
    };
    invoices.set(invoice.id, invoice);
    return reply.code(201).send(invoice);
  });

  return app;
}

declare module "fastify" {
  interface FastifyRequest {
    identity: { sub: string; scopes: Set<string> };
  }
}
