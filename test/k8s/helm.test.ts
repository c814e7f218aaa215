// The Helm chart against a real kube-apiserver (no controller-manager: Deployments create no Pods). `helm
// install` must get every object accepted, webhook configuration included. The operator and two gateways then
// run as local processes with the chart's rendered flags, under the chart's ServiceAccount identities (tokens
// from the TokenRequest API), so the chart's RBAC is exercised for real: a missing permission shows up as a
// status never written, a caBundle never patched or a gateway never served. Then `helm upgrade` with changed
// values (narrowed to one watched namespace) and `helm uninstall` (CRDs and custom objects stay).
//
// What stands in for the cluster: the API server cannot dial Service ClusterIPs here, so the test points the
// webhook configuration at the operator's local URL (`--webhook-url`, which also puts 127.0.0.1 in the
// certificate) and gives the gateways https://127.0.0.1:<port> instead of the Service DNS name; everything else
// (names, flags, certificate Secret, CA file, token audience) is the chart's.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnReady, type ReadyChild } from "../../src/demo/spawn-ready.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import {
  controlPlaneGatewaySpec,
  eventually,
  startControlPlaneGateway,
  type ControlPlaneGateway,
} from "../helpers/control-plane-gateway.ts";
import { findFreePort, repoRoot, startTestCluster, type TestCluster } from "./harness/cluster.ts";
import {
  chartDir,
  containerOf,
  findDeployment,
  parseManifests,
  type Deployment,
  type K8sObject,
} from "./helm-chart.ts";

// The first run may build the Go binaries (tens of minutes on 2 cores) when globalSetup did not.
const startupTimeoutMs = 60 * 60_000;
const namespace = "phantomgate";
const appNamespace = "shop";
const release = "phantomgate";
const operatorAccount = "phantomgate-operator";
const gatewayAccount = "phantomgate-gateway";
const webhookConfiguration = "phantomgate-phantomgate";
const certificateSecret = "phantomgate-webhook-cert";
const bin = join(repoRoot, "bin/phantomgate.js");

let cluster: TestCluster | undefined;
let authServer: ReadyChild | undefined;
let echo: { server: Server; port: number } | undefined;
let operator: OperatorProcess | undefined;
const gateways: ControlPlaneGateway[] = [];
let issuer = "";
const work = mkdtempSync(join(tmpdir(), "phantomgate-helm-test-"));

const c = (): TestCluster => {
  if (cluster === undefined) throw new Error("cluster not started");
  return cluster;
};

beforeAll(async () => {
  cluster = await startTestCluster();
  await c().kubectl(["create", "namespace", namespace]);
  await c().kubectl(["create", "namespace", appNamespace]);
  authServer = await spawnReady(join(repoRoot, "src/demo/auth-server-main.ts"), ["--port", "0"]);
  issuer = String(authServer.ready["issuer"]);
  echo = await startEchoApi(0);
}, startupTimeoutMs);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await operator?.stop();
  await authServer?.stop();
  echo?.server.close();
  await cluster?.stop();
}, 60_000);

// ---- helpers -------------------------------------------------------------------------------------------

async function kubectlJson<T>(args: readonly string[]): Promise<T> {
  return JSON.parse((await c().kubectl([...args, "-o", "json"])).stdout) as T;
}

/** `kubectl auth can-i` as a ServiceAccount: true for "yes". */
async function canI(
  account: string,
  verb: string,
  resource: string,
  scope: readonly string[],
): Promise<boolean> {
  const result = await c().kubectl(
    ["auth", "can-i", verb, resource, ...scope, "--as", `system:serviceaccount:${namespace}:${account}`],
    { allowFailure: true },
  );
  return result.stdout.trim() === "yes";
}

/** A token of a chart ServiceAccount from the TokenRequest API. */
async function serviceAccountToken(account: string, audience?: string): Promise<string> {
  const args = ["create", "token", account, "-n", namespace, "--duration", "2h"];
  if (audience !== undefined) args.push("--audience", audience);
  return (await c().kubectl(args)).stdout.trim();
}

async function renderedDeployment(name: string): Promise<Deployment> {
  const manifest = (await c().helm(["get", "manifest", release, "-n", namespace])).stdout;
  return findDeployment(parseManifests(manifest), name);
}

/** The container args after the subcommand, with `$(POD_NAME)`-style references the test does not use dropped. */
function argsOf(deployment: Deployment): string[] {
  return (containerOf(deployment).args ?? []).slice(1);
}

/** Drops the given flags (both `--flag=value` and `--flag value` forms are rendered as `--flag=value`). */
function withoutFlags(args: readonly string[], flags: readonly string[]): string[] {
  return args.filter((arg) => !flags.some((flag) => arg === `--${flag}` || arg.startsWith(`--${flag}=`)));
}

interface OperatorProcess {
  readonly child: ChildProcess;
  readonly identity: string;
  readonly snapshotUrl: string;
  readonly metricsUrl: string;
  output(): string;
  stop(): Promise<void>;
}

/** `phantomgate operator` with the chart's rendered flags, under the operator ServiceAccount's token. */
async function startOperator(identity: string): Promise<OperatorProcess> {
  const kubeconfig = await c().writeTokenKubeconfig("operator", await serviceAccountToken(operatorAccount));
  const [snapshotPort, webhookPort, metricsPort] = [
    await findFreePort(),
    await findFreePort(),
    await findFreePort(),
  ];
  const chartArgs = argsOf(await renderedDeployment("phantomgate-operator"));
  const args = [
    bin,
    "operator",
    ...chartArgs,
    // Where a Pod would be: its ports on 127.0.0.1, the API server calling the webhook by URL.
    "--kubeconfig",
    kubeconfig,
    "--listen-host",
    "127.0.0.1",
    "--snapshot-port",
    String(snapshotPort),
    "--webhook-port",
    String(webhookPort),
    "--metrics-port",
    String(metricsPort),
    "--webhook-url",
    `https://127.0.0.1:${webhookPort}/validate`,
  ];
  const env = { ...process.env, POD_NAME: identity, POD_NAMESPACE: namespace };
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env });
  let output = "";
  const collect = (chunk: Buffer): void => {
    output += chunk.toString("utf8");
  };
  child.stderr.on("data", collect);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`operator did not start:\n${output}`)), 60_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`operator exited with ${code ?? "a signal"}:\n${output}`));
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      output += `${line}\n`;
      if (line.includes('"operator started"')) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve();
      }
    });
  });
  return {
    child,
    identity,
    snapshotUrl: `https://127.0.0.1:${snapshotPort}`,
    metricsUrl: `http://127.0.0.1:${metricsPort}`,
    output: () => output,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          resolve();
          return;
        }
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
        setTimeout(() => child.kill("SIGKILL"), 15_000).unref();
      }),
  };
}

const op = (): OperatorProcess => {
  if (operator === undefined) throw new Error("operator not started");
  return operator;
};

/** ca.crt of the operator's certificate Secret: what the kubelet mounts into gateway Pods. */
async function controlPlaneCaFile(): Promise<string> {
  const secret = await kubectlJson<{ data: Record<string, string> }>([
    "get",
    "secret",
    certificateSecret,
    "-n",
    namespace,
  ]);
  const file = join(work, "control-plane-ca.crt");
  writeFileSync(file, Buffer.from(secret.data["ca.crt"] ?? "", "base64"));
  return file;
}

/** `phantomgate gateway` with the chart's rendered flags, under the gateway ServiceAccount's projected token. */
async function startGateway(name: string, token: string): Promise<ControlPlaneGateway> {
  const spec = controlPlaneGatewaySpec(name, op().snapshotUrl, token);
  // The harness passes control plane, token file, name, state dir and local ports; the rest is the chart's.
  const chartArgs = withoutFlags(argsOf(await renderedDeployment("phantomgate-gateway")), [
    "control-plane",
    "control-plane-token-file",
    "control-plane-ca-file",
    "gateway-name",
    "state-dir",
    "host",
    "port",
    "admin-host",
    "admin-port",
    "audit-log",
  ]);
  const gateway = await startControlPlaneGateway({
    ...spec,
    extraArgs: [...chartArgs, "--control-plane-ca-file", await controlPlaneCaFile()],
  });
  gateways.push(gateway);
  return gateway;
}

async function accessToken(scope: string): Promise<string> {
  const response = await fetch(`${issuer}/token`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from("demo-client:demo-secret").toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ grant_type: "client_credentials", scope }),
  });
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  return ((await response.json()) as { access_token: string }).access_token;
}

async function statusOf(gateway: ControlPlaneGateway, path: string, token: string): Promise<number> {
  const response = await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

async function conditionOf(kind: string, name: string, type: string): Promise<Condition | undefined> {
  const object = await kubectlJson<{ status?: { conditions?: Condition[] } }>([
    "get",
    kind,
    name,
    "-n",
    appNamespace,
  ]);
  return object.status?.conditions?.find((condition) => condition.type === type);
}

/** GET over TLS with a CA and a bearer token; resolves the status code (the stream is not read). */
function getStatus(url: string, ca: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      { ca, headers: { authorization: `Bearer ${token}` }, timeout: 10_000 },
      (res) => {
        resolve(res.statusCode ?? 0);
        res.destroy();
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

/** POST of a JSON body over TLS with a CA and a bearer token. */
function postJson(
  url: string,
  ca: string,
  token: string,
  body: unknown,
): Promise<{ status: number; body: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      {
        method: "POST",
        ca,
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
        },
        timeout: 10_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end(payload);
  });
}

/** The admin (not the operator) points the webhook at the local operator: a stand-in for Service routing. */
async function pointWebhookAt(clientConfig: "url" | "service"): Promise<void> {
  const configuration = await kubectlJson<{ webhooks: { clientConfig: Record<string, unknown> }[] }>([
    "get",
    "validatingwebhookconfiguration",
    webhookConfiguration,
  ]);
  const webhookPort = /--webhook-url https:\/\/127\.0\.0\.1:(\d+)/.exec(op().child.spawnargs.join(" "))?.[1];
  const patch = configuration.webhooks.map((webhook, index) => {
    const { service: _service, url: _url, ...rest } = webhook.clientConfig;
    const target =
      clientConfig === "url"
        ? { url: `https://127.0.0.1:${webhookPort ?? "0"}/validate` }
        : { service: { namespace, name: "phantomgate-operator", port: 443, path: "/validate" } };
    return { op: "replace", path: `/webhooks/${index}/clientConfig`, value: { ...rest, ...target } };
  });
  await c().kubectl([
    "patch",
    "validatingwebhookconfiguration",
    webhookConfiguration,
    "--type=json",
    "-p",
    JSON.stringify(patch),
  ]);
}

const routesYaml = (requiredScope: string, pathPrefix = "/echo"): string => `
apiVersion: v1
kind: Secret
metadata: { name: gateway-client, namespace: ${appNamespace} }
stringData: { client-secret: gateway-secret }
---
apiVersion: phantomgate.dev/v1alpha1
kind: AuthServer
metadata: { name: demo, namespace: ${appNamespace} }
spec:
  issuer: ${issuer}
  clientAuthentication:
    clientId: gateway
    clientSecret: { secretRef: { name: gateway-client, key: client-secret } }
  introspection: { responseType: jwt }
---
apiVersion: phantomgate.dev/v1alpha1
kind: ScopePolicy
metadata: { name: billing, namespace: ${appNamespace} }
spec:
  domain: billing
  scopes:
    - name: read_invoice
    - name: write_invoice
      implies: [read_invoice]
---
apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata: { name: echo, namespace: ${appNamespace} }
spec:
  authServerRef: { name: demo }
  scopePolicyRefs: [{ name: billing }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: ${pathPrefix} } }]
      authentication: { mode: phantom }
      requiredScopes: { allOf: [${requiredScope}] }
      backendRefs: [{ url: "http://127.0.0.1:${echo?.port ?? 0}" }]
`;

// ---- tests ---------------------------------------------------------------------------------------------

describe("helm install into a real API server", () => {
  it("accepts every object of the release, webhook configuration and CRDs included", async () => {
    const installed = await c().helm(["install", release, chartDir, "-n", namespace]);
    expect(installed.stdout).toContain("STATUS: deployed");
    // NOTES.txt
    expect(installed.stdout).toContain(
      `kubectl -n ${namespace} rollout status deployment/phantomgate-operator`,
    );

    const manifest = (await c().helm(["get", "manifest", release, "-n", namespace])).stdout;
    const objects = parseManifests(manifest);
    const kinds = new Set(objects.map((o) => o.kind));
    for (const kind of [
      "Deployment",
      "Service",
      "ServiceAccount",
      "ClusterRole",
      "ClusterRoleBinding",
      "Role",
      "RoleBinding",
      "PodDisruptionBudget",
      "ValidatingWebhookConfiguration",
    ]) {
      expect(kinds, kind).toContain(kind);
    }
    for (const object of objects) {
      const scope = object.metadata.namespace === undefined ? [] : ["-n", object.metadata.namespace];
      const group = groupOf(object);
      const resource = group === "" ? object.kind : `${object.kind}.${group}`;
      const live = await kubectlJson<K8sObject>(["get", resource, object.metadata.name, ...scope]);
      expect(
        live.metadata.labels?.["app.kubernetes.io/instance"],
        `${object.kind}/${object.metadata.name}`,
      ).toBe(release);
    }
    for (const crd of ["apiroutes", "scopepolicies", "authservers"]) {
      await c().kubectl([
        "wait",
        "--for=condition=Established",
        `crd/${crd}.phantomgate.dev`,
        "--timeout=60s",
      ]);
    }
    // The Pods would be admitted by Pod Security "restricted": a server-side dry run of the Pod templates.
    await c().kubectl(["label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"]);
    for (const name of ["phantomgate-operator", "phantomgate-gateway"]) {
      const deployment = findDeployment(objects, name);
      const pod = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: `${name}-dry-run`, namespace },
        spec: deployment.spec.template.spec,
      };
      const result = await c().kubectl(["create", "--dry-run=server", "-f", "-", "-o", "name"], {
        input: JSON.stringify(pod),
        allowFailure: true,
      });
      expect(result.stderr, name).not.toMatch(/violates PodSecurity/);
      expect(result.exitCode, result.stderr).toBe(0);
    }
    // The kind e2e's demo manifests pass the API server's validation and Pod Security too (server-side dry run).
    const demo = readFileSync(join(repoRoot, "test/e2e/demo.yaml"), "utf8").replaceAll(
      "__IMAGE__",
      "phantomgate:e2e",
    );
    await c().kubectl(["create", "namespace", "phantomgate-demo"]);
    await c().kubectl([
      "label",
      "namespace",
      "phantomgate-demo",
      "pod-security.kubernetes.io/enforce=restricted",
    ]);
    const dryRun = await c().kubectl(["apply", "--dry-run=server", "-f", "-"], {
      input: demo,
      allowFailure: true,
    });
    expect(dryRun.exitCode, dryRun.stderr).toBe(0);
    expect(dryRun.stderr).not.toMatch(/PodSecurity|violat/);
  });

  it("gives the gateway ServiceAccount nothing: kubectl auth can-i", async () => {
    for (const [verb, resource] of [
      ["get", "secrets"],
      ["list", "secrets"],
      ["get", "apiroutes.phantomgate.dev"],
      ["list", "scopepolicies.phantomgate.dev"],
      ["watch", "authservers.phantomgate.dev"],
      ["create", "tokenreviews.authentication.k8s.io"],
      ["get", "leases.coordination.k8s.io"],
    ] as const) {
      for (const scope of [["-n", namespace], ["-n", appNamespace], ["--all-namespaces"]]) {
        expect(
          await canI(gatewayAccount, verb, resource, scope),
          `${verb} ${resource} ${scope.join(" ")}`,
        ).toBe(false);
      }
    }
  });

  it("gives the operator what permissions.ts lists and no more", async () => {
    const all = ["--all-namespaces"];
    expect(await canI(operatorAccount, "watch", "apiroutes.phantomgate.dev", all)).toBe(true);
    expect(
      await canI(operatorAccount, "patch", "apiroutes.phantomgate.dev", [
        "-n",
        appNamespace,
        "--subresource=status",
      ]),
    ).toBe(true);
    expect(await canI(operatorAccount, "list", "secrets", all)).toBe(true);
    expect(await canI(operatorAccount, "create", "tokenreviews.authentication.k8s.io", [])).toBe(true);
    expect(
      await canI(operatorAccount, "patch", `validatingwebhookconfigurations/${webhookConfiguration}`, []),
    ).toBe(true);
    // Not granted:
    expect(await canI(operatorAccount, "update", "apiroutes.phantomgate.dev", ["-n", appNamespace])).toBe(
      false,
    );
    expect(await canI(operatorAccount, "patch", "apiroutes.phantomgate.dev", ["-n", appNamespace])).toBe(
      false,
    );
    expect(await canI(operatorAccount, "delete", "apiroutes.phantomgate.dev", ["-n", appNamespace])).toBe(
      false,
    );
    expect(await canI(operatorAccount, "get", "secrets", ["-n", appNamespace])).toBe(false);
    expect(await canI(operatorAccount, "create", "secrets", ["-n", appNamespace])).toBe(false);
    expect(await canI(operatorAccount, "update", "secrets/gateway-client", ["-n", appNamespace])).toBe(false);
    expect(await canI(operatorAccount, "patch", "validatingwebhookconfigurations/someone-elses", [])).toBe(
      false,
    );
    expect(await canI(operatorAccount, "create", "leases.coordination.k8s.io", ["-n", appNamespace])).toBe(
      false,
    );
    expect(await canI(operatorAccount, "create", "pods", ["-n", namespace])).toBe(false);
  });
});

describe("the operator and gateways under the chart's identities", () => {
  it("the operator starts, issues its certificate, sets the caBundle and takes the Lease", async () => {
    operator = await startOperator("phantomgate-operator-7d9f-a");
    await pointWebhookAt("url");
    await eventually(
      async () => (await fetch(`${op().metricsUrl}/readyz`)).status === 200,
      60_000,
      "operator ready",
    );
    const secret = await kubectlJson<{ type: string; data: Record<string, string> }>([
      "get",
      "secret",
      certificateSecret,
      "-n",
      namespace,
    ]);
    expect(secret.type).toBe("kubernetes.io/tls");
    expect(Object.keys(secret.data).sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    await eventually(
      async () => {
        const configuration = await kubectlJson<{ webhooks: { clientConfig: { caBundle?: string } }[] }>([
          "get",
          "validatingwebhookconfiguration",
          webhookConfiguration,
        ]);
        return configuration.webhooks.every((w) => (w.clientConfig.caBundle ?? "") !== "");
      },
      30_000,
      "caBundle patched by the operator",
    );
    await eventually(
      async () => {
        const lease = await kubectlJson<{ spec?: { holderIdentity?: string } }>([
          "get",
          "lease",
          "phantomgate-operator",
          "-n",
          namespace,
        ]);
        return lease.spec?.holderIdentity === op().identity;
      },
      30_000,
      "Lease held",
    );
  });

  it("the webhook (TLS, caBundle from the operator) rejects a route with an unknown scope at kubectl apply", async () => {
    await c().kubectl(["apply", "-f", "-"], { input: routesYaml("read_invoice") });
    const rejected = await c().kubectl(["apply", "-f", "-"], {
      input: routesYaml("read_invoices")
        .replace("name: echo,", "name: echo-typo,")
        .replace("value: /echo }", "value: /typo }"),
      allowFailure: true,
    });
    expect(rejected.exitCode).not.toBe(0);
    expect(rejected.stderr).toContain("validate.phantomgate.dev");
    expect(rejected.stderr).toContain("read_invoices");
  });

  it("gateways stream with the gateway ServiceAccount's projected token, serve the route, and status says so", async () => {
    const token = await serviceAccountToken(gatewayAccount, "phantomgate");
    const [first, second] = [
      await startGateway("phantomgate-gateway-5c8d-a", token),
      await startGateway("phantomgate-gateway-5c8d-b", token),
    ];
    const read = await accessToken("read_invoice");
    for (const gateway of [first, second]) {
      await eventually(
        async () => (await statusOf(gateway, "/echo/hello", read)) === 200,
        30_000,
        "route served",
      );
      expect(await statusOf(gateway, "/echo/hello", "not-a-token")).toBe(401);
    }
    await eventually(
      async () => {
        const accepted = await conditionOf("apiroute", "echo", "Accepted");
        const programmed = await conditionOf("apiroute", "echo", "Programmed");
        return (
          accepted?.status === "True" && programmed?.status === "True" && /2\/2/.test(programmed.message)
        );
      },
      30_000,
      "ApiRoute Accepted and Programmed on 2/2 gateways (status written under the chart's RBAC)",
    );
  });

  it("the snapshot service refuses a token of another ServiceAccount, and one without the audience", async () => {
    const ca = Buffer.from(
      (
        await kubectlJson<{ data: Record<string, string> }>([
          "get",
          "secret",
          certificateSecret,
          "-n",
          namespace,
        ])
      ).data["ca.crt"] ?? "",
      "base64",
    ).toString("utf8");
    const stream = `${op().snapshotUrl}/v1/stream?gateway=intruder`;
    expect(await getStatus(stream, ca, await serviceAccountToken(operatorAccount, "phantomgate"))).toBe(403);
    expect(await getStatus(stream, ca, await serviceAccountToken(gatewayAccount))).toBe(401);
  });
});

describe("a second release with the example objects", () => {
  it("installs beside the first (cluster-scoped names differ), and the operator accepts its examples", async () => {
    // Its own webhook configuration is off; the first release's webhook (all namespaces) judges the examples,
    // which the chart creates as post-install hooks once the release's objects exist.
    const installed = await c().helm([
      "install",
      "demo",
      chartDir,
      "-n",
      "examples",
      "--create-namespace",
      "--set",
      "operator.webhook.enabled=false",
      "--set",
      "examples.enabled=true",
      "--set",
      "examples.authServer.clientSecret=s3cret",
      // The default /echo is taken by shop/echo: the webhook would (rightly) refuse a second claim.
      "--set",
      "examples.route.pathPrefix=/example",
    ]);
    expect(installed.stdout).toContain("STATUS: deployed");
    await c().kubectl(["get", "clusterrole", "demo-phantomgate-examples-operator"]);
    await eventually(
      async () => {
        const object = await kubectlJson<{ status?: { conditions?: Condition[] } }>([
          "get",
          "apiroute",
          "demo-phantomgate-example",
          "-n",
          "examples",
        ]);
        return object.status?.conditions?.find((x) => x.type === "Accepted")?.status === "True";
      },
      30_000,
      "example ApiRoute Accepted",
    );
    await c().helm(["uninstall", "demo", "-n", "examples"]);
    // Hooks outlive the release, as docs/upgrading.md says.
    await c().kubectl(["get", "apiroute", "demo-phantomgate-example", "-n", "examples"]);
    await c().kubectl([
      "delete",
      "apiroutes,scopepolicies,authservers,secrets",
      "-n",
      "examples",
      "-l",
      "app.kubernetes.io/component=example",
    ]);
  });
});

describe("revocations through the chart's revoker ClusterRole", () => {
  it("a ServiceAccount bound to it in the operator's namespace revokes on every gateway; an unbound one may not", async () => {
    const ca = Buffer.from(
      (
        await kubectlJson<{ data: Record<string, string> }>([
          "get",
          "secret",
          certificateSecret,
          "-n",
          namespace,
        ])
      ).data["ca.crt"] ?? "",
      "base64",
    ).toString("utf8");
    await c().kubectl(["create", "serviceaccount", "revoker", "-n", appNamespace]);
    await c().kubectl(["create", "serviceaccount", "bystander", "-n", appNamespace]);
    // docs/install.md, "Revocation": a RoleBinding in the operator's namespace to the chart's ClusterRole.
    await c().kubectl([
      "create",
      "rolebinding",
      "shop-revoker",
      "-n",
      namespace,
      "--clusterrole=phantomgate-phantomgate-revoker",
      `--serviceaccount=${appNamespace}:revoker`,
    ]);
    const tokenOf = async (account: string): Promise<string> =>
      (
        await c().kubectl([
          "create",
          "token",
          account,
          "-n",
          appNamespace,
          "--audience",
          "phantomgate",
          "--duration",
          "1h",
        ])
      ).stdout.trim();
    const revoke = (token: string): Promise<{ status: number; body: string }> =>
      postJson(`${op().snapshotUrl}/v1/revocations`, ca, token, { tokens: [`revoked-${Date.now()}`] });
    const revokerToken = await tokenOf("revoker");
    await eventually(
      async () => {
        const allowed = await revoke(revokerToken);
        if (allowed.status !== 202) throw new Error(`${allowed.status} ${allowed.body}`);
        return (JSON.parse(allowed.body) as { gateways: number }).gateways === 2;
      },
      30_000,
      "revocation fanned out to both gateways (SubjectAccessReview under the chart's RBAC)",
    );
    expect((await revoke(await tokenOf("bystander"))).status).toBe(403);
  });
});

describe("helm upgrade and uninstall", () => {
  it("upgrade with changed values: replicas, failurePolicy, one watched namespace; the caBundle survives", async () => {
    // Helm restores the chart's clientConfig (the Service); the operator's caBundle is not the chart's to touch.
    await pointWebhookAt("service");
    await c().helm([
      "upgrade",
      release,
      chartDir,
      "-n",
      namespace,
      "--set",
      "gateway.replicas=3",
      "--set",
      "operator.webhook.failurePolicy=Ignore",
      "--set",
      `operator.watchNamespaces={${appNamespace}}`,
    ]);
    const gatewayDeployment = await kubectlJson<Deployment>([
      "get",
      "deployment",
      "phantomgate-gateway",
      "-n",
      namespace,
    ]);
    expect(gatewayDeployment.spec.replicas).toBe(3);
    const configuration = await kubectlJson<{
      webhooks: { name: string; failurePolicy: string; clientConfig: { caBundle?: string } }[];
    }>(["get", "validatingwebhookconfiguration", webhookConfiguration]);
    expect(configuration.webhooks.find((w) => w.name === "validate.phantomgate.dev")?.failurePolicy).toBe(
      "Ignore",
    );
    for (const webhook of configuration.webhooks) expect(webhook.clientConfig.caBundle ?? "").not.toBe("");
    // Cluster-wide reads are gone; the watched namespace has its own Role.
    expect(await canI(operatorAccount, "list", "secrets", ["--all-namespaces"])).toBe(false);
    expect(await canI(operatorAccount, "list", "secrets", ["-n", appNamespace])).toBe(true);
    expect(await canI(operatorAccount, "watch", "apiroutes.phantomgate.dev", ["-n", "default"])).toBe(false);
    expect(argsOf(await renderedDeployment("phantomgate-operator"))).toContain(
      `--namespaces=${appNamespace}`,
    );
  });

  it("the upgraded operator (new flags, narrowed RBAC) serves a changed route to the fleet", async () => {
    // A new operator Pod replaces the old one: the gateways reconnect to it.
    await op().stop();
    operator = await startOperator("phantomgate-operator-8e1a-a");
    await pointWebhookAt("url");
    await eventually(
      async () => (await fetch(`${op().metricsUrl}/readyz`)).status === 200,
      60_000,
      "operator ready",
    );
    // The gateways dial the old port where a Service would route them to the new Pod: restart them on the new
    // URL (new Pods of a rollout).
    const token = await serviceAccountToken(gatewayAccount, "phantomgate");
    const names = gateways.map((g) => g.spec.name);
    await Promise.all(gateways.map((g) => g.stop()));
    gateways.length = 0;
    const restarted: ControlPlaneGateway[] = [];
    for (const name of names) restarted.push(await startGateway(name, token));

    await c().kubectl(["apply", "-f", "-"], { input: routesYaml("write_invoice") });
    const read = await accessToken("read_invoice");
    const write = await accessToken("write_invoice");
    for (const gateway of restarted) {
      await eventually(
        async () => (await statusOf(gateway, "/echo/hello", read)) === 403,
        30_000,
        "changed route served",
      );
      expect(await statusOf(gateway, "/echo/hello", write)).toBe(200);
    }
    await eventually(
      async () => {
        const programmed = await conditionOf("apiroute", "echo", "Programmed");
        return programmed?.status === "True" && /2\/2/.test(programmed.message);
      },
      30_000,
      "Programmed written by the upgraded operator",
    );
  });

  it("turning the HPA on keeps the gateways' count, and a later upgrade keeps what the HPA chose", async () => {
    const replicas = async () =>
      (await kubectlJson<Deployment>(["get", "deployment", "phantomgate-gateway", "-n", namespace])).spec
        .replicas;
    expect(await replicas()).toBe(3);
    await pointWebhookAt("service"); // Helm's three-way merge would otherwise leave both url and service
    // gateway.replicas no longer counts under the HPA; its maximum does, for the NOTES' mint-key advice.
    const upgraded = await c().helm([
      "upgrade",
      release,
      chartDir,
      "-n",
      namespace,
      "--reuse-values",
      "--set",
      "gateway.autoscaling.enabled=true",
      "--set",
      "gateway.replicas=1",
    ]);
    expect(await replicas()).toBe(3);
    expect(upgraded.stdout).toContain("gateway.mintKey.existingSecret when more than one gateway runs");
    const hpa = await kubectlJson<{ spec: { minReplicas: number; maxReplicas: number } }>([
      "get",
      "hpa",
      "phantomgate-gateway",
      "-n",
      namespace,
    ]);
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 10 });
    // The HPA scales out (kubectl scale stands in for it: no controller-manager here); an upgrade keeps that.
    await c().kubectl(["scale", "deployment", "phantomgate-gateway", "-n", namespace, "--replicas=6"]);
    await c().helm(["upgrade", release, chartDir, "-n", namespace, "--reuse-values"]);
    expect(await replicas()).toBe(6);
  });

  it("uninstall removes the release's objects and keeps the CRDs and the custom objects", async () => {
    await Promise.all(gateways.map((g) => g.stop()));
    gateways.length = 0;
    await op().stop();
    operator = undefined;
    await c().helm(["uninstall", release, "-n", namespace]);
    for (const [kind, name, scope] of [
      ["deployment", "phantomgate-operator", ["-n", namespace]],
      ["deployment", "phantomgate-gateway", ["-n", namespace]],
      ["serviceaccount", gatewayAccount, ["-n", namespace]],
      ["clusterrole", "phantomgate-phantomgate-operator", []],
      ["validatingwebhookconfiguration", webhookConfiguration, []],
    ] as const) {
      const result = await c().kubectl(["get", kind, name, ...scope], { allowFailure: true });
      expect(result.stderr, `${kind}/${name}`).toContain("NotFound");
    }
    for (const crd of ["apiroutes", "scopepolicies", "authservers"]) {
      await c().kubectl(["get", "crd", `${crd}.phantomgate.dev`]);
    }
    await c().kubectl(["get", "apiroute", "echo", "-n", appNamespace]);
  });
});

function groupOf(object: K8sObject): string {
  const slash = object.apiVersion.indexOf("/");
  return slash === -1 ? "" : object.apiVersion.slice(0, slash);
}
