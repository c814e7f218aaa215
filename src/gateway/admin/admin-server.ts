// The admin port: liveness, readiness (with configuration problems), Prometheus metrics, the route catalogue
// and the JWKS of the gateway's minting key. Never exposes secrets: the catalogue lists no credentials.
import Fastify, { type FastifyInstance } from "fastify";
import type { Registry } from "prom-client";
import type { CompiledRoute, Snapshot } from "../../snapshot/snapshot.ts";
import type { ConfigProblem } from "../sources/file-source.ts";

export interface AdminView {
  readonly snapshot: () => Snapshot | undefined;
  readonly problems: () => readonly ConfigProblem[];
  readonly draining: () => boolean;
  /** Control-plane mode: the state of the snapshot stream, shown in `/readyz`. */
  readonly controlPlane?: () => object;
  readonly jwks: () => Promise<{ keys: readonly object[] }>;
  readonly registry: Registry;
}

function describeRoute(route: CompiledRoute): Record<string, unknown> {
  return {
    id: route.id,
    hostnames: route.hostnames.length === 0 ? ["*"] : route.hostnames,
    path: route.path,
    methods: route.methods.length === 0 ? ["*"] : route.methods,
    authMode: route.auth.mode,
    authServer: route.auth.authServer,
    audience: route.auth.audience,
    acceptedAudiences: route.auth.acceptedAudiences,
    requiredScopes: {
      allOf: route.requiredScopes.allOf.map((r) => r.scope),
      anyOf: route.requiredScopes.anyOf.map((r) => r.scope),
    },
    upstreams: route.backends.map((b) => b.origin),
  };
}

/** Configuration problems listed one by one per update, in /readyz and in the log; the rest are counted. */
export const MAX_LISTED_PROBLEMS = 100;

export function createAdminServer(view: AdminView): FastifyInstance {
  const app = Fastify({ logger: false });
  // Probes and the catalogue describe this moment: no cache in between may answer for the gateway later.
  app.get("/healthz", (_request, reply) => reply.header("cache-control", "no-store").send({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const snapshot = view.snapshot();
    const ready = snapshot !== undefined && !view.draining();
    const problems = view.problems();
    const body = {
      ready,
      revision: snapshot?.revision ?? null,
      routes: snapshot?.routes.length ?? 0,
      draining: view.draining(),
      // The first ones, and how many there are: a readiness probe must stay small.
      problems: problems.slice(0, MAX_LISTED_PROBLEMS),
      problemCount: problems.length,
      ...(view.controlPlane === undefined ? {} : { controlPlane: view.controlPlane() }),
    };
    return reply
      .code(ready ? 200 : 503)
      .header("cache-control", "no-store")
      .send(body);
  });
  app.get("/metrics", async (_request, reply) => {
    const text = await view.registry.metrics();
    return reply.header("content-type", view.registry.contentType).send(text);
  });
  app.get("/routes", (_request, reply) => {
    const snapshot = view.snapshot();
    return reply
      .header("cache-control", "no-store")
      .send({ revision: snapshot?.revision ?? null, routes: snapshot?.routes.map(describeRoute) ?? [] });
  });
  app.get("/.well-known/jwks.json", async (_request, reply) => {
    return reply.header("cache-control", "public, max-age=60").send(await view.jwks());
  });
  return app;
}
