// The fastify binding of the SDK: verifies the internal JWT of every request into `request.identity`, renders
// SDK errors as problem+json (with RFC 6750 challenges), and offers a preHandler for coarse scope checks.
// Registered without encapsulation (skip-override), so the decoration and error handler reach the app's routes.
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from "fastify";
import { problemResponse, SdkError } from "./errors.ts";
import type { Identity } from "./identity.ts";
import type { ScopeChecker, ScopeRequirement } from "./scopes.ts";
import type { InternalJwtVerifier } from "./verify.ts";

declare module "fastify" {
  interface FastifyRequest {
    /**
     * The caller, from the verified internal JWT; set by the phantomgate SDK plugin before any handler runs. Not
     * set on routes the plugin's `skip` option exempts.
     */
    identity: Identity;
  }
}

/** Options of {@link phantomgateFastify}. */
export interface PhantomgateFastifyOptions {
  readonly verifier: InternalJwtVerifier;
  /** Requests that need no internal JWT (health checks); their `request.identity` is unset. */
  readonly skip?: (request: FastifyRequest) => boolean;
}

// eslint-disable-next-line @typescript-eslint/require-await -- fastify plugins are async functions by contract
async function phantomgatePlugin(app: FastifyInstance, options: PhantomgateFastifyOptions): Promise<void> {
  const { verifier, skip } = options;
  if (!app.hasRequestDecorator("identity")) app.decorateRequest("identity", null, []);

  app.addHook("onRequest", async (request) => {
    if (skip?.(request) === true) return;
    // Node keeps only the first of two Authorization headers in `headers`: the distinct list shows both.
    // (Absent where fastify.inject stands in for a socket.)
    const distinct = (request.raw as { headersDistinct?: Record<string, string[] | undefined> })
      .headersDistinct;
    request.identity = await verifier.verifyAuthorization(
      distinct?.authorization ?? request.headers.authorization,
    );
  });

  app.setErrorHandler((error, request, reply) => {
    // Anything else goes on to fastify's own handler (an error handler that throws hands over to its parent).
    if (!(error instanceof SdkError)) throw error;
    request.log.info({ code: error.code, reason: error.reason }, "request refused");
    const problem = problemResponse(error, { requestId: request.headers["x-request-id"] });
    return reply.code(problem.status).headers(problem.headers).send(problem.body);
  });
}

/**
 * The fastify plugin. Every request must carry a valid internal JWT (`Authorization: Bearer`), else it is answered
 * 401/400/503 with problem+json before any handler runs; handlers read `request.identity`. An {@link SdkError}
 * thrown by a handler or hook (`enforce`, `scopes.require`, an API-to-API call) becomes its problem+json answer;
 * other errors keep fastify's default handling.
 *
 * @example
 * ```ts
 * import Fastify from "fastify";
 * import { createInternalJwtVerifier, enforce, phantomgateFastify, requireScopes } from "phantomgate/sdk";
 *
 * const app = Fastify();
 * await app.register(phantomgateFastify, {
 *   verifier: createInternalJwtVerifier({ issuer, audience: "urn:phantomgate:billing", jwksUri }),
 *   skip: (request) => request.url === "/healthz",
 * });
 * app.get("/invoices/:id", async (request) => {
 *   const invoice = find(request.params.id);
 *   enforce(request.identity, ownsInvoice, invoice); // 403 problem+json with the policy's reason
 *   return invoice;
 * });
 * app.post("/invoices", { preHandler: requireScopes(scopes, "write_invoice") }, create);
 * ```
 */
export const phantomgateFastify: FastifyPluginAsync<PhantomgateFastifyOptions> = Object.assign(
  phantomgatePlugin,
  {
    // What fastify-plugin would set: no encapsulation, a name in errors and the printed plugin tree.
    [Symbol.for("skip-override")]: true,
    [Symbol.for("fastify.display-name")]: "phantomgate-sdk",
    [Symbol.for("plugin-meta")]: { name: "phantomgate-sdk", fastify: "5.x" },
  },
);

/**
 * A `preHandler` that answers 403 `insufficient_scope` (naming the scope) unless the caller's scopes, with the
 * policies' implications, meet `requirement`. The requirement is checked against the policies at once, so a typo
 * fails at start-up, not at request time.
 *
 * @example
 * ```ts
 * app.post("/invoices", { preHandler: requireScopes(scopes, "write_invoice") }, handler);
 * app.get("/reports", { preHandler: requireScopes(scopes, { anyOf: ["read_invoice", "audit_invoice"] }) }, handler);
 * ```
 */
export function requireScopes(
  checker: ScopeChecker,
  requirement: ScopeRequirement,
): (request: FastifyRequest) => Promise<void> {
  checker.validate(requirement);
  return (request) =>
    new Promise<void>((resolve) => {
      // A route the plugin's `skip` lets through has no identity: it cannot hold any scope.
      // (Typed as always there, for the routes the plugin verifies.)
      const identity = request.identity as Identity | null;
      if (identity === null) throw new SdkError("PG_SDK_TOKEN_MISSING", "no identity on this request");
      checker.require(identity, requirement);
      resolve();
    });
}
