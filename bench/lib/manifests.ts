// Manifests for the benchmark gateways: one AuthServer that caches (300 s) and one that never does
// (maxTtlSeconds 0 and negativeTtlSeconds 0: the token cache stores nothing with a lifetime ≤ 0), routes for
// each variant over one hello upstream, and a public route.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Resource indicator that makes the demo AS issue a JWT access token (see src/demo/as/clients.ts). */
export const JWT_AUDIENCE = "urn:phantomgate:jwt-api";

export interface BenchManifestOptions {
  readonly issuer: string;
  readonly upstream: string;
  /** maxTtlSeconds of the caching AuthServer (default 300). */
  readonly cacheTtlSeconds?: number;
}

function authServer(name: string, issuer: string, maxTtlSeconds: number, negativeTtlSeconds: number): string {
  return `apiVersion: phantomgate.dev/v1alpha1
kind: AuthServer
metadata:
  name: ${name}
spec:
  issuer: ${issuer}
  discovery: true
  clientAuthentication:
    method: client_secret_basic
    clientId: gateway
    clientSecret:
      value: gateway-secret
  introspection:
    responseType: jwt
  cache:
    maxTtlSeconds: ${maxTtlSeconds}
    negativeTtlSeconds: ${negativeTtlSeconds}
  timeouts:
    connectMs: 1000
    responseMs: 5000
`;
}

const scopePolicy = `apiVersion: phantomgate.dev/v1alpha1
kind: ScopePolicy
metadata:
  name: billing
spec:
  domain: billing
  scopes:
    - name: read_invoice
    - name: write_invoice
      implies: [read_invoice]
`;

function routes(upstream: string): string {
  const backend = `      backendRefs:
        - url: ${upstream}`;
  const phantom = (path: string, authServerName: string): string => `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata:
  name: bench${path.replaceAll("/", "-")}
spec:
  authServerRef:
    name: ${authServerName}
  scopePolicyRefs:
    - name: billing
  rules:
    - matches:
        - path: { type: PathPrefix, value: ${path} }
      authentication:
        mode: phantom
      requiredScopes:
        allOf: [read_invoice]
${backend}
`;
  return [
    phantom("/hit", "bench-as"),
    phantom("/miss", "bench-as-nocache"),
    `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata:
  name: bench-jwt
spec:
  authServerRef:
    name: bench-as
  scopePolicyRefs:
    - name: billing
  rules:
    - matches:
        - path: { type: PathPrefix, value: /jwt }
      authentication:
        mode: jwt
        audience: ${JWT_AUDIENCE}
      requiredScopes:
        allOf: [read_invoice]
${backend}
    - matches:
        - path: { type: PathPrefix, value: /public }
      authentication:
        mode: none
${backend}
`,
  ].join("---\n");
}

/** Writes the manifests to a fresh directory under `parent` (default: the system temp directory) and returns it. */
export function writeBenchConfig(options: BenchManifestOptions, parent: string = tmpdir()): string {
  const dir = mkdtempSync(join(parent, "phantomgate-bench-config-"));
  writeFileSync(
    join(dir, "auth-servers.yaml"),
    [
      authServer("bench-as", options.issuer, options.cacheTtlSeconds ?? 300, 5),
      authServer("bench-as-nocache", options.issuer, 0, 0),
    ].join("---\n"),
  );
  writeFileSync(join(dir, "scope-policies.yaml"), scopePolicy);
  writeFileSync(join(dir, "routes.yaml"), routes(options.upstream));
  return dir;
}
