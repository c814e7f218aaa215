// Manifests for integration tests: the demo's policies and AuthServer, routes pointed at test upstreams.
export interface TestManifestOptions {
  readonly issuer: string;
  readonly echoOrigin: string;
  readonly introspectionResponse?: "json" | "jwt" | "token-introspection+jwt";
  readonly clientId?: string;
  readonly clientMethod?: "client_secret_basic" | "client_secret_post";
  readonly responseTimeoutMs?: number;
  readonly maxTtlSeconds?: number;
  readonly requestTimeoutMs?: number;
  readonly maxBodyBytes?: number;
  /** audience of the phantom rules: needed when the AuthServer answers with facts (the gateway mints). */
  readonly phantomAudience?: string;
}

export function authServerYaml(o: TestManifestOptions, name = "demo-as"): string {
  return `apiVersion: phantomgate.dev/v1alpha1
kind: AuthServer
metadata:
  name: ${name}
spec:
  issuer: ${o.issuer}
  clientAuthentication:
    method: ${o.clientMethod ?? "client_secret_basic"}
    clientId: ${o.clientId ?? "gateway"}
    clientSecret:
      value: gateway-secret
  introspection:
    responseType: ${o.introspectionResponse ?? "jwt"}
  cache:
    maxTtlSeconds: ${o.maxTtlSeconds ?? 300}
    negativeTtlSeconds: 2
  timeouts:
    connectMs: 500
    responseMs: ${o.responseTimeoutMs ?? 1000}
`;
}

export const scopePoliciesYaml = `apiVersion: phantomgate.dev/v1alpha1
kind: ScopePolicy
metadata:
  name: billing
spec:
  domain: billing
  scopes:
    - name: read_invoice
      description: Read invoices
    - name: write_invoice
      description: Create and change invoices
      implies: [read_invoice]
---
apiVersion: phantomgate.dev/v1alpha1
kind: ScopePolicy
metadata:
  name: streaming
spec:
  domain: streaming
  scopes:
    - name: high_video_stream
      implies: [low_video_stream]
    - name: low_video_stream
    - name: video_metadata
`;

/**
 * Routes over one echo upstream, one per token mode, plus public and admin-only paths, and routes that accept only
 * tokens meant for the billing (or payments) audience.
 */
export function routesYaml(o: TestManifestOptions): string {
  const common = `      backendRefs:
        - url: ${o.echoOrigin}
      timeouts:
        requestMs: ${o.requestTimeoutMs ?? 5000}
      limits:
        maxBodyBytes: ${o.maxBodyBytes ?? 104857600}`;
  const phantom =
    o.phantomAudience === undefined
      ? "mode: phantom"
      : `mode: phantom
        audience: ${o.phantomAudience}`;
  return `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata:
  name: echo
spec:
  authServerRef:
    name: demo-as
  scopePolicyRefs:
    - name: billing
  rules:
    - matches:
        - path: { type: PathPrefix, value: /echo }
      authentication:
        ${phantom}
      requiredScopes:
        allOf: [read_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /write }
          methods: [POST, PUT]
      authentication:
        ${phantom}
      requiredScopes:
        allOf: [write_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /public }
      authentication:
        mode: none
${common}
    - matches:
        - path: { type: PathPrefix, value: /admin }
      authentication:
        ${phantom}
      requiredScopes:
        allOf: [write_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /minted }
      authentication:
        mode: mint
        audience: echo-api
      requiredScopes:
        anyOf: [read_invoice, write_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /exchanged }
      authentication:
        mode: exchange
        audience: urn:phantomgate:echo
      requiredScopes:
        allOf: [read_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /billing-api }
      authentication:
        ${phantom}
        acceptedAudiences: [urn:phantomgate:billing, urn:phantomgate:payments]
      requiredScopes:
        allOf: [read_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /billing-minted }
      authentication:
        mode: mint
        audience: echo-api
        acceptedAudiences: [urn:phantomgate:billing]
      requiredScopes:
        allOf: [read_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /billing-exchanged }
      authentication:
        mode: exchange
        audience: urn:phantomgate:echo
        acceptedAudiences: [urn:phantomgate:billing]
      requiredScopes:
        allOf: [read_invoice]
${common}
    - matches:
        - path: { type: PathPrefix, value: /byvalue }
      authentication:
        mode: jwt
        audience: urn:phantomgate:jwt-api
      requiredScopes:
        allOf: [read_invoice]
${common}
`;
}

export function allManifests(o: TestManifestOptions): Record<string, string> {
  return {
    "auth-server.yaml": authServerYaml(o),
    "scope-policies.yaml": scopePoliciesYaml,
    "routes.yaml": routesYaml(o),
  };
}
