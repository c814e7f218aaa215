// The generated CRDs (crds/*.yaml) on a real etcd + kube-apiserver: they install and become Established, the
// demo manifests apply, the API server itself refuses invalid objects with the CEL messages (and compile
// refuses the same objects with the same words), fills in the zod defaults, and prints the columns, short names
// and category. Objects at the size limits of the schemas stay within the CEL runtime cost budget.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compile/compile.ts";
import { apiRouteSchema } from "../../src/resources/api-route.ts";
import { authServerSchema } from "../../src/resources/auth-server.ts";
import { apiVersion } from "../../src/resources/common.ts";
import { repoRoot, startTestCluster, type CommandResult, type TestCluster } from "./harness/cluster.ts";

// The first run may build the Go binaries (tens of minutes on 2 cores) when globalSetup did not.
const startupTimeoutMs = 60 * 60_000;
const crdNames = [
  "apiroutes.phantomgate.dev",
  "authservers.phantomgate.dev",
  "scopepolicies.phantomgate.dev",
];
/** Invalid objects are refused here, so nothing from one case can get in the way of another. */
const namespace = "crd-tests";

let current: TestCluster | undefined;
let install: CommandResult | undefined;
const cluster = (): TestCluster => {
  if (current === undefined) throw new Error("cluster not started");
  return current;
};

beforeAll(async () => {
  current = await startTestCluster();
  install = await current.kubectl(["apply", "-f", join(repoRoot, "crds")]);
  await current.kubectl([
    "wait",
    "--for=condition=Established",
    "--timeout=60s",
    ...crdNames.map((n) => `crd/${n}`),
  ]);
  await current.kubectl(["create", "namespace", namespace]);
}, startupTimeoutMs);

afterAll(async () => {
  await current?.stop();
}, 60_000);

type Manifest = Record<string, unknown>;

/** `kubectl apply` of one object, expected to be refused: returns kubectl's stderr. */
async function applyRefused(object: Manifest): Promise<string> {
  const c = cluster();
  const result = await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(object), allowFailure: true });
  expect(result.exitCode, `kubectl apply unexpectedly succeeded: ${result.stdout}`).not.toBe(0);
  const { kind, metadata } = object as { kind: string; metadata: { name: string; namespace: string } };
  const lookup = await c.kubectl(["get", kind, metadata.name, "-n", metadata.namespace], {
    allowFailure: true,
  });
  expect(lookup.stderr).toMatch(/NotFound/);
  return result.stderr;
}

/** The messages compile gives one object, and whether it called the object Invalid. */
function compileVerdict(object: Manifest): { invalid: boolean; messages: string[] } {
  const [result] = compile({ objects: [{ object }] }).perObjectResults;
  if (result === undefined) throw new Error("compile returned no result");
  return { invalid: result.reason === "Invalid", messages: result.messages };
}

const meta = (name: string) => ({ name, namespace });
const apiRoute = (spec: Manifest): Manifest => ({
  apiVersion,
  kind: "ApiRoute",
  metadata: meta("bad-route"),
  spec,
});
const scopePolicy = (scopes: unknown[]): Manifest => ({
  apiVersion,
  kind: "ScopePolicy",
  metadata: meta("bad-policy"),
  spec: { domain: "billing", scopes },
});
const authServer = (spec: Manifest): Manifest => ({
  apiVersion,
  kind: "AuthServer",
  metadata: meta("bad-as"),
  spec: {
    issuer: "https://as.example",
    clientAuthentication: { clientId: "gw", clientSecret: { value: "s" } },
    ...spec,
  },
});
/** A valid rule, changed by `overrides`. */
const rule = (overrides: Manifest = {}): Manifest => ({
  matches: [{ path: { value: "/x" } }],
  authentication: { mode: "phantom" },
  backendRefs: [{ url: "http://backend:8080" }],
  ...overrides,
});
const routeWithRule = (overrides: Manifest): Manifest =>
  apiRoute({ authServerRef: { name: "demo" }, rules: [rule(overrides)] });
const routeWithPath = (value: string): Manifest => routeWithRule({ matches: [{ path: { value } }] });
const routeWithBackend = (backend: Manifest): Manifest => routeWithRule({ backendRefs: [backend] });

interface RejectionCase {
  readonly name: string;
  readonly object: Manifest;
  /** The line of the API server's answer (after `* ` or `is invalid: `). */
  readonly server: string;
  /** The message compile gives for the same object. */
  readonly compile: string;
}

// Each case breaks one single-object rule of src/resources (a `.superRefine`) and nothing else: the API server
// skips CEL rules when the schema already failed, so a schema error would hide the rule under test.
const celCases: readonly RejectionCase[] = [
  {
    name: "mode mint without an audience",
    object: routeWithRule({ authentication: { mode: "mint" } }),
    server: "spec.rules[0].authentication.audience: Required value: required for mode mint",
    compile: "spec.rules[0].authentication.audience: required for mode mint",
  },
  {
    name: "a public rule (mode none) with an audience",
    object: routeWithRule({ authentication: { mode: "none", audience: "api" } }),
    server:
      "spec.rules[0].authentication.audience: Forbidden: not used by mode none (only exchange, mint, jwt and phantom)",
    compile:
      "spec.rules[0].authentication.audience: not used by mode none (only exchange, mint, jwt and phantom)",
  },
  {
    name: "a public rule (mode none) requiring scopes",
    object: apiRoute({
      rules: [rule({ authentication: { mode: "none" }, requiredScopes: { allOf: ["read"] } })],
    }),
    server: "spec.rules[0].requiredScopes: Forbidden: a public route (mode none) cannot require scopes",
    compile: "spec.rules[0].requiredScopes: a public route (mode none) cannot require scopes",
  },
  {
    name: "a public rule (mode none) naming an AuthServer",
    object: apiRoute({
      rules: [rule({ authentication: { mode: "none", authServerRef: { name: "demo" } } })],
    }),
    server: "spec.rules[0].authentication.authServerRef: Forbidden: not used by mode none",
    compile: "spec.rules[0].authentication.authServerRef: not used by mode none",
  },
  {
    name: "a rule with no AuthServer, neither its own nor the route's",
    object: apiRoute({
      rules: [rule({ authentication: { mode: "none" } }), rule({ matches: [{ path: { value: "/y" } }] })],
    }),
    server:
      "spec: Invalid value: rules[1].authentication.authServerRef: required for mode phantom (or set spec.authServerRef)",
    compile:
      "spec.rules[1].authentication.authServerRef: required for mode phantom (or set spec.authServerRef)",
  },
  {
    name: "acceptedAudiences on a jwt rule",
    object: routeWithRule({ authentication: { mode: "jwt", audience: "api", acceptedAudiences: ["api"] } }),
    server:
      "spec.rules[0].authentication.acceptedAudiences: Forbidden: not used by mode jwt, which accepts the audience in `audience`",
    compile:
      "spec.rules[0].authentication.acceptedAudiences: not used by mode jwt, which accepts the audience in `audience`",
  },
  {
    name: "acceptedAudiences on a public rule (mode none)",
    object: apiRoute({ rules: [rule({ authentication: { mode: "none", acceptedAudiences: ["api"] } })] }),
    server:
      "spec.rules[0].authentication.acceptedAudiences: Forbidden: not used by mode none (only phantom, exchange and mint)",
    compile:
      "spec.rules[0].authentication.acceptedAudiences: not used by mode none (only phantom, exchange and mint)",
  },
  {
    name: "forwardClaims outside mode mint",
    object: routeWithRule({ authentication: { mode: "exchange", audience: "api", forwardClaims: ["sub"] } }),
    server: "spec.rules[0].authentication.forwardClaims: Forbidden: only used by mode mint, not exchange",
    compile: "spec.rules[0].authentication.forwardClaims: only used by mode mint, not exchange",
  },
  {
    name: "forwarding a claim the gateway sets itself",
    object: routeWithRule({
      authentication: { mode: "mint", audience: "api", forwardClaims: ["sub", "exp"] },
    }),
    server: `spec.rules[0].authentication.forwardClaims[1]: Invalid value: "exp": 'exp' cannot be forwarded: the gateway sets it when minting, or it would undo the narrowing`,
    compile:
      "spec.rules[0].authentication.forwardClaims[1]: 'exp' cannot be forwarded: the gateway sets it when minting, or it would undo the narrowing",
  },
  {
    name: "a backend with both url and name",
    object: routeWithBackend({ url: "http://backend:8080", name: "backend" }),
    server: "spec.rules[0].backendRefs[0]: Invalid value: set exactly one of url or name",
    compile: "spec.rules[0].backendRefs[0]: set exactly one of url or name",
  },
  {
    name: "a Service backend without a port",
    object: routeWithBackend({ name: "backend" }),
    server: "spec.rules[0].backendRefs[0].port: Required value: required with name",
    compile: "spec.rules[0].backendRefs[0].port: required with name",
  },
  {
    name: "a URL backend with a port field",
    object: routeWithBackend({ url: "http://backend", port: 8080 }),
    server: "spec.rules[0].backendRefs[0].port: Forbidden: only used with name, not with url",
    compile: "spec.rules[0].backendRefs[0].port: only used with name, not with url",
  },
  {
    name: "a backend URL with a path",
    object: routeWithBackend({ url: "http://backend:8080/api" }),
    server: `spec.rules[0].backendRefs[0].url: Invalid value: "http://backend:8080/api": must be an origin only (scheme, host, optional port): no path, query, fragment or userinfo`,
    compile:
      "spec.rules[0].backendRefs[0].url: must be an origin only (scheme, host, optional port): no path, query, fragment or userinfo",
  },
  {
    name: "a backend URL that is not http(s)",
    object: routeWithBackend({ url: "ftp://backend" }),
    server: `spec.rules[0].backendRefs[0].url: Invalid value: "ftp://backend": must be an http(s) URL`,
    compile: "spec.rules[0].backendRefs[0].url: must be an http(s) URL",
  },
  {
    name: "a path with a dot segment",
    object: routeWithPath("/public/../admin"),
    server: `spec.rules[0].matches[0].path.value: Invalid value: "/public/../admin": must not contain '.' or '..' segments`,
    compile: "spec.rules[0].matches[0].path.value: must not contain '.' or '..' segments",
  },
  {
    name: "a percent-encoded path",
    object: routeWithPath("/a%2Fb"),
    server: `spec.rules[0].matches[0].path.value: Invalid value: "/a%2Fb": must not contain percent-encodings ('%'); write the decoded path`,
    compile:
      "spec.rules[0].matches[0].path.value: must not contain percent-encodings ('%'); write the decoded path",
  },
  {
    name: "a path with a path parameter",
    object: routeWithPath("/app;jsessionid=1"),
    server: `spec.rules[0].matches[0].path.value: Invalid value: "/app;jsessionid=1": must not contain ';': requests with path parameters are refused, so it could never match`,
    compile:
      "spec.rules[0].matches[0].path.value: must not contain ';': requests with path parameters are refused, so it could never match",
  },
  {
    name: "a wildcard path",
    object: routeWithPath("/api/*"),
    server: `spec.rules[0].matches[0].path.value: Invalid value: "/api/*": must not contain '*': paths are literal, use type PathPrefix to match everything below`,
    compile:
      "spec.rules[0].matches[0].path.value: must not contain '*': paths are literal, use type PathPrefix to match everything below",
  },
  {
    name: "a path with a query",
    object: routeWithPath("/search?q=1"),
    server: `spec.rules[0].matches[0].path.value: Invalid value: "/search?q=1": must not contain a query ('?') or fragment ('#')`,
    compile: "spec.rules[0].matches[0].path.value: must not contain a query ('?') or fragment ('#')",
  },
  {
    name: "a path with a Unicode space",
    object: routeWithPath("/a\u2003b"),
    // The server escapes the character in its answer.
    server: `spec.rules[0].matches[0].path.value: Invalid value: "/a\\u2003b": must not contain whitespace or control characters`,
    compile: "spec.rules[0].matches[0].path.value: must not contain whitespace or control characters",
  },
  {
    name: "an IP address as hostname",
    object: apiRoute({ hostnames: ["10.0.0.1"], authServerRef: { name: "demo" }, rules: [rule()] }),
    server: `spec.hostnames[0]: Invalid value: "10.0.0.1": must be a DNS name, not an IP address`,
    compile: "spec.hostnames[0]: must be a DNS name, not an IP address",
  },
  {
    name: "a hostname label longer than 63 characters",
    object: apiRoute({
      hostnames: [`${"a".repeat(64)}.example`],
      authServerRef: { name: "demo" },
      rules: [rule()],
    }),
    server: `spec.hostnames[0]: Invalid value: "${"a".repeat(64)}.example": each DNS label must be at most 63 characters`,
    compile: "spec.hostnames[0]: each DNS label must be at most 63 characters",
  },
  {
    name: "a scope implying a scope the policy does not define",
    object: scopePolicy([{ name: "read" }, { name: "write", implies: ["read", "admin"] }]),
    server: "spec: Invalid value: scopes[1].implies[1]: implied scope 'admin' is not defined in this policy",
    compile: "spec.scopes[1].implies[1]: implied scope 'admin' is not defined in this policy",
  },
  {
    name: "a client secret given both inline and from a Secret",
    object: authServer({
      clientAuthentication: {
        clientId: "gw",
        clientSecret: { value: "s", secretRef: { name: "gw", key: "secret" } },
      },
    }),
    server: "spec.clientAuthentication.clientSecret: Invalid value: set exactly one of value or secretRef",
    compile: "spec.clientAuthentication.clientSecret: set exactly one of value or secretRef",
  },
  {
    name: "a client secret given neither way",
    object: authServer({ clientAuthentication: { clientId: "gw", clientSecret: {} } }),
    server: "spec.clientAuthentication.clientSecret: Invalid value: set exactly one of value or secretRef",
    compile: "spec.clientAuthentication.clientSecret: set exactly one of value or secretRef",
  },
  {
    name: "discovery off without an introspection endpoint",
    object: authServer({ discovery: false, endpoints: { jwks: "https://as.example/jwks" } }),
    server: "spec.endpoints.introspection: Required value: required when discovery is false",
    compile: "spec.endpoints.introspection: required when discovery is false",
  },
  {
    name: "discovery off without a JWKS endpoint",
    object: authServer({ discovery: false, endpoints: { introspection: "https://as.example/introspect" } }),
    server: "spec.endpoints.jwks: Required value: required when discovery is false",
    compile: "spec.endpoints.jwks: required when discovery is false",
  },
  {
    name: "discovery on with an issuer that is no URL",
    object: authServer({ issuer: "demo" }),
    server:
      "spec.issuer: Invalid value: must be an http(s) URL when discovery is true (metadata is fetched below it)",
    compile: "spec.issuer: must be an http(s) URL when discovery is true (metadata is fetched below it)",
  },
  {
    name: "a token endpoint that is not http(s)",
    object: authServer({ endpoints: { token: "ftp://as.example/token" } }),
    server: `spec.endpoints.token: Invalid value: "ftp://as.example/token": must be an http(s) URL`,
    compile: "spec.endpoints.token: must be an http(s) URL",
  },
];

// Rules the structural schema itself enforces (types, enums, patterns, bounds, list keys, unknown fields).
const schemaCases: readonly RejectionCase[] = [
  {
    name: "an unknown token mode",
    object: routeWithRule({ authentication: { mode: "magic" } }),
    server: `spec.rules[0].authentication.mode: Unsupported value: "magic": supported values: "phantom", "exchange", "mint", "jwt", "none"`,
    compile: "spec.rules[0].authentication.mode: ",
  },
  {
    name: "an unknown HTTP method",
    object: routeWithRule({ matches: [{ path: { value: "/x" }, methods: ["FETCH"] }] }),
    server: `spec.rules[0].matches[0].methods[0]: Unsupported value: "FETCH"`,
    compile: "spec.rules[0].matches[0].methods[0]: ",
  },
  {
    name: "a path not starting with '/'",
    object: routeWithPath("api/v1"),
    server: `spec.rules[0].matches[0].path.value: Invalid value: "api/v1": spec.rules[0].matches[0].path.value in body should match '^\\/.*'`,
    compile: "spec.rules[0].matches[0].path.value: must start with '/'",
  },
  {
    name: "a route without rules",
    object: apiRoute({ authServerRef: { name: "demo" }, rules: [] }),
    server: "spec.rules: Invalid value: 0: spec.rules in body should have at least 1 items",
    compile: "spec.rules: ",
  },
  {
    name: "a backend weight of 0",
    object: routeWithBackend({ url: "http://backend", weight: 0 }),
    server:
      "spec.rules[0].backendRefs[0].weight: Invalid value: 0: spec.rules[0].backendRefs[0].weight in body should be greater than or equal to 1",
    compile: "spec.rules[0].backendRefs[0].weight: ",
  },
  {
    name: "a duplicate scope name",
    object: scopePolicy([{ name: "read" }, { name: "write" }, { name: "read" }]),
    server: `spec.scopes[2]: Duplicate value: {"name":"read"}`,
    compile: "spec.scopes[2].name: duplicate scope 'read' (already defined at scopes[0])",
  },
  {
    name: "a duplicate accepted audience",
    object: routeWithRule({ authentication: { mode: "phantom", acceptedAudiences: ["a", "b", "a"] } }),
    server: `spec.rules[0].authentication.acceptedAudiences[2]: Duplicate value: "a"`,
    compile: "spec.rules[0].authentication.acceptedAudiences[2]: duplicate audience 'a'",
  },
  {
    name: "an unknown field (kubectl's strict field validation)",
    object: routeWithRule({ timeout: "5s" }),
    server: `unknown field "spec.rules[0].timeout"`,
    compile: "spec.rules[0].timeout: unknown field",
  },
];

describe("phantomgate CRDs on a real API server", () => {
  it("install with kubectl apply -f crds/ and become Established", async () => {
    expect(install?.stdout.trim().split("\n").sort()).toEqual(
      crdNames.map((name) => `customresourcedefinition.apiextensions.k8s.io/${name} created`).sort(),
    );
    expect(install?.stderr, "no warnings (e.g. unrecognized formats)").toBe("");
    const { stdout } = await cluster().kubectl(["get", "crd", ...crdNames, "-o", "json"]);
    const list = JSON.parse(stdout) as {
      items: { status: { conditions: { type: string; status: string }[] } }[];
    };
    for (const crd of list.items) {
      const condition = (type: string) => crd.status.conditions.find((c) => c.type === type)?.status;
      expect(condition("NamesAccepted")).toBe("True");
      expect(condition("Established")).toBe("True");
      expect(condition("NonStructuralSchema")).toBeUndefined();
    }
  });

  it("accept the demo manifests in examples/, Secrets included", async () => {
    const { stdout } = await cluster().kubectl(["apply", "-f", join(repoRoot, "examples")]);
    expect(stdout).toContain("secret/gateway-client");
    expect(stdout).toContain("authserver.phantomgate.dev/demo");
    expect(stdout).toContain("scopepolicy.phantomgate.dev/billing");
    for (const name of ["echo", "invoices", "video"])
      expect(stdout).toContain(`apiroute.phantomgate.dev/${name}`);
  });

  describe.each([
    ["CEL rule", celCases],
    ["schema rule", schemaCases],
  ] as const)("refuse through kubectl apply what breaks a %s", (_kind, cases) => {
    it.each(cases.map((c) => [c.name, c] as const))("%s", async (_name, testCase) => {
      const stderr = await applyRefused(testCase.object);
      expect(stderr).toMatch(/^(The \w+ "[^"]+" is invalid: |Error from server \(BadRequest\))/);
      expect(stderr).toContain(testCase.server);
      // The same words from compile, so file mode, `phantomgate check` and the cluster agree.
      const verdict = compileVerdict(testCase.object);
      expect(verdict.invalid).toBe(true);
      expect(verdict.messages.some((message) => message.startsWith(testCase.compile))).toBe(true);
    });
  });

  it("accept what compile accepts near those rules", async () => {
    const objects: Manifest[] = [
      apiRoute({
        hostnames: ["*.example.com", "API.Example.COM"],
        authServerRef: { name: "demo" },
        rules: [
          rule({ matches: [{ path: { value: "/.well-known/jwks.json" } }, { path: { value: "/a/.../b" } }] }),
          rule({
            matches: [{ path: { value: "/svc", type: "Exact" }, methods: ["GET"] }],
            backendRefs: [
              { name: "svc", namespace: "other", port: 80, weight: 3 },
              { url: "HTTPS://Backend.example:8443/" },
            ],
          }),
          rule({
            authentication: { mode: "none" },
            requiredScopes: {},
            matches: [{ path: { value: "/public" } }],
          }),
          rule({
            authentication: {
              mode: "mint",
              audience: "api",
              forwardClaims: ["sub", "tenant"],
              mintTtlSeconds: 30,
            },
            matches: [{ path: { value: "/mint" } }],
          }),
          rule({ authentication: { mode: "jwt", audience: "api" }, matches: [{ path: { value: "/jwt" } }] }),
          rule({
            authentication: {
              mode: "phantom",
              acceptedAudiences: ["urn:api:billing", "https://payments.example/"],
            },
            matches: [{ path: { value: "/billing" } }],
          }),
        ],
      }),
      authServer({
        issuer: "not-a-url-without-discovery",
        discovery: false,
        endpoints: { introspection: "https://as.example/i", jwks: "https://as.example/jwks" },
      }),
      scopePolicy([
        { name: "read" },
        { name: "write", implies: ["read"] },
        { name: "admin", implies: ["write", "read"] },
      ]),
    ];
    for (const object of objects) {
      expect(compileVerdict(object).invalid).toBe(false);
      const result = await cluster().kubectl(["apply", "--dry-run=server", "-f", "-"], {
        input: JSON.stringify(object),
        allowFailure: true,
      });
      expect(result.stderr).toBe("");
      expect(result.exitCode).toBe(0);
    }
  });

  it("fill in the same defaults as the zod schemas", async () => {
    const c = cluster();
    const route = apiRoute({
      authServerRef: { name: "demo" },
      rules: [
        {
          matches: [{ path: { value: "/d" } }],
          authentication: { mode: "phantom" },
          backendRefs: [{ url: "http://b" }],
        },
      ],
    });
    const server = authServer({});
    for (const [kind, object, schema] of [
      ["apiroute", { ...route, metadata: meta("defaults") }, apiRouteSchema],
      ["authserver", { ...server, metadata: meta("defaults") }, authServerSchema],
    ] as const) {
      await c.kubectl(["apply", "-f", "-"], { input: JSON.stringify(object) });
      const { stdout } = await c.kubectl(["get", kind, "defaults", "-n", namespace, "-o", "json"]);
      const stored = JSON.parse(stdout) as { spec: unknown };
      expect(stored.spec).toEqual(schema.parse(object).spec);
    }
    // Spot checks, in case both sides lost the defaults together.
    const { stdout } = await c.kubectl([
      "get",
      "apiroute",
      "defaults",
      "-n",
      namespace,
      "-o",
      "jsonpath={.spec.rules[0]}",
    ]);
    expect(JSON.parse(stdout)).toMatchObject({
      matches: [{ path: { type: "PathPrefix", value: "/d" } }],
      backendRefs: [{ url: "http://b", weight: 1 }],
      timeouts: { requestMs: 30_000 },
      limits: { maxBodyBytes: 10 * 1024 * 1024 },
    });
  });

  it("print hosts, paths, auth mode, scopes, Programmed and Age, and keep status in its subresource", async () => {
    const c = cluster();
    await c.kubectl(["apply", "-f", join(repoRoot, "examples")]);
    const status = {
      status: {
        observedGeneration: 1,
        conditions: ["Accepted", "Programmed"].map((type) => ({
          type,
          status: "True",
          reason: type,
          message: "",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        })),
      },
    };
    await c.kubectl([
      "patch",
      "apiroute",
      "echo",
      "-n",
      "default",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);
    // A status sent with the main resource is ignored (status subresource).
    await c.kubectl([
      "patch",
      "apiroute",
      "video",
      "-n",
      "default",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);

    const table = (await c.kubectl(["get", "apiroutes", "-n", "default"])).stdout.trim().split("\n");
    expect(table[0]?.split(/\s+/)).toEqual(["NAME", "HOSTS", "PATHS", "AUTH", "SCOPES", "PROGRAMMED", "AGE"]);
    const row = (name: string) => table.find((line) => line.startsWith(`${name} `))?.split(/\s+/);
    expect(row("echo")?.slice(0, 6)).toEqual(["echo", "[]", "/echo", "phantom", '["read_invoice"]', "True"]);
    expect(row("video")?.slice(0, 5)).toEqual(["video", "[]", "/video", "mint", '["low_video_stream"]']);
    expect(row("video")?.[5]).toMatch(/^\d+s$/); // no Programmed: the next column is the age

    const wide = (await c.kubectl(["get", "apiroute", "echo", "-n", "default", "-o", "wide"])).stdout;
    expect(wide.split("\n")[0]?.split(/\s+/)).toContain("ACCEPTED");

    const policies = (await c.kubectl(["get", "scopepolicies", "-n", "default"])).stdout;
    expect(policies.split("\n")[0]?.split(/\s+/)).toEqual(["NAME", "DOMAIN", "SCOPES", "ACCEPTED", "AGE"]);
    expect(policies).toMatch(/^billing\s+billing\s+read_invoice\s/m);
    const servers = (await c.kubectl(["get", "authservers", "-n", "default"])).stdout;
    expect(servers.split("\n")[0]?.split(/\s+/)).toEqual(["NAME", "ISSUER", "ACCEPTED", "AGE"]);
    expect(servers).toMatch(/^demo\s+http:\/\/127\.0\.0\.1:9000\s/m);

    // `kubectl explain` describes the status the operator writes.
    const explain = async (path: string) => (await c.kubectl(["explain", path])).stdout.replace(/\s+/g, " "); // it wraps long descriptions
    const explained = await explain("apiroutes.status");
    for (const field of ["observedGeneration", "conditions", "fleet"]) expect(explained).toContain(field);
    expect(explained).toContain("The metadata.generation the operator last wrote this status for.");
    const revision = await explain("scopepolicies.status.fleet.revision");
    expect(revision).toContain("absent before the first compile");
  });

  it("answer to their short names and to the category phantomgate", async () => {
    const c = cluster();
    await c.kubectl(["apply", "-f", join(repoRoot, "examples")]);
    const names = async (resource: string): Promise<string[]> =>
      (await c.kubectl(["get", resource, "-n", "default", "-o", "name"])).stdout.trim().split("\n").sort();
    const all = [
      "apiroute.phantomgate.dev/echo",
      "apiroute.phantomgate.dev/invoices",
      "apiroute.phantomgate.dev/video",
      "authserver.phantomgate.dev/demo",
      "scopepolicy.phantomgate.dev/billing",
      "scopepolicy.phantomgate.dev/streaming",
    ];
    expect(await names("phantomgate")).toEqual(all);
    expect(await names("ar,sp,as")).toEqual(all);
    expect(await names("pgar,pgsp,pgas")).toEqual(all);
  });

  it("stay within the CEL cost budget on the largest objects the schemas allow", async () => {
    const c = cluster();
    // 256 scopes of 128 characters, each implying up to 64 later ones (compile refuses cycles): 14,304 lookups.
    const scopeNames = Array.from({ length: 256 }, (_, i) =>
      `scope-${String(i).padStart(3, "0")}-`.padEnd(128, "x"),
    );
    const bigPolicy = scopePolicy(
      scopeNames.map((name, i) => ({
        name,
        implies: scopeNames.slice(i + 1, i + 65),
      })),
    );
    // 64 rules × 16 matches of 1,000-character paths, 16 backends each, every list at its maximum.
    const bigRoute = apiRoute({
      hostnames: Array.from({ length: 16 }, (_, i) => `h${i}.${"a".repeat(63)}.${"b".repeat(63)}.example`),
      authServerRef: { name: "demo" },
      rules: Array.from({ length: 64 }, (_, r) => ({
        matches: Array.from({ length: 16 }, (_, m) => ({
          path: { value: `/r${r}/m${m}/`.padEnd(1000, "p") },
          methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"],
        })),
        authentication: {
          mode: "mint",
          audience: "a".repeat(253),
          acceptedAudiences: Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(253, "u")),
          forwardClaims: Array.from({ length: 32 }, (_, i) => `c${i}`),
        },
        requiredScopes: { allOf: scopeNames.slice(0, 32), anyOf: scopeNames.slice(32, 64) },
        backendRefs: Array.from({ length: 16 }, (_, b) => ({ url: `http://r${r}-b${b}.example:8080` })),
      })),
    });
    for (const object of [bigPolicy, bigRoute]) {
      expect(compileVerdict(object).invalid).toBe(false);
      // create, not apply: apply would double the size with its last-applied annotation.
      const result = await c.kubectl(["create", "--dry-run=server", "-f", "-"], {
        input: JSON.stringify(object),
        allowFailure: true,
      });
      expect(result.stderr).toBe("");
      expect(result.exitCode).toBe(0);
    }
    // And a rule still fails there, with its message.
    const broken = structuredClone(bigPolicy) as { spec: { scopes: { implies: string[] }[] } };
    broken.spec.scopes[100]!.implies[63] = "nope";
    const refused = await c.kubectl(["create", "--dry-run=server", "-f", "-"], {
      input: JSON.stringify(broken),
      allowFailure: true,
    });
    expect(refused.stderr).toContain(
      "scopes[100].implies[63]: implied scope 'nope' is not defined in this policy",
    );
  });
});
