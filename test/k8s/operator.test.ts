// The operator core against a REAL etcd + kube-apiserver, as real processes: `phantomgate operator` under a
// ServiceAccount bound only to the rules of src/operator/permissions.ts (token from the TokenRequest API),
// objects applied with kubectl, status and Events read back from the API server, a real gateway process on the
// snapshot stream. The operator reaches the API server through a TCP proxy the test controls, so it can cut
// the watch connections (reconnect with backoff) or freeze them (a silent stall: the watchdog and the periodic
// relist must notice) without touching the API server.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify as toYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadOperatorConfig } from "../../src/operator/config.ts";
import { permissionOptionsOf, renderRbacYaml } from "../../src/operator/permissions.ts";
import {
  controlPlaneGatewaySpec,
  eventually,
  readyz,
  startControlPlaneGateway,
  type ControlPlaneGateway,
} from "../helpers/control-plane-gateway.ts";
import { repoRoot, startTestCluster, type TestCluster } from "./harness/cluster.ts";
import { spawnOperator } from "../helpers/operator-process.ts";

const startupTimeoutMs = 60 * 60_000;
const testTimeoutMs = 180_000;
const systemNamespace = "pg-system";
const operatorAccount = "phantomgate-operator";
const gatewayAccount = "phantomgate-gateway";
const leaseName = "phantomgate-operator";
const leaseDurationMs = 4_000;
/** Flags every operator process here gets (ports and identity come per process). */
const commonArgs = [
  "--pod-namespace",
  systemNamespace,
  "--listen-host",
  "127.0.0.1",
  "--snapshot-port",
  "0",
  "--metrics-port",
  "0",
  "--webhook-port",
  "0",
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
let proxy: TcpProxy | undefined;
let operatorKubeconfig = "";
let gatewayToken = "";
const logDir = mkdtempSync(join(tmpdir(), "phantomgate-operator-test-"));
const operators: OperatorProcess[] = [];
const gateways: ControlPlaneGateway[] = [];

const c = (): TestCluster => {
  if (cluster === undefined) throw new Error("cluster not started");
  return cluster;
};

// ---- a TCP proxy between the operator and the API server ----------------------------------------------

interface ProxiedConnection {
  readonly client: Socket;
  readonly upstream: Socket;
  /** Frozen: nothing more reaches the client; if the client sends anything, the connection is reset. */
  frozen: boolean;
}

class TcpProxy {
  readonly #server: Server;
  readonly #connections = new Set<ProxiedConnection>();
  readonly #target: { host: string; port: number };
  port = 0;

  constructor(target: { host: string; port: number }) {
    this.#target = target;
    this.#server = createServer((client) => {
      const upstream = createConnection(this.#target);
      const connection: ProxiedConnection = { client, upstream, frozen: false };
      this.#connections.add(connection);
      const close = (): void => {
        this.#connections.delete(connection);
        client.destroy();
        upstream.destroy();
      };
      client.on("data", (chunk: Buffer) => {
        // A frozen connection that is used again (a pooled socket taking a new request) is reset, so only the
        // requests that were in flight when it froze (the watches) hang.
        if (connection.frozen) close();
        else upstream.write(chunk);
      });
      upstream.on("data", (chunk: Buffer) => {
        if (!connection.frozen) client.write(chunk);
      });
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
  }

  async start(): Promise<void> {
    this.#server.listen(0, "127.0.0.1");
    await new Promise<void>((resolve) => this.#server.once("listening", resolve));
    const address = this.#server.address();
    if (address === null || typeof address === "string") throw new Error("proxy has no port");
    this.port = address.port;
  }

  /** Resets every open connection (what a restarting API server or a dropped NAT entry does). */
  cutAll(): number {
    const count = this.#connections.size;
    for (const connection of [...this.#connections]) {
      connection.client.resetAndDestroy();
      connection.upstream.destroy();
    }
    this.#connections.clear();
    return count;
  }

  /** Open connections go silent but stay open (a stalled watch); new connections work. */
  freezeAll(): number {
    for (const connection of this.#connections) connection.frozen = true;
    return this.#connections.size;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

// ---- the API server as the admin sees it ----------------------------------------------------------------

interface KubeObject {
  metadata: { name: string; namespace?: string; generation?: number; resourceVersion?: string };
  spec?: Record<string, unknown>;
  status?: {
    observedGeneration?: number;
    conditions?: {
      type: string;
      status: string;
      reason: string;
      message: string;
      observedGeneration?: number;
      lastTransitionTime: string;
    }[];
    fleet?: { revision?: string; programmed: number; gateways: number };
  };
}

/** GET as the admin (client certificate), straight to the API server (not through the proxy). */
function adminGet(path: string): Promise<{ status: number; body: unknown }> {
  const cl = c();
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${cl.server}${path}`,
      { ca: cl.caPem, cert: cl.adminCert, key: cl.adminKey, agent: false, timeout: 10_000 },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: (text === "" ? {} : JSON.parse(text)) as unknown }),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

const routePath = (name: string, namespace = "default") =>
  `/apis/phantomgate.dev/v1alpha1/namespaces/${namespace}/apiroutes/${name}`;

async function getObject(path: string): Promise<KubeObject | undefined> {
  const { status, body } = await adminGet(path);
  return status === 200 ? (body as KubeObject) : undefined;
}

interface EventItem {
  regarding: { name: string };
  reason: string;
  type: string;
  reportingController: string;
  reportingInstance: string;
}

/** The events.k8s.io Events of the default namespace. */
async function listEvents(): Promise<EventItem[]> {
  const { body } = await adminGet("/apis/events.k8s.io/v1/namespaces/default/events");
  return (body as { items: EventItem[] }).items;
}

const conditionOf = (object: KubeObject | undefined, type: string) =>
  object?.status?.conditions?.find((condition) => condition.type === type);

/** Waits until the object's status was written for its current generation and `check` holds. */
async function waitForStatus(
  path: string,
  check: (object: KubeObject) => boolean,
  timeoutMs = 30_000,
): Promise<KubeObject> {
  let last: KubeObject | undefined;
  await eventually(
    async () => {
      last = await getObject(path);
      return (
        last !== undefined &&
        last.status?.observedGeneration === last.metadata.generation &&
        conditionOf(last, "Accepted")?.observedGeneration === last.metadata.generation &&
        check(last)
      );
    },
    timeoutMs,
    `status of ${path} (last seen: ${JSON.stringify(last?.status ?? null)})`,
  );
  if (last === undefined) throw new Error("unreachable");
  return last;
}

const kubectlApply = (yaml: string) => c().kubectl(["apply", "-f", "-"], { input: yaml });

function route(name: string, path: string, scopes: readonly string[] = ["read_invoice"]): string {
  return toYaml({
    apiVersion: "phantomgate.dev/v1alpha1",
    kind: "ApiRoute",
    metadata: { name, namespace: "default" },
    spec: {
      scopePolicyRefs: [{ name: "billing" }],
      authServerRef: { name: "demo" },
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: path } }],
          authentication: { mode: "phantom" },
          requiredScopes: { allOf: [...scopes] },
          backendRefs: [{ url: "http://127.0.0.1:9101" }],
        },
      ],
    },
  });
}

// ---- operator processes -----------------------------------------------------------------------------------

interface OperatorProcess {
  readonly identity: string;
  readonly child: ChildProcess;
  readonly metricsUrl: string;
  readonly snapshotUrl: string;
  readonly logFile: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function startOperatorProcess(
  identity: string,
  extraArgs: readonly string[] = [],
): Promise<OperatorProcess> {
  const spawned = await spawnOperator({
    identity,
    kubeconfig: operatorKubeconfig,
    logDir,
    args: [...commonArgs, ...extraArgs],
  });
  const operator: OperatorProcess = {
    identity,
    child: spawned.child,
    logFile: spawned.logFile,
    metricsUrl: `http://127.0.0.1:${spawned.metricsPort}`,
    snapshotUrl: `http://127.0.0.1:${spawned.snapshotPort}`,
    stop: (signal) => spawned.stop(signal),
  };
  operators.push(operator);
  return operator;
}

/** A metric's value (summed over the label sets matching `labels`), 0 when absent. */
async function metric(
  operator: OperatorProcess,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = await (await fetch(`${operator.metricsUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const labelText = match[2] ?? "";
    if (Object.entries(labels).every(([key, value]) => labelText.includes(`${key}="${value}"`)))
      sum += Number(match[3]);
  }
  return sum;
}

async function readiness(
  operator: OperatorProcess,
): Promise<{ ready: boolean; leader: boolean; holder: string | null }> {
  return (await (await fetch(`${operator.metricsUrl}/readyz`)).json()) as {
    ready: boolean;
    leader: boolean;
    holder: string | null;
  };
}

async function leaseHolder(): Promise<string | undefined> {
  const lease = await getObject(
    `/apis/coordination.k8s.io/v1/namespaces/${systemNamespace}/leases/${leaseName}`,
  );
  const holder = (lease?.spec as { holderIdentity?: string } | undefined)?.holderIdentity;
  return holder === "" ? undefined : holder;
}

async function serviceAccountToken(name: string, audience?: string): Promise<string> {
  const args = ["create", "token", name, "-n", systemNamespace, "--duration", "2h"];
  if (audience !== undefined) args.push("--audience", audience);
  return (await c().kubectl(args)).stdout.trim();
}

// ---- set-up -----------------------------------------------------------------------------------------------

beforeAll(async () => {
  cluster = await startTestCluster();
  const cl = c();
  await cl.kubectl(["apply", "-f", join(repoRoot, "crds")]);
  await cl.kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
  await cl.kubectl(["create", "namespace", systemNamespace]);
  await cl.kubectl(["create", "serviceaccount", operatorAccount, "-n", systemNamespace]);
  await cl.kubectl(["create", "serviceaccount", gatewayAccount, "-n", systemNamespace]);
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
  const target = new URL(cl.server);
  proxy = new TcpProxy({ host: target.hostname, port: Number(target.port) });
  await proxy.start();
  operatorKubeconfig = join(cl.dataDir, "kubeconfig-operator-proxied");
  await writeFile(
    operatorKubeconfig,
    toYaml({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "proxied",
          cluster: {
            server: `https://127.0.0.1:${proxy.port}`,
            "certificate-authority-data": Buffer.from(cl.caPem).toString("base64"),
          },
        },
      ],
      users: [{ name: "operator", user: { token: await serviceAccountToken(operatorAccount) } }],
      contexts: [{ name: "proxied", context: { cluster: "proxied", user: "operator" } }],
      "current-context": "proxied",
    }),
    { mode: 0o600 },
  );
  gatewayToken = await serviceAccountToken(gatewayAccount, "phantomgate");
}, startupTimeoutMs);

afterAll(async () => {
  for (const gateway of gateways) await gateway.stop();
  for (const operator of operators) await operator.stop("SIGKILL");
  await proxy?.close();
  await cluster?.stop();
  console.log(`operator logs: ${logDir}`);
}, 120_000);

// ---- the tests ----------------------------------------------------------------------------------------------

describe("phantomgate operator on a real API server", () => {
  let main: OperatorProcess | undefined;
  const op = (): OperatorProcess => {
    if (main === undefined) throw new Error("operator not started");
    return main;
  };

  it(
    "its ServiceAccount holds what permissions.ts lists and no more",
    async () => {
      const can = async (
        verb: string,
        resource: string,
        namespace?: string,
        subresource?: string,
      ): Promise<boolean> => {
        const args = [
          "auth",
          "can-i",
          verb,
          resource,
          `--as=system:serviceaccount:${systemNamespace}:${operatorAccount}`,
        ];
        args.push(...(namespace === undefined ? ["--all-namespaces"] : ["-n", namespace]));
        if (subresource !== undefined) args.push(`--subresource=${subresource}`);
        return (await c().kubectl(args, { allowFailure: true })).stdout.trim() === "yes";
      };
      expect(await can("watch", "apiroutes.phantomgate.dev")).toBe(true);
      expect(await can("patch", "apiroutes.phantomgate.dev", "default", "status")).toBe(true);
      expect(await can("get", "apiroutes.phantomgate.dev", "default", "status")).toBe(true);
      expect(await can("update", "apiroutes.phantomgate.dev", "default", "status")).toBe(false);
      expect(await can("list", "secrets")).toBe(true);
      expect(await can("create", "events.events.k8s.io", "default")).toBe(true);
      expect(await can("update", "leases.coordination.k8s.io", systemNamespace)).toBe(true);
      expect(await can("create", "tokenreviews.authentication.k8s.io")).toBe(true);
      // Not granted: writing specs, reading single Secrets, core Events, Leases elsewhere, anything else.
      expect(await can("update", "apiroutes.phantomgate.dev", "default")).toBe(false);
      expect(await can("patch", "apiroutes.phantomgate.dev", "default")).toBe(false);
      expect(await can("get", "secrets", "default")).toBe(false);
      expect(await can("create", "events", "default")).toBe(false);
      expect(await can("create", "leases.coordination.k8s.io", "default")).toBe(false);
      expect(await can("list", "configmaps", "default")).toBe(false);
      expect(await can("patch", "validatingwebhookconfigurations/someone-elses")).toBe(false);
    },
    testTimeoutMs,
  );

  it(
    "writes Accepted and Programmed (NoGateways, 0/0) with observedGeneration under that identity",
    async () => {
      main = await startOperatorProcess("op-main", ["--watch-stall-ms", "6000"]);
      await eventually(async () => (await readiness(op())).ready, 60_000, "operator ready");
      await c().kubectl(["apply", "-f", join(repoRoot, "examples")]);
      for (const [plural, name] of [
        ["apiroutes", "echo"],
        ["apiroutes", "invoices"],
        ["apiroutes", "video"],
        ["scopepolicies", "billing"],
        ["scopepolicies", "streaming"],
        ["authservers", "demo"],
      ] as const) {
        const object = await waitForStatus(
          `/apis/phantomgate.dev/v1alpha1/namespaces/default/${plural}/${name}`,
          (o) => conditionOf(o, "Programmed")?.reason === "NoGateways",
        );
        expect(conditionOf(object, "Accepted")).toMatchObject({
          status: "True",
          reason: "Accepted",
          observedGeneration: 1,
        });
        expect(conditionOf(object, "Programmed")).toMatchObject({ status: "False", observedGeneration: 1 });
        expect(conditionOf(object, "Programmed")?.message).toMatch(
          /^revision [0-9a-f]{16} programmed on 0\/0 gateways$/,
        );
      }
      expect(await leaseHolder()).toBe("op-main");
    },
    testTimeoutMs,
  );

  it(
    "exports Node's process metrics under their standard names, and its version as build info and in its log",
    async () => {
      const text = await (await fetch(`${op().metricsUrl}/metrics`)).text();
      expect(text).toMatch(/^process_cpu_seconds_total \d/m);
      expect(text).toMatch(/^nodejs_heap_size_used_bytes \d/m);
      expect(text).not.toContain("phantomgate_operator_process_");
      const { version } = JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as {
        version: string;
      };
      expect(text).toContain(
        `phantomgate_operator_build_info{version="${version}",node_version="${process.version}"} 1`,
      );
      const starting = (await readFile(op().logFile, "utf8"))
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { msg?: string; version?: string })
        .find((line) => line.msg === "operator starting");
      expect(starting?.version).toBe(version);
    },
    testTimeoutMs,
  );

  it(
    "a gateway on the snapshot stream makes every accepted object Programmed (1/1)",
    async () => {
      const spec = controlPlaneGatewaySpec("gw-1", op().snapshotUrl, gatewayToken);
      const gateway = await startControlPlaneGateway(spec);
      gateways.push(gateway);
      const echo = await waitForStatus(
        routePath("echo"),
        (o) => conditionOf(o, "Programmed")?.status === "True",
      );
      const programmed = conditionOf(echo, "Programmed");
      expect(programmed?.reason).toBe("Programmed");
      const revision = /^revision ([0-9a-f]{16}) programmed on 1\/1 gateways$/.exec(
        programmed?.message ?? "",
      )?.[1];
      expect(revision).toBeDefined();
      // The gateway serves that revision (or a later one with the same route).
      await eventually(async () => (await readyz(gateway)).body.revision !== null, 10_000, "gateway serving");
      expect((await readyz(gateway)).body.ready).toBe(true);
      await waitForStatus("/apis/phantomgate.dev/v1alpha1/namespaces/default/authservers/demo", (o) =>
        (conditionOf(o, "Programmed")?.message ?? "").endsWith("1/1 gateways"),
      );
    },
    testTimeoutMs,
  );

  it(
    "an update moves observedGeneration and the gateway to the new revision; lastTransitionTime stays",
    async () => {
      const before = await waitForStatus(
        routePath("echo"),
        (o) => conditionOf(o, "Programmed")?.status === "True",
      );
      await c().kubectl([
        "patch",
        "apiroute",
        "echo",
        "-n",
        "default",
        "--type=json",
        "-p",
        JSON.stringify([{ op: "replace", path: "/spec/rules/0/matches/0/path/value", value: "/echo2" }]),
      ]);
      const after = await waitForStatus(
        routePath("echo"),
        (o) => o.metadata.generation === 2 && conditionOf(o, "Programmed")?.status === "True",
      );
      expect(after.status?.observedGeneration).toBe(2);
      expect(conditionOf(after, "Programmed")?.message).not.toBe(conditionOf(before, "Programmed")?.message);
      expect(conditionOf(after, "Accepted")?.lastTransitionTime).toBe(
        conditionOf(before, "Accepted")?.lastTransitionTime,
      );
      const gateway = gateways[0];
      if (gateway === undefined) throw new Error("no gateway");
      await eventually(
        async () => {
          const routes = (await (await fetch(`${gateway.adminUrl}/routes`)).json()) as {
            routes: { path: unknown }[];
          };
          return JSON.stringify(routes.routes).includes("/echo2");
        },
        10_000,
        "gateway serving /echo2",
      );
    },
    testTimeoutMs,
  );

  it(
    "isolates a bad object (Accepted=False with the compile reason, a Warning Event) while the others keep serving",
    async () => {
      await kubectlApply(route("typo", "/typo", ["read_invoise"]));
      const bad = await waitForStatus(
        routePath("typo"),
        (o) => conditionOf(o, "Accepted")?.status === "False",
      );
      expect(conditionOf(bad, "Accepted")).toMatchObject({ reason: "UnknownScope", observedGeneration: 1 });
      expect(conditionOf(bad, "Accepted")?.message).toContain("read_invoise");
      expect(conditionOf(bad, "Programmed")).toMatchObject({ status: "False", reason: "NotAccepted" });
      for (const name of ["echo", "invoices", "video"]) {
        const good = await waitForStatus(
          routePath(name),
          (o) => conditionOf(o, "Programmed")?.status === "True",
        );
        expect(conditionOf(good, "Accepted")?.status).toBe("True");
      }
      await eventually(
        async () => {
          return (await listEvents()).some(
            (event) =>
              event.regarding.name === "typo" &&
              event.reason === "UnknownScope" &&
              event.type === "Warning" &&
              event.reportingController === "phantomgate.dev/operator" &&
              event.reportingInstance === "op-main",
          );
        },
        15_000,
        "Warning Event for the bad route",
      );
      // No hot loop of status writes: a quiet period writes nothing.
      const writes = await metric(op(), "phantomgate_operator_status_writes_total");
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(await metric(op(), "phantomgate_operator_status_writes_total")).toBe(writes);
    },
    testTimeoutMs,
  );

  it(
    "picks up later changes after its watch connections are cut",
    async () => {
      const restartsBefore = await metric(op(), "phantomgate_operator_watch_restarts_total");
      expect(proxy?.cutAll()).toBeGreaterThan(0);
      await kubectlApply(route("after-cut", "/after-cut"));
      await waitForStatus(
        routePath("after-cut"),
        (o) => conditionOf(o, "Programmed")?.status === "True",
        60_000,
      );
      expect(await metric(op(), "phantomgate_operator_watch_restarts_total")).toBeGreaterThan(restartsBefore);
    },
    testTimeoutMs,
  );

  it(
    "restarts a silently stalled watch (the watchdog) and picks up changes made meanwhile",
    async () => {
      const stallsBefore = await metric(op(), "phantomgate_operator_watch_restarts_total", {
        reason: "stall",
      });
      expect(proxy?.freezeAll()).toBeGreaterThan(0);
      await kubectlApply(route("after-stall", "/after-stall"));
      await waitForStatus(
        routePath("after-stall"),
        (o) => conditionOf(o, "Accepted")?.status === "True",
        60_000,
      );
      expect(
        await metric(op(), "phantomgate_operator_watch_restarts_total", { reason: "stall" }),
      ).toBeGreaterThan(stallsBefore);
    },
    testTimeoutMs,
  );

  it(
    "lists again periodically, catching a change its stalled watch missed",
    async () => {
      // Hand over: the stopping operator releases the Lease, so the next one leads at once. (Frozen connections
      // are cut first: they stand for a network fault that has passed.)
      proxy?.cutAll();
      await op().stop();
      for (const gateway of gateways.splice(0)) await gateway.stop();
      expect(await leaseHolder()).toBeUndefined();
      main = await startOperatorProcess("op-relist", [
        "--watch-stall-ms",
        "600000",
        "--relist-interval-ms",
        "8000",
      ]);
      try {
        await eventually(
          async () => (await readiness(op())).ready && (await readiness(op())).leader,
          60_000,
          "op-relist leading",
        );
        // The gateways are gone, but a starting operator keeps what the status says while the fleet view
        // settles (15 s: the gateways could be reconnecting to it).
        await waitForStatus(
          routePath("after-stall"),
          (o) => conditionOf(o, "Programmed")?.reason === "NoGateways",
          40_000,
        );
        // Relists so far (one every 8 s while the status settled), then the watches freeze.
        const relists = await metric(op(), "phantomgate_operator_watch_restarts_total", { reason: "relist" });
        expect(proxy?.freezeAll()).toBeGreaterThan(0);
        await kubectlApply(route("after-relist", "/after-relist"));
        await waitForStatus(
          routePath("after-relist"),
          (o) => conditionOf(o, "Accepted")?.status === "True",
          60_000,
        );
        expect(
          await metric(op(), "phantomgate_operator_watch_restarts_total", { reason: "relist" }),
        ).toBeGreaterThan(relists);
        expect(await metric(op(), "phantomgate_operator_watch_restarts_total", { reason: "stall" })).toBe(0);
      } finally {
        proxy?.cutAll();
        await op().stop();
      }
    },
    testTimeoutMs,
  );

  it(
    "two replicas: exactly one holds the Lease and writes status; killing it hands over within the lease duration",
    async () => {
      const replicas = [await startOperatorProcess("op-a"), await startOperatorProcess("op-b")];
      let holder: string | undefined;
      await eventually(async () => (holder = await leaseHolder()) !== undefined, 30_000, "a lease holder");
      const leader = replicas.find((replica) => replica.identity === holder);
      const follower = replicas.find((replica) => replica.identity !== holder);
      if (leader === undefined || follower === undefined)
        throw new Error(`unexpected holder ${holder ?? "none"}`);
      await eventually(
        async () => (await readiness(leader)).leader && (await readiness(follower)).ready,
        30_000,
        "both ready",
      );
      expect((await readiness(follower)).leader).toBe(false);
      expect((await readiness(follower)).holder).toBe(leader.identity);

      // A change: only the leader writes its status and its Event.
      await kubectlApply(route("typo2", "/typo2", ["write_invoise"]));
      await waitForStatus(routePath("typo2"), (o) => conditionOf(o, "Accepted")?.reason === "UnknownScope");
      await eventually(
        async () => {
          const events = (await listEvents()).filter((event) => event.regarding.name === "typo2");
          return events.length > 0 && events.every((event) => event.reportingInstance === leader.identity);
        },
        15_000,
        "the leader's Event",
      );
      expect(await metric(leader, "phantomgate_operator_status_writes_total")).toBeGreaterThan(0);
      expect(await metric(follower, "phantomgate_operator_status_writes_total")).toBe(0);
      expect(await metric(follower, "phantomgate_operator_leader")).toBe(0);
      expect(await metric(leader, "phantomgate_operator_leader")).toBe(1);

      // Kill the leader without a chance to release: the follower takes over once the Lease runs out.
      const killedAt = Date.now();
      await leader.stop("SIGKILL");
      await eventually(async () => (await leaseHolder()) === follower.identity, 30_000, "takeover");
      const takeoverMs = Date.now() - killedAt;
      console.log(`leader takeover after ${takeoverMs} ms (lease duration ${leaseDurationMs} ms)`);
      // Lease duration + one retry period (1 s + 20 % jitter), plus slack for a loaded 2-core machine.
      expect(takeoverMs).toBeLessThan(leaseDurationMs + 1_200 + 3_000);
      await eventually(async () => (await readiness(follower)).leader, 10_000, "follower leading");

      // The new leader writes status.
      await kubectlApply(route("after-failover", "/after-failover"));
      await waitForStatus(routePath("after-failover"), (o) => conditionOf(o, "Accepted")?.status === "True");
      expect(await metric(follower, "phantomgate_operator_status_writes_total")).toBeGreaterThan(0);
    },
    testTimeoutMs,
  );
});
