// Compiled snapshot objects for token-layer tests that build them directly instead of compiling manifests.
import type { CompiledAuthServer, CompiledRoute } from "../../src/snapshot/snapshot.ts";

/** An AuthServer at `issuer` (discovery on, client_secret_basic, ES256, 5 s skew); `overrides` win. */
export function compiledAuthServer(
  issuer: string,
  overrides: Partial<CompiledAuthServer> = {},
): CompiledAuthServer {
  return {
    id: "demo/as",
    issuer,
    discovery: true,
    endpoints: {},
    client: { id: "gateway", method: "client_secret_basic", secret: "gateway-secret" },
    introspectionResponse: "json",
    allowedAlgorithms: ["ES256"],
    clockSkewSeconds: 5,
    cache: { maxTtlSeconds: 300, negativeTtlSeconds: 30, maxEntries: 10_000 },
    timeouts: { connectMs: 1_000, responseMs: 2_000 },
    jwksCooldownMs: 30_000,
    ...overrides,
  };
}

/** The audience a `jwt` route of these tests expects by default. */
export const JWT_API = "urn:phantomgate:jwt-api";

/** A route under /api on AuthServer `demo/as` in `mode`; `auth` overrides its authentication fields. */
export function compiledRoute(
  mode: CompiledRoute["auth"]["mode"],
  auth: Partial<CompiledRoute["auth"]> = {},
): CompiledRoute {
  return {
    id: `demo/${mode}#0`,
    source: { namespace: "demo", name: mode, rule: 0 },
    hostnames: [],
    path: { type: "PathPrefix", value: "/api" },
    methods: [],
    auth: {
      mode,
      authServer: "demo/as",
      audience: mode === "jwt" ? JWT_API : "urn:invoices",
      upstreamScopes: ["read_invoice", "write_invoice"],
      forwardClaims: [],
      mintTtlSeconds: 60,
      ...auth,
    },
    requiredScopes: { allOf: [], anyOf: [] },
    backends: [{ origin: "http://127.0.0.1:1", weight: 1 }],
    timeouts: { requestMs: 5_000 },
    limits: { maxBodyBytes: 1024 },
  };
}
