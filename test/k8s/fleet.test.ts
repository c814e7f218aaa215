// The whole fleet on a REAL etcd + kube-apiserver, every part a real process: two `phantomgate operator`
// replicas under a ServiceAccount bound only to the rules of src/operator/permissions.ts, three
// `phantomgate gateway --control-plane` processes with audience-bound ServiceAccount tokens from the TokenRequest
// API, the demo authorization server and the echo API. Objects go in with kubectl; what the gateways serve is
// checked with real requests and real tokens.
//
// The gateways reach the operators through a stand-in for the operator Service: an HTTP proxy that spreads
// requests over the replicas that are up. Streams are pinned per gateway (so the test knows which replica each
// gateway streams from); every other request — the gateways' ACKs among them — goes round robin, as
// per-connection balancing would send it.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import {
  Agent as HttpAgent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { stringify as toYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import { loadOperatorConfig } from "../../src/operator/config.ts";
import { revocationRelayName } from "../../src/operator/distribute/revocation-relay.ts";
import { microTime } from "../../src/operator/status/events.ts";
import { permissionOptionsOf, renderRbacYaml } from "../../src/operator/permissions.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import {
  controlPlaneGatewaySpec,
  readyz,
  startControlPlaneGateway,
  type ControlPlaneGateway,
} from "../helpers/control-plane-gateway.ts";
import { getToken } from "../helpers/http.ts";
import { spawnOperator } from "../helpers/operator-process.ts";
import { repoRoot, startTestCluster, type TestCluster } from "./harness/cluster.ts";

const startupTimeoutMs = 60 * 60_000;
const testTimeoutMs = 240_000;
const systemNamespace = "fleet-system";
const operatorAccount = "phantomgate-operator";
const gatewayAccount = "phantomgate-gateway";
const revokerAccount = "revocation-hook";
const leaseName = "phantomgate-operator";
const leaseDurationMs = 4_000;
const gatewayNames = ["gw-1", "gw-2", "gw-3"] as const;
const commonArgs = [
  "--pod-namespace",
  systemNamespace,
  "--listen-host",
  "127.0.0.1",
  "--snapshot-port",
  "0",
  "--metrics-port",
  "0",
  "--no-webhook",
  "--lease-name",
  leaseName,
  "--lease-duration-ms",
  String(leaseDurationMs),
  "--lease-renew-interval-ms",
  "1000",
  "--gateway-service-accounts",
  `${systemNamespace}:${gatewayAccount}`,
  "--log-level",
  "debug",
];

let cluster: TestCluster | undefined;
let adminAgent: HttpsAgent | undefined;
let service: ServiceProxy | undefined;
let authServer: DemoAuthServer | undefined;
let echo: { server: Server; port: number } | undefined;
let operatorKubeconfig = "";
let gatewayToken = "";
let revokerToken = "";
const logDir = mkdtempSync(join(tmpdir(), "phantomgate-fleet-test-"));
const operators: OperatorProcess[] = [];
const gateways = new Map<string, ControlPlaneGateway>();
/** Tokens and fingerprints that must never appear in any log. */
const secrets: string[] = [];

const c = (): TestCluster => {
  if (cluster === undefined) throw new Error("cluster not started");
  return cluster;
};
const as = (): DemoAuthServer => {
  if (authServer === undefined) throw new Error("authorization server not started");
  return authServer;
};
const svc = (): ServiceProxy => {
  if (service === undefined) throw new Error("service proxy not started");
  return service;
};
const gw = (name: string): ControlPlaneGateway => {
  const gateway = gateways.get(name);
  if (gateway === undefined) throw new Error(`gateway ${name} not started`);
  return gateway;
};

/** Polls `check` every `intervalMs` until it holds; throws naming `what` (and the last error) after `timeoutMs`. */
async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string | (() => string),
  intervalMs = 250,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(
        `${typeof what === "string" ? what : what()} not reached within ${timeoutMs} ms${detail}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---- the operator Service, as a proxy -------------------------------------------------------------------

const hopByHop = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"]);
const endToEnd = (headers: IncomingHttpHeaders): IncomingHttpHeaders =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => !hopByHop.has(name.toLowerCase())));

interface ProxiedStream {
  readonly backend: string;
  readonly res: ServerResponse;
}

/**
 * Spreads requests over the replicas that are up ("endpoints"). A gateway's stream goes to the replica it is
 * pinned to when that one is up, else to any; everything else round robin. A held gateway's streams are
 * refused (503), as a network partition between it and the operators would.
 */
class ServiceProxy {
  readonly #server: Server;
  readonly #backends = new Map<string, number>();
  readonly #pins = new Map<string, string>();
  readonly #held = new Set<string>();
  readonly #streams = new Map<string, Set<ProxiedStream>>();
  readonly #agent = new HttpAgent({ keepAlive: false });
  #next = 0;
  port = 0;

  constructor() {
    this.#server = createServer((req, res) => this.#handle(req, res));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.port = (this.#server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** An endpoint becomes ready. */
  addBackend(identity: string, port: number): void {
    this.#backends.set(identity, port);
  }

  /**
   * An endpoint is gone; the proxied streams to it end (the replica's sockets died with it anyway). A terminating
   * endpoint (`keepStreams`) only takes no new connections: established ones stay until the replica closes them,
   * as with kube-proxy.
   */
  removeBackend(identity: string, keepStreams = false): void {
    this.#backends.delete(identity);
    if (keepStreams) return;
    for (const streams of this.#streams.values()) {
      for (const stream of streams) if (stream.backend === identity) stream.res.destroy();
    }
  }

  pin(gateway: string, identity: string): void {
    this.#pins.set(gateway, identity);
  }

  /** Ends a gateway's stream; it reconnects (to its pinned replica, unless held). */
  cut(gateway: string): void {
    for (const stream of this.#streams.get(gateway) ?? []) stream.res.destroy();
  }

  hold(gateway: string): void {
    this.#held.add(gateway);
    this.cut(gateway);
  }

  release(gateway: string): void {
    this.#held.delete(gateway);
  }

  /** The replica each gateway streams from now. */
  streaming(): Map<string, string> {
    const result = new Map<string, string>();
    for (const [gateway, streams] of this.#streams) {
      for (const stream of streams) if (!stream.res.destroyed) result.set(gateway, stream.backend);
    }
    return result;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://service.invalid");
    const gateway = url.pathname === "/v1/stream" ? url.searchParams.get("gateway") : null;
    const live = [...this.#backends];
    if (gateway !== null && this.#held.has(gateway)) {
      req.resume();
      res.writeHead(503).end();
      return;
    }
    if (live.length === 0) {
      req.resume();
      res.writeHead(503).end(); // no ready endpoints
      return;
    }
    const pinned =
      gateway === null ? undefined : live.find(([identity]) => identity === this.#pins.get(gateway));
    const target = pinned ?? live[this.#next++ % live.length];
    if (target === undefined) throw new Error("unreachable: no endpoint");
    const [backend, port] = target;
    const upstream = httpRequest(
      {
        host: "127.0.0.1",
        port,
        method: req.method,
        path: req.url,
        headers: endToEnd(req.headers),
        agent: this.#agent,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, endToEnd(answer.headers));
        res.flushHeaders();
        answer.on("data", (chunk: Buffer) => res.write(chunk));
        answer.on("end", () => res.end());
        answer.on("error", () => res.destroy());
        // The replica died mid-stream: the client sees its connection drop too.
        answer.on("close", () => {
          if (!answer.complete) res.destroy();
        });
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(upstream);
    res.on("close", () => upstream.destroy());
    if (gateway !== null) {
      const stream: ProxiedStream = { backend, res };
      const streams = this.#streams.get(gateway) ?? new Set<ProxiedStream>();
      this.#streams.set(gateway, streams);
      streams.add(stream);
      res.on("close", () => streams.delete(stream));
    }
  }

  async close(): Promise<void> {
    for (const streams of this.#streams.values()) for (const stream of streams) stream.res.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

// ---- the API server as the admin sees it ----------------------------------------------------------------

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
}

interface KubeObject {
  metadata: { name: string; generation?: number; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  status?: {
    observedGeneration?: number;
    conditions?: Condition[];
    fleet?: { revision?: string; programmed: number; gateways: number } | null;
  };
}

/** GET as the admin (client certificate); undefined on 404. */
function adminGet(path: string): Promise<KubeObject | undefined> {
  const cl = c();
  adminAgent ??= new HttpsAgent({
    ca: cl.caPem,
    cert: cl.adminCert,
    key: cl.adminKey,
    keepAlive: true,
    maxSockets: 4,
  });
  const agent = adminAgent;
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${cl.server}${path}`, { agent, timeout: 10_000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => {
        if (res.statusCode === 404) resolve(undefined);
        else if (res.statusCode === 200) resolve(JSON.parse(text) as KubeObject);
        else reject(new Error(`GET ${path}: HTTP ${res.statusCode ?? 0}`));
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

const routePath = (name: string) => `/apis/phantomgate.dev/v1alpha1/namespaces/default/apiroutes/${name}`;
const conditionOf = (object: KubeObject | undefined, type: string): Condition | undefined =>
  object?.status?.conditions?.find((condition) => condition.type === type);

/** Waits until the route's status was written for its current generation and `check` holds. */
async function waitForRouteStatus(
  name: string,
  check: (object: KubeObject) => boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<KubeObject> {
  let last: KubeObject | undefined;
  await waitFor(
    async () => {
      last = await adminGet(routePath(name));
      return (
        last !== undefined &&
        last.status?.observedGeneration === last.metadata.generation &&
        conditionOf(last, "Accepted")?.observedGeneration === last.metadata.generation &&
        check(last)
      );
    },
    timeoutMs,
    () => `${what} (last status of ${name}: ${JSON.stringify(last?.status ?? null)})`,
  );
  if (last === undefined) throw new Error("unreachable");
  return last;
}

/** Programmed=True on every one of `gateways` gateways, for the route's current generation. */
const programmedOnAll = (object: KubeObject, gateways = gatewayNames.length): boolean => {
  const programmed = conditionOf(object, "Programmed");
  return (
    programmed?.status === "True" &&
    programmed.observedGeneration === object.metadata.generation &&
    new RegExp(`^revision [0-9a-f]{16} programmed on ${gateways}/${gateways} gateways$`).test(
      programmed.message,
    )
  );
};

async function leaseHolder(): Promise<string | undefined> {
  const lease = await adminGet(
    `/apis/coordination.k8s.io/v1/namespaces/${systemNamespace}/leases/${leaseName}`,
  );
  const holder = (lease?.spec as { holderIdentity?: string } | undefined)?.holderIdentity;
  return holder === "" ? undefined : holder;
}

const kubectlApply = (yaml: string) => c().kubectl(["apply", "-f", "-"], { input: yaml });

function echoRoute(name: string, path: string, scope = "read_invoice"): string {
  return toYaml({
    apiVersion: "phantomgate.dev/v1alpha1",
    kind: "ApiRoute",
    metadata: { name, namespace: "default" },
    spec: {
      scopePolicyRefs: [{ name: "billing" }],
      authServerRef: { name: "demo-as" },
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: path } }],
          authentication: { mode: "phantom" },
          requiredScopes: { allOf: [scope] },
          backendRefs: [{ url: `http://127.0.0.1:${echo?.port ?? 9}` }],
        },
      ],
    },
  });
}

function foundationYaml(): string {
  return [
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "gateway-client", namespace: "default" },
      type: "Opaque",
      stringData: { "client-secret": "gateway-secret" },
    },
    {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "AuthServer",
      metadata: { name: "demo-as", namespace: "default" },
      spec: {
        issuer: as().issuer,
        discovery: true,
        clientAuthentication: {
          method: "client_secret_basic",
          clientId: "gateway",
          clientSecret: { secretRef: { name: "gateway-client", key: "client-secret" } },
        },
        introspection: { responseType: "jwt" },
        cache: { maxTtlSeconds: 300, negativeTtlSeconds: 2 },
      },
    },
    {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "ScopePolicy",
      metadata: { name: "billing", namespace: "default" },
      spec: {
        domain: "billing",
        scopes: [
          { name: "read_invoice", description: "Read invoices" },
          { name: "write_invoice", description: "Create and change invoices", implies: ["read_invoice"] },
        ],
      },
    },
  ]
    .map((object) => toYaml(object))
    .join("---\n");
}

// ---- processes --------------------------------------------------------------------------------------------

interface OperatorProcess {
  readonly identity: string;
  readonly child: ChildProcess;
  readonly snapshotPort: number;
  readonly metricsUrl: string;
  readonly logFile: string;
  kill(): Promise<void>;
  /** SIGTERM: the replica shuts down in order (closes its streams, hands its Lease back). */
  stop(): Promise<void>;
}

async function startOperator(identity: string): Promise<OperatorProcess> {
  const spawned = await spawnOperator({ identity, kubeconfig: operatorKubeconfig, logDir, args: commonArgs });
  const operator: OperatorProcess = {
    identity,
    child: spawned.child,
    logFile: spawned.logFile,
    snapshotPort: spawned.snapshotPort,
    metricsUrl: `http://127.0.0.1:${spawned.metricsPort}`,
    kill: () => spawned.stop("SIGKILL"),
    stop: () => spawned.stop("SIGTERM"),
  };
  operators.push(operator);
  return operator;
}

/** The latest process started under `identity` (a replica restarted under its identity has several). */
function live(identity: string): OperatorProcess {
  const operator = operators.filter((o) => o.identity === identity).at(-1);
  if (operator === undefined) throw new Error(`${identity} not started`);
  return operator;
}

/** Starts a replica and, once ready, makes it an endpoint of the Service. */
async function startReplica(identity: string): Promise<OperatorProcess> {
  const operator = await startOperator(identity);
  await waitFor(async () => (await readiness(operator)).ready, 60_000, `${identity} ready`);
  svc().addBackend(identity, operator.snapshotPort);
  return operator;
}

/** SIGKILL: no chance to hand the Lease back or to say goodbye to the gateways. */
async function killReplica(operator: OperatorProcess): Promise<void> {
  await operator.kill();
  svc().removeBackend(operator.identity);
}

async function readiness(operator: OperatorProcess): Promise<{ ready: boolean; leader: boolean }> {
  return (await (await fetch(`${operator.metricsUrl}/readyz`)).json()) as { ready: boolean; leader: boolean };
}

/** A metric's value summed over its label sets; 0 when absent. */
async function metric(operator: OperatorProcess, name: string): Promise<number> {
  const text = await (await fetch(`${operator.metricsUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const match = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (match?.[1] === name) sum += Number(match[3]);
  }
  return sum;
}

async function startGateway(name: string): Promise<ControlPlaneGateway> {
  const gateway = await startControlPlaneGateway(controlPlaneGatewaySpec(name, svc().url, gatewayToken));
  gateways.set(name, gateway);
  return gateway;
}

async function serviceAccountToken(name: string, audience?: string): Promise<string> {
  const args = ["create", "token", name, "-n", systemNamespace, "--duration", "2h"];
  if (audience !== undefined) args.push("--audience", audience);
  return (await c().kubectl(args)).stdout.trim();
}

/** The HTTP status a gateway answers for GET `path` with `token`. */
async function statusAt(gateway: ControlPlaneGateway, path: string, token: string): Promise<number> {
  const response = await request(`${gateway.url}${path}`, {
    headers: { authorization: `Bearer ${token}` },
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  await response.body.dump();
  return response.statusCode;
}

/** The statuses of all three gateways for one request. */
const statusesAt = (path: string, token: string): Promise<number[]> =>
  Promise.all(gatewayNames.map((name) => statusAt(gw(name), path, token)));

async function allAnswer(path: string, token: string, status: number, what: string, timeoutMs = 30_000) {
  let last: number[] = [];
  await waitFor(
    async () => (last = await statusesAt(path, token)).every((s) => s === status),
    timeoutMs,
    () => `${what} (last: ${last.join(", ")})`,
  );
}

async function newToken(scope = "read_invoice"): Promise<string> {
  const token = await getToken(as().tokenEndpoint, scope);
  secrets.push(token, fingerprintToken(token));
  return token;
}

/** The authorization server revokes `token`; gateways that cached it keep accepting it until told. */
async function revokeAtAuthServer(token: string): Promise<void> {
  const response = await fetch(as().revocationEndpoint, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from("gateway:gateway-secret").toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ token }),
  });
  expect(response.status).toBe(200);
}

/** What the AS's revocation hook does: POST the token to one replica (not through the Service). */
async function revokeAt(
  operator: OperatorProcess,
  token: string,
): Promise<{ status: number; body: unknown }> {
  const response = await request(`http://127.0.0.1:${operator.snapshotPort}/v1/revocations`, {
    method: "POST",
    headers: { authorization: `Bearer ${revokerToken}`, "content-type": "application/json" },
    body: JSON.stringify({ tokens: [token] }),
  });
  return { status: response.statusCode, body: await response.body.json() };
}

// ---- set-up -----------------------------------------------------------------------------------------------

beforeAll(async () => {
  const started = Date.now();
  cluster = await startTestCluster();
  const cl = c();
  await cl.kubectl(["apply", "-f", join(repoRoot, "crds")]);
  await cl.kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
  await cl.kubectl(["create", "namespace", systemNamespace]);
  for (const account of [operatorAccount, gatewayAccount, revokerAccount]) {
    await cl.kubectl(["create", "serviceaccount", account, "-n", systemNamespace]);
  }
  // Exactly the rules permissions.ts lists for these flags, rendered as the chart renders them.
  const config = loadOperatorConfig(["--identity", "x", ...commonArgs], {});
  await kubectlApply(
    renderRbacYaml({
      ...permissionOptionsOf(config),
      name: "phantomgate-operator",
      serviceAccount: { namespace: systemNamespace, name: operatorAccount },
      namespaces: [],
    }),
  );
  // docs/install.md, "Revocation": the AS's hook may create revocations.phantomgate.dev.
  await kubectlApply(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: phantomgate-revoker, namespace: ${systemNamespace} }
rules:
  - apiGroups: [phantomgate.dev]
    resources: [revocations]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: phantomgate-revoker, namespace: ${systemNamespace} }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: phantomgate-revoker }
subjects: [{ kind: ServiceAccount, name: ${revokerAccount}, namespace: ${systemNamespace} }]
`);
  operatorKubeconfig = await cl.writeTokenKubeconfig(
    "fleet-operator",
    await serviceAccountToken(operatorAccount),
  );
  gatewayToken = await serviceAccountToken(gatewayAccount, "phantomgate");
  revokerToken = await serviceAccountToken(revokerAccount, "phantomgate");
  secrets.push(gatewayToken, revokerToken);

  authServer = await startDemoAuthServer({ port: 0 });
  echo = await startEchoApi(0);
  service = new ServiceProxy();
  await service.start();
  console.log(`fleet set-up took ${((Date.now() - started) / 1000).toFixed(1)} s; logs: ${logDir}`);
}, startupTimeoutMs);

afterAll(async () => {
  await Promise.all([...gateways.values()].map((gateway) => gateway.stop()));
  await Promise.all(operators.map((operator) => operator.kill()));
  await service?.close();
  adminAgent?.destroy();
  echo?.server.close();
  echo?.server.closeAllConnections();
  await authServer?.close();
  await cluster?.stop();
  console.log(`fleet logs: ${logDir}`);
}, 120_000);

// ---- the tests ----------------------------------------------------------------------------------------------

describe("a fleet of two operator replicas and three gateways on a real API server", () => {
  let first: OperatorProcess | undefined;
  let second: OperatorProcess | undefined;
  let leader: OperatorProcess | undefined;
  let survivor: OperatorProcess | undefined;

  it(
    "starts two replicas (one leads) and three gateways streaming from both",
    async () => {
      first = await startReplica("op-a");
      await waitFor(async () => (await leaseHolder()) === "op-a", 30_000, "op-a holding the Lease");
      second = await startReplica("op-b");
      svc().pin("gw-1", "op-a");
      svc().pin("gw-2", "op-b");
      svc().pin("gw-3", "op-a");
      for (const name of gatewayNames) await startGateway(name);
      await waitFor(
        () => {
          const streaming = svc().streaming();
          return (
            streaming.get("gw-1") === "op-a" &&
            streaming.get("gw-2") === "op-b" &&
            streaming.get("gw-3") === "op-a"
          );
        },
        30_000,
        "gateways streaming from their replicas",
      );
      expect((await readiness(first)).leader).toBe(true);
      expect((await readiness(second)).leader).toBe(false);
    },
    testTimeoutMs,
  );

  it(
    "kubectl apply of an AuthServer, a ScopePolicy and ApiRoutes: all three gateways serve them, Programmed on 3/3",
    async () => {
      await kubectlApply(foundationYaml());
      await kubectlApply(`${echoRoute("echo", "/echo")}---\n${echoRoute("extra", "/extra")}`);
      const token = await newToken();
      await allAnswer("/echo/hello", token, 200, "/echo served everywhere");
      await allAnswer("/extra/hello", token, 200, "/extra served everywhere");
      expect(await statusesAt("/nowhere", token)).toEqual([404, 404, 404]);
      // The gateways' ACKs travel round robin, so some land on the replica the gateway does not stream from;
      // the fleet view still counts each gateway once, and as programmed.
      for (const name of ["echo", "extra"]) {
        const route = await waitForRouteStatus(name, (o) => programmedOnAll(o), `${name} Programmed on 3/3`);
        expect(conditionOf(route, "Accepted")).toMatchObject({ status: "True", reason: "Accepted" });
      }
      const authServerObject = await adminGet(
        "/apis/phantomgate.dev/v1alpha1/namespaces/default/authservers/demo-as",
      );
      expect(conditionOf(authServerObject, "Accepted")?.status).toBe("True");
    },
    testTimeoutMs,
  );

  it(
    "an update (new path and scope) changes all three gateways; status follows the new generation",
    async () => {
      await kubectlApply(echoRoute("echo", "/echo-v2", "write_invoice"));
      const reader = await newToken("read_invoice");
      const writer = await newToken("write_invoice");
      await allAnswer("/echo-v2/hello", writer, 200, "/echo-v2 served everywhere");
      expect(await statusesAt("/echo-v2/hello", reader)).toEqual([403, 403, 403]);
      expect(await statusesAt("/echo/hello", writer)).toEqual([404, 404, 404]);
      await waitForRouteStatus(
        "echo",
        (o) => o.metadata.generation === 2 && programmedOnAll(o),
        "echo generation 2 Programmed on 3/3",
      );
    },
    testTimeoutMs,
  );

  it(
    "a delete: all three gateways answer 404 for the route",
    async () => {
      const token = await newToken();
      expect(await statusesAt("/extra/hello", token)).toEqual([200, 200, 200]);
      await c().kubectl(["delete", "apiroute", "extra", "-n", "default"]);
      await allAnswer("/extra/hello", token, 404, "/extra gone everywhere");
    },
    testTimeoutMs,
  );

  it(
    "a bad object is isolated (Accepted=False) while the others keep working",
    async () => {
      await kubectlApply(echoRoute("typo", "/typo", "read_invoise"));
      const bad = await waitForRouteStatus(
        "typo",
        (o) => conditionOf(o, "Accepted")?.status === "False",
        "typo rejected",
      );
      expect(conditionOf(bad, "Accepted")).toMatchObject({ reason: "UnknownScope" });
      expect(conditionOf(bad, "Accepted")?.message).toContain("read_invoise");
      expect(conditionOf(bad, "Programmed")).toMatchObject({ status: "False", reason: "NotAccepted" });
      const writer = await newToken("write_invoice");
      expect(await statusesAt("/typo/x", writer)).toEqual([404, 404, 404]);
      expect(await statusesAt("/echo-v2/hello", writer)).toEqual([200, 200, 200]);
      await waitForRouteStatus("echo", (o) => programmedOnAll(o), "echo still Programmed on 3/3");
    },
    testTimeoutMs,
  );

  it(
    "a frozen gateway (SIGSTOP, still connected) leaves a new route Pending on 2/3 until it serves it too: 3/3",
    async () => {
      const frozen = gw("gw-3");
      const pid = frozen.child.pid;
      if (pid === undefined) throw new Error("gw-3 has no pid");
      process.kill(pid, "SIGSTOP");
      try {
        await kubectlApply(echoRoute("pending", "/pending"));
        // Within the operator's stream liveness timeout (30 s) the frozen gateway still counts as connected.
        const route = await waitForRouteStatus(
          "pending",
          (o) => / programmed on 2\/3 gateways$/.test(conditionOf(o, "Programmed")?.message ?? ""),
          "pending Programmed on 2/3",
          20_000,
        );
        expect(conditionOf(route, "Programmed")).toMatchObject({ status: "False", reason: "Pending" });
        expect(conditionOf(route, "Programmed")?.message).toMatch(
          /^revision [0-9a-f]{16} programmed on 2\/3 gateways$/,
        );
        expect(route.status?.fleet).toMatchObject({ programmed: 2, gateways: 3 });
        // The other two serve it already.
        const token = await newToken();
        expect(await statusAt(gw("gw-1"), "/pending/hello", token)).toBe(200);
        expect(await statusAt(gw("gw-2"), "/pending/hello", token)).toBe(200);
      } finally {
        process.kill(pid, "SIGCONT");
      }
      const done = await waitForRouteStatus(
        "pending",
        (o) => programmedOnAll(o),
        "pending Programmed on 3/3 once gw-3 runs again",
      );
      expect(done.status?.fleet).toMatchObject({ programmed: 3, gateways: 3 });
      await allAnswer("/pending/hello", await newToken(), 200, "/pending served everywhere");
      await c().kubectl(["delete", "apiroute", "pending", "-n", "default"]);
    },
    testTimeoutMs,
  );

  it(
    "a revocation sent to one replica evicts the cached token in every gateway, also those on the other replica",
    async () => {
      if (first === undefined || second === undefined) throw new Error("replicas not started");
      const token = await newToken("write_invoice");
      expect(await statusesAt("/echo-v2/hello", token)).toEqual([200, 200, 200]);
      await revokeAtAuthServer(token);
      // Cached: the gateways keep accepting it until told.
      expect(await statusesAt("/echo-v2/hello", token)).toEqual([200, 200, 200]);
      // op-b has only gw-2; gw-1 and gw-3 stream from op-a.
      const answer = await revokeAt(second, token);
      expect(answer).toEqual({ status: 202, body: { revoked: 1, gateways: 1 } });
      await allAnswer("/echo-v2/hello", token, 401, "revoked token refused everywhere", 15_000);
      // The relay Lease holds the fingerprint (a digest, not the token) for the other replicas.
      const relay = await adminGet(
        `/apis/coordination.k8s.io/v1/namespaces/${systemNamespace}/leases/${revocationRelayName(leaseName, "op-b")}`,
      );
      expect(relay?.metadata.annotations?.["phantomgate.dev/revocations"]).toContain(fingerprintToken(token));
      expect(JSON.stringify(relay)).not.toContain(token);
    },
    testTimeoutMs,
  );

  it(
    "killing the leader (SIGKILL): the gateways keep serving, the other replica takes the Lease and writes status",
    async () => {
      if (first === undefined || second === undefined) throw new Error("replicas not started");
      leader = first;
      survivor = second;
      const token = await newToken("write_invoice");
      expect(await statusesAt("/echo-v2/hello", token)).toEqual([200, 200, 200]);
      const killedAt = Date.now();
      await killReplica(leader);
      // Through the takeover: every gateway answers every request.
      while (Date.now() - killedAt < leaseDurationMs + 2_000) {
        expect(await statusesAt("/echo-v2/hello", token)).toEqual([200, 200, 200]);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      const next = survivor;
      const holder = next.identity;
      await waitFor(async () => (await leaseHolder()) === holder, 30_000, "the survivor holding the Lease");
      await waitFor(async () => (await readiness(next)).leader, 10_000, "the survivor leading");
      console.log(
        `takeover ${Date.now() - killedAt} ms after the kill (lease duration ${leaseDurationMs} ms)`,
      );
      // The gateways of the dead replica moved to the survivor.
      await waitFor(
        () => gatewayNames.every((name) => svc().streaming().get(name) === holder),
        30_000,
        "every gateway streaming from the survivor",
      );
      // The new leader writes status: a new route becomes Programmed on 3/3.
      const writesBefore = await metric(survivor, "phantomgate_operator_status_writes_total");
      await kubectlApply(echoRoute("after-failover", "/after-failover"));
      await allAnswer("/after-failover/x", token, 200, "/after-failover served everywhere");
      await waitForRouteStatus(
        "after-failover",
        (o) => programmedOnAll(o),
        "after-failover Programmed on 3/3",
      );
      expect(await metric(survivor, "phantomgate_operator_status_writes_total")).toBeGreaterThan(
        writesBefore,
      );
    },
    testTimeoutMs,
  );

  it(
    "killing both replicas: the gateways keep serving",
    async () => {
      if (survivor === undefined) throw new Error("no survivor");
      await killReplica(survivor);
      const token = await newToken("write_invoice");
      await waitFor(
        async () =>
          (await Promise.all(gatewayNames.map((name) => readyz(gw(name))))).every(
            (r) => r.body.controlPlane?.state !== "connected",
          ),
        30_000,
        "the gateways noticing",
      );
      for (const name of gatewayNames) {
        const { status, body } = await readyz(gw(name));
        expect(status).toBe(200);
        expect(body.controlPlane?.summary).toMatch(/^not connected .*; serving revision [0-9a-f]{16} since/);
      }
      expect(await statusesAt("/echo-v2/hello", token)).toEqual([200, 200, 200]);
      expect(await statusesAt("/after-failover/x", token)).toEqual([200, 200, 200]);
    },
    testTimeoutMs,
  );

  it(
    "a gateway restarted while the operators are down serves its last-known-good snapshot",
    async () => {
      const before = (await readyz(gw("gw-3"))).body.revision;
      expect(await gw("gw-3").stop()).toBe(0);
      const restarted = await startControlPlaneGateway(gw("gw-3").spec);
      gateways.set("gw-3", restarted);
      const { status, body } = await readyz(restarted);
      expect(status).toBe(200);
      expect(body.revision).toBe(before);
      expect(body.controlPlane).toMatchObject({ servingFrom: "last-known-good", revision: before });
      const token = await newToken("write_invoice");
      expect(await statusAt(restarted, "/echo-v2/hello", token)).toBe(200);
      expect(await statusAt(restarted, "/after-failover/x", token)).toBe(200);
    },
    testTimeoutMs,
  );

  it(
    "a replica started again: the gateways reconnect and converge on a route changed while it was down",
    async () => {
      // Changed while no operator runs (nothing judges it yet).
      await kubectlApply(echoRoute("echo", "/echo-v3", "read_invoice"));
      const token = await newToken("read_invoice");
      expect(await statusesAt("/echo-v3/hello", token)).toEqual([404, 404, 404]);
      const back = await startReplica("op-c");
      for (const name of gatewayNames) svc().pin(name, "op-c");
      // Reconnects are spread by full jitter of up to 10 s.
      await allAnswer("/echo-v3/hello", token, 200, "/echo-v3 served everywhere", 60_000);
      expect(await statusesAt("/echo-v2/hello", token)).toEqual([404, 404, 404]);
      await waitFor(async () => (await leaseHolder()) === "op-c", 30_000, "op-c holding the Lease");
      await waitForRouteStatus(
        "echo",
        (o) => o.metadata.generation === 3 && programmedOnAll(o),
        "echo generation 3 Programmed on 3/3",
      );
      for (const name of gatewayNames) {
        const { body } = await readyz(gw(name));
        expect(body.controlPlane).toMatchObject({ state: "connected", servingFrom: "control-plane" });
      }
      expect((await readiness(back)).leader).toBe(true);
    },
    testTimeoutMs,
  );

  it(
    "two replicas again: a revocation reaches the other replica's gateways, and one disconnected at the time gets it on reconnecting there",
    async () => {
      const current = operators.find((operator) => operator.identity === "op-c");
      if (current === undefined) throw new Error("op-c not started");
      const other = await startReplica("op-d");
      // gw-2 moves to op-d; gw-1 (and later gw-3) stay with op-c.
      svc().pin("gw-2", "op-d");
      svc().cut("gw-2");
      await waitFor(() => svc().streaming().get("gw-2") === "op-d", 30_000, "gw-2 streaming from op-d");
      const token = await newToken("read_invoice");
      expect(await statusesAt("/echo-v3/hello", token)).toEqual([200, 200, 200]);
      // gw-3 is cut off from both replicas for a while (it keeps serving from its cache).
      svc().hold("gw-3");
      await waitFor(
        async () => (await readyz(gw("gw-3"))).body.controlPlane?.state !== "connected",
        30_000,
        "gw-3 disconnected",
      );
      await revokeAtAuthServer(token);
      const answer = await revokeAt(other, token);
      expect(answer).toEqual({ status: 202, body: { revoked: 1, gateways: 1 } });
      // gw-2 streams from op-d, gw-1 from op-c (through the relay).
      let last: number[] = [];
      await waitFor(
        async () => {
          last = await Promise.all(
            ["gw-1", "gw-2"].map((name) => statusAt(gw(name), "/echo-v3/hello", token)),
          );
          return last.every((status) => status === 401);
        },
        15_000,
        () => `gw-1 and gw-2 refusing the revoked token (last: ${last.join(", ")})`,
      );
      expect(await statusAt(gw("gw-3"), "/echo-v3/hello", token)).toBe(200); // not told yet
      // Back on the network, gw-3 reconnects to op-c, which replays what op-d relayed.
      svc().release("gw-3");
      await waitFor(() => svc().streaming().get("gw-3") === "op-c", 30_000, "gw-3 streaming from op-c");
      await waitFor(
        async () => (await statusAt(gw("gw-3"), "/echo-v3/hello", token)) === 401,
        15_000,
        "gw-3 refusing the revoked token",
      );
      expect(await metric(current, "phantomgate_operator_revocation_relay_received_total")).toBeGreaterThan(
        0,
      );
    },
    testTimeoutMs,
  );

  it(
    "a burst larger than one relay Lease holds reaches the other replica in full; a replica restarted under its identity takes its Lease over",
    async () => {
      const current = operators.find((operator) => operator.identity === "op-c");
      const other = operators.find((operator) => operator.identity === "op-d");
      if (current === undefined || other === undefined) throw new Error("op-c and op-d not started");
      const burst = Array.from({ length: 5_000 }, (_, i) => fingerprintToken(`burst-${i}`));
      const before = await metric(current, "phantomgate_operator_revocation_relay_received_total");
      const response = await request(`http://127.0.0.1:${other.snapshotPort}/v1/revocations`, {
        method: "POST",
        headers: { authorization: `Bearer ${revokerToken}`, "content-type": "application/json" },
        body: JSON.stringify({ fingerprints: burst }),
      });
      expect(response.statusCode).toBe(202);
      expect(await response.body.json()).toEqual({ revoked: 5_000, gateways: 1 });
      // Written as several versions of op-d's Lease (2,000 each at most); op-c's watch sees every one.
      await waitFor(
        async () =>
          (await metric(current, "phantomgate_operator_revocation_relay_received_total")) - before === 5_000,
        30_000,
        "op-c learning all 5,000",
      );
      expect(
        await metric(other, "phantomgate_operator_revocation_relay_writes_total"),
      ).toBeGreaterThanOrEqual(4);

      await killReplica(other);
      const restarted = await startReplica("op-d");
      await waitFor(
        () => readFileSync(restarted.logFile, "utf8").includes('"revocations of an earlier run taken over"'),
        30_000,
        "op-d taking its earlier Lease over",
      );
    },
    testTimeoutMs,
  );

  it(
    "a replica that sees another's relay Lease skip entries has its gateways drop their cached token facts, also across a deletion of that Lease and for a replica first seen after its first versions",
    async () => {
      const replicas = [live("op-c"), live("op-d")];
      await allAnswer("/echo-v3/hello", await newToken("read_invoice"), 200, "all three gateways serving");
      // Cached everywhere, then revoked at the AS only: no replica hears of it, so the gateways keep serving it.
      const token = await newToken("read_invoice");
      expect(await statusesAt("/echo-v3/hello", token)).toEqual([200, 200, 200]);
      await revokeAtAuthServer(token);
      expect(await statusesAt("/echo-v3/hello", token)).toEqual([200, 200, 200]);

      // A third replica's relay Lease, written here as that replica would: first a version both replicas read…
      const name = revocationRelayName(leaseName, "op-gone");
      const newcomer = revocationRelayName(leaseName, "op-new");
      const relayLease = (since: number, upTo: number, fingerprint: string, lease = name): string => {
        const annotation = JSON.stringify({
          run: "0f1e2d3c4b5a6978",
          since,
          upTo,
          batches: [{ at: Date.now(), fingerprints: [fingerprint] }],
        });
        return `apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: ${lease}
  namespace: ${systemNamespace}
  labels: { "phantomgate.dev/revocations": ${leaseName} }
  annotations:
    phantomgate.dev/revocations: '${annotation}'
spec:
  holderIdentity: op-gone
  leaseDurationSeconds: 900
  renewTime: ${microTime(Date.now())}
`;
      };
      const received = await Promise.all(
        replicas.map((r) => metric(r, "phantomgate_operator_revocation_relay_received_total")),
      );
      const gaps = await Promise.all(
        replicas.map((r) => metric(r, "phantomgate_operator_revocation_relay_gaps_total")),
      );
      try {
        await kubectlApply(relayLease(0, 1, fingerprintToken("relay-gap-1")));
        await waitFor(
          async () =>
            (
              await Promise.all(
                replicas.map((r) => metric(r, "phantomgate_operator_revocation_relay_received_total")),
              )
            ).every((value, i) => value === (received[i] ?? 0) + 1),
          30_000,
          "both replicas reading the first version",
        );
        expect(await statusesAt("/echo-v3/hello", token)).toEqual([200, 200, 200]);
        // …then one that no longer holds entries 2 to 5: their fingerprints cannot be known here.
        await kubectlApply(relayLease(5, 6, fingerprintToken("relay-gap-6")));
        await allAnswer("/echo-v3/hello", token, 401, "every gateway asking the AS again");
        for (const [i, replica] of replicas.entries()) {
          expect(await metric(replica, "phantomgate_operator_revocation_relay_gaps_total")).toBe(
            (gaps[i] ?? 0) + 1,
          );
          expect(readFileSync(replica.logFile, "utf8")).toContain(
            "revocations of another replica were missed; telling the gateways to drop their cached token facts",
          );
        }

        // The Lease is deleted (as stale) and written again by the same run, numbering on: the replicas still
        // know where they left it, so entries 7 to 9 are missed too.
        const second = await newToken("read_invoice");
        expect(await statusesAt("/echo-v3/hello", second)).toEqual([200, 200, 200]);
        await revokeAtAuthServer(second);
        await c().kubectl(["delete", "lease", name, "-n", systemNamespace]);
        await kubectlApply(relayLease(9, 10, fingerprintToken("relay-gap-10")));
        await allAnswer(
          "/echo-v3/hello",
          second,
          401,
          "every gateway asking the AS again after the re-creation",
        );
        for (const [i, replica] of replicas.entries()) {
          expect(await metric(replica, "phantomgate_operator_revocation_relay_gaps_total")).toBe(
            (gaps[i] ?? 0) + 2,
          );
        }

        // A replica the others never saw before, whose first versions went by unseen: judged from its start.
        const third = await newToken("read_invoice");
        expect(await statusesAt("/echo-v3/hello", third)).toEqual([200, 200, 200]);
        await revokeAtAuthServer(third);
        await kubectlApply(relayLease(3, 4, fingerprintToken("relay-gap-new-4"), newcomer));
        await allAnswer(
          "/echo-v3/hello",
          third,
          401,
          "every gateway asking the AS again for a new replica's gap",
        );
        for (const [i, replica] of replicas.entries()) {
          expect(await metric(replica, "phantomgate_operator_revocation_relay_gaps_total")).toBe(
            (gaps[i] ?? 0) + 3,
          );
        }
      } finally {
        for (const lease of [name, newcomer]) {
          await c().kubectl(["delete", "lease", lease, "-n", systemNamespace, "--ignore-not-found"]);
        }
      }
    },
    testTimeoutMs,
  );

  it(
    "a leader stopped with SIGTERM writes no status while it stops: the route stays Programmed on 3/3 through the handover",
    async () => {
      const replicas = [live("op-c"), live("op-d")];
      const leaders = async (): Promise<OperatorProcess[]> => {
        const states = await Promise.all(replicas.map((replica) => readiness(replica)));
        return replicas.filter((_, i) => states[i]?.leader === true);
      };
      await waitFor(async () => (await leaders()).length === 1, 30_000, "a leader among op-c and op-d");
      const [leaving] = await leaders();
      if (leaving === undefined) throw new Error("the leader stepped down");
      const staying = replicas.find((replica) => replica !== leaving);
      if (staying === undefined) throw new Error("unreachable");
      await waitForRouteStatus("echo", (o) => programmedOnAll(o), "echo Programmed on 3/3 before the stop");
      // Some gateways stream from the leader, so its view loses them as it closes their streams.
      const fromLeader = gatewayNames.filter((name) => svc().streaming().get(name) === leaving.identity);
      expect(fromLeader.length).toBeGreaterThan(0);

      // Every status the route shows from the stop until the other replica serves every gateway.
      const seen: string[] = [];
      let watching = true;
      const watcher = (async () => {
        while (watching) {
          const programmed = conditionOf(await adminGet(routePath("echo")), "Programmed");
          const shown = `${programmed?.status ?? "none"} ${programmed?.message ?? ""}`;
          if (seen.at(-1) !== shown) seen.push(shown);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      try {
        // Terminating: no new connections (kube-proxy keeps the established ones), then SIGTERM.
        svc().removeBackend(leaving.identity, true);
        await leaving.stop();
        await waitFor(
          async () => (await leaseHolder()) === staying.identity,
          30_000,
          `${staying.identity} holding the Lease`,
        );
        await waitFor(
          () => gatewayNames.every((name) => svc().streaming().get(name) === staying.identity),
          30_000,
          "every gateway streaming from the replica that stays",
        );
        await waitFor(async () => (await readiness(staying)).leader, 10_000, "the other replica leading");
        // Past the new leader's settle window, on its own view of the fleet.
        await new Promise((resolve) => setTimeout(resolve, 17_000));
      } finally {
        watching = false;
        await watcher;
      }
      expect(seen.length).toBeGreaterThan(0);
      for (const shown of seen)
        expect(shown).toMatch(/^True revision [0-9a-f]{16} programmed on 3\/3 gateways$/);
      // The stopping leader's own log: nothing written once its shutdown began.
      const log = readFileSync(leaving.logFile, "utf8");
      const afterStop = log.slice(log.lastIndexOf('"msg":"shutting down"'));
      expect(afterStop).toContain('"msg":"operator stopped"');
      expect(afterStop).not.toContain('"msg":"status written"');
    },
    testTimeoutMs,
  );

  it("no log carries a token or a token fingerprint", () => {
    const logs = [
      ...operators.map((operator) => readFileSync(operator.logFile, "utf8")),
      ...[...gateways.values()].map((gateway) => gateway.output()),
    ];
    expect(logs.join("").length).toBeGreaterThan(0);
    for (const secret of secrets) {
      for (const log of logs) expect(log.includes(secret)).toBe(false);
    }
  });
});
