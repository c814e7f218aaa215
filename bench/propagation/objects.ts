// The custom resources of the propagation benchmark, as plain objects: one AuthServer (the demo AS run by the
// driver, client secret inline) and one ScopePolicy shared by every route, N generated ApiRoutes (one phantom
// rule each, distinct path per route and per "generation", so a change touches every compiled route), and the
// route the revocation part sends real requests through. The same objects are applied to the API server and fed
// to the in-process `compile()`.
export const GROUP_VERSION = "phantomgate.dev/v1alpha1";

export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace: string };
  readonly spec: Record<string, unknown>;
}

export interface FixtureOptions {
  /** Namespace of every object. */
  readonly namespace: string;
  /** Issuer of the demo AS (discovery finds its endpoints). */
  readonly issuer: string;
  /** Origin every route forwards to. */
  readonly upstream: string;
}

export const AUTH_SERVER = "bench-as";
export const SCOPE_POLICY = "billing";
export const REVOCATION_ROUTE = "bench-revocation";
export const REVOCATION_PATH = "/revocation-probe";

export function authServer(o: FixtureOptions): KubeObject {
  return {
    apiVersion: GROUP_VERSION,
    kind: "AuthServer",
    metadata: { name: AUTH_SERVER, namespace: o.namespace },
    spec: {
      issuer: o.issuer,
      discovery: true,
      clientAuthentication: {
        method: "client_secret_basic",
        clientId: "gateway",
        clientSecret: { value: "gateway-secret" },
      },
      introspection: { responseType: "jwt" },
      cache: { maxTtlSeconds: 300, negativeTtlSeconds: 5 },
      timeouts: { connectMs: 1000, responseMs: 5000 },
    },
  };
}

export function scopePolicy(o: FixtureOptions): KubeObject {
  return {
    apiVersion: GROUP_VERSION,
    kind: "ScopePolicy",
    metadata: { name: SCOPE_POLICY, namespace: o.namespace },
    spec: {
      domain: "billing",
      scopes: [{ name: "read_invoice" }, { name: "write_invoice", implies: ["read_invoice"] }],
    },
  };
}

function phantomRoute(o: FixtureOptions, name: string, path: string): KubeObject {
  return {
    apiVersion: GROUP_VERSION,
    kind: "ApiRoute",
    metadata: { name, namespace: o.namespace },
    spec: {
      authServerRef: { name: AUTH_SERVER },
      scopePolicyRefs: [{ name: SCOPE_POLICY }],
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: path } }],
          authentication: { mode: "phantom" },
          requiredScopes: { allOf: ["read_invoice"] },
          backendRefs: [{ url: o.upstream }],
        },
      ],
    },
  };
}

export function revocationRoute(o: FixtureOptions): KubeObject {
  return phantomRoute(o, REVOCATION_ROUTE, REVOCATION_PATH);
}

/** Name of generated route `index` (zero-padded so names sort like numbers). */
export const routeName = (index: number): string => `bench-route-${String(index).padStart(5, "0")}`;

/** The path generated route `index` serves in `generation`: every generation moves every route. */
export const routePath = (index: number, generation: number): string => `/g${generation}/svc-${index}`;

/** Generated ApiRoutes `from` ≤ index < `to`, in `generation`. */
export function generatedRoutes(
  o: FixtureOptions,
  from: number,
  to: number,
  generation: number,
): KubeObject[] {
  const routes: KubeObject[] = [];
  for (let index = from; index < to; index += 1) {
    routes.push(phantomRoute(o, routeName(index), routePath(index, generation)));
  }
  return routes;
}

/** The objects every run starts with: AuthServer, ScopePolicy and the revocation route. */
export function baseObjects(o: FixtureOptions): KubeObject[] {
  return [authServer(o), scopePolicy(o), revocationRoute(o)];
}
