// The validating admission webhook against a real kube-apiserver: kubectl apply is rejected with compile's
// message, the certificate manager issues and rotates the serving certificate and keeps the caBundle
// current, and failurePolicy decides what happens while the webhook is down.
import { connect as tlsConnect } from "node:tls";
import { X509Certificate } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import {
  ADD,
  CoreV1Api,
  CustomObjectsApi,
  DELETE,
  ERROR,
  KubeConfig,
  makeInformer,
  UPDATE,
  V1Secret,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import type { SourceObject } from "../../src/compile/compile.ts";
import {
  startCertificateManager,
  type CertificateManager,
} from "../../src/operator/webhook/certificate-manager.ts";
import { loadCertificateFromSecret } from "../../src/operator/webhook/certificate-secret.ts";
import { issueServingCertificate } from "../../src/operator/webhook/certificate.ts";
import { startWebhookServer, webhookPath, type WebhookServer } from "../../src/operator/webhook/server.ts";
import { buildValidatingWebhookConfiguration } from "../../src/operator/webhook/webhook-configuration.ts";
import { repoRoot, startTestCluster, type TestCluster } from "./harness/cluster.ts";

// The first run may build the Go binaries (tens of minutes on 2 cores) when globalSetup did not.
const startupTimeoutMs = 60 * 60_000;
const logger = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });
const group = "phantomgate.dev";
const version = "v1alpha1";
const namespace = "shop";
const operatorNamespace = "pg-system";
const configurationName = "phantomgate-webhook-test";
const secretName = "phantomgate-webhook-tls";
const dayMs = 24 * 60 * 60 * 1000;

let cluster: TestCluster | undefined;
let kubeConfig: KubeConfig;
let store: TestStore | undefined;
let manager: CertificateManager | undefined;
let server: WebhookServer | undefined;
let clockOffsetMs = 0;
const rotations: string[] = [];

const c = (): TestCluster => {
  if (cluster === undefined) throw new Error("cluster not started");
  return cluster;
};
const certificates = (): CertificateManager => {
  if (manager === undefined) throw new Error("certificate manager not started");
  return manager;
};

beforeAll(async () => {
  cluster = await startTestCluster();
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(cluster.kubeconfigPath);

  const crds = readdirSync(join(repoRoot, "crds")).filter((file) => file.endsWith(".yaml"));
  if (crds.length < 3) throw new Error("crds/*.yaml missing: run `make crds` first");
  await cluster.kubectl(["apply", "-f", join(repoRoot, "crds")]);
  await cluster.kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
  await cluster.kubectl(["create", "namespace", namespace]);
  await cluster.kubectl(["create", "namespace", operatorNamespace]);

  store = await startTestStore(kubeConfig);
  // The configuration does not exist yet: the manager issues the certificate and patches the caBundle later.
  manager = await startCertificateManager({
    kubeConfig,
    namespace: operatorNamespace,
    secretName,
    webhookConfigurationName: configurationName,
    dnsNames: ["phantomgate-webhook", "phantomgate-webhook.pg-system.svc"],
    ipAddresses: ["127.0.0.1"],
    validityDays: 30,
    renewBeforeDays: 7,
    logger,
    now: () => new Date(Date.now() + clockOffsetMs),
    resyncIntervalMs: 500,
    caBundlePropagationMs: 300,
    onRotate: (tls) => rotations.push(fingerprint(tls.cert)),
  });
  const tls = manager;
  server = await startWebhookServer({
    host: "127.0.0.1",
    port: 0,
    tls: () => tls.current(),
    world: store.world,
    logger,
  });
  // Registered without a caBundle, as a chart would install it; the manager fills it in.
  const configuration = buildValidatingWebhookConfiguration({
    name: configurationName,
    failurePolicy: "Fail",
    url: `https://127.0.0.1:${server.port}${webhookPath}`,
    caBundle: "",
    namespaces: [namespace],
  });
  await cluster.kubectl(["create", "-f", "-"], { input: JSON.stringify(configuration) });
}, startupTimeoutMs);

afterAll(async () => {
  manager?.close();
  await server?.close();
  await store?.stop();
  await cluster?.stop();
}, 60_000);

describe("admission webhook on a real API server", () => {
  it("gets its caBundle patched by the certificate manager, from the certificate in the Secret", async () => {
    await eventually(async () => expect(await readCaBundles()).toEqual([certificates().current().caBundle]));
    const secret = await kubeConfig
      .makeApiClient(CoreV1Api)
      .readNamespacedSecret({ namespace: operatorNamespace, name: secretName });
    expect(secret.type).toBe("kubernetes.io/tls");
    const decoded = (key: string) => Buffer.from(secret.data?.[key] ?? "", "base64").toString("utf8");
    expect(decoded("tls.crt")).toBe(certificates().current().cert);
    expect(decoded("ca.crt")).toBe(certificates().current().caBundle);
    expect(new X509Certificate(decoded("tls.crt")).subjectAltName).toContain("IP Address:127.0.0.1");
    // The API server picks the configuration up asynchronously: wait until it calls the webhook.
    await eventually(async () => {
      const probe = await apply([route("probe", { policies: ["does-not-exist"] })], ["--dry-run=server"]);
      expect(probe.stderr).toContain('admission webhook "validate.phantomgate.dev" denied the request');
    });
  });

  it("accepts good objects, and a ScopePolicy and its route applied together", async () => {
    const result = await apply([
      scopePolicy("billing", ["read_invoice", "write_invoice"]),
      authServer("as"),
      route("orders"),
    ]);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain("apiroute.phantomgate.dev/orders created");
    await eventually(() => expect(store?.has("ApiRoute", "orders")).toBe(true));
  });

  it("rejects a route that conflicts with an older one, with compile's message and reason", async () => {
    const result = await apply([route("orders-copy", { methods: ["GET", "POST"] })]);
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain("Error from server (Conflicted)");
    expect(result.stderr).toContain(
      'admission webhook "validate.phantomgate.dev" denied the request: spec.rules[0].matches[0]: host ' +
        "api.example.com, PathPrefix /orders, GET is already claimed by the older ApiRoute shop/orders " +
        "(spec.rules[0].matches[0])",
    );
    expect(await exists("apiroute", "orders-copy")).toBe(false);
  });

  it("rejects a route with an unknown scope, ScopePolicy or AuthServer", async () => {
    const unknownScope = await apply([route("refunds", { path: "/refunds", scopes: ["refund_invoice"] })]);
    expect(unknownScope.stderr).toContain("Error from server (UnknownScope)");
    expect(unknownScope.stderr).toContain(
      "denied the request: spec.rules[0].requiredScopes.allOf[0]: scope 'refund_invoice' is not defined in " +
        "ScopePolicy shop/billing",
    );

    const unknownPolicy = await apply([
      route("refunds", { path: "/refunds", policies: ["billing", "refunds"] }),
    ]);
    expect(unknownPolicy.stderr).toContain("Error from server (UnknownScopePolicy)");
    expect(unknownPolicy.stderr).toContain(
      "denied the request: spec.scopePolicyRefs[1]: ScopePolicy shop/refunds not found",
    );

    const unknownServer = await apply([route("refunds", { path: "/refunds", authServer: "other-as" })]);
    expect(unknownServer.stderr).toContain("Error from server (UnknownAuthServer)");
    expect(unknownServer.stderr).toContain(
      "denied the request: spec.authServerRef: AuthServer shop/other-as not found",
    );
    for (const result of [unknownScope, unknownPolicy, unknownServer]) expect(result.exitCode).not.toBe(0);
    expect(await exists("apiroute", "refunds")).toBe(false);
  });

  it("rejects an update that breaks the route itself, allows one that does not", async () => {
    const broken = await apply([route("orders", { scopes: ["read_invoice", "nope"] })]);
    expect(broken.exitCode).not.toBe(0);
    expect(broken.stderr).toContain("error when applying patch");
    expect(broken.stderr).toContain("spec.rules[0].requiredScopes.allOf[1]: scope 'nope' is not defined");

    const fine = await apply([route("orders", { methods: ["GET", "HEAD"] })]);
    expect(fine.exitCode, fine.stderr).toBe(0);
    expect(fine.stdout).toContain("apiroute.phantomgate.dev/orders configured");
  });

  it("accepts a renamed route: deleted and re-created under a new name straight away", async () => {
    expect((await apply([route("legacy", { path: "/legacy" })])).exitCode).toBe(0);
    await eventually(() => expect(store?.has("ApiRoute", "legacy")).toBe(true));
    await c().kubectl(["delete", "apiroute", "legacy", "-n", namespace]);
    // The store may still hold "legacy" for a moment: the webhook re-checks the conflict before denying.
    const renamed = await apply([route("legacy-v2", { path: "/legacy" })]);
    expect(renamed.exitCode, renamed.stderr).toBe(0);
  });

  it("allows deleting a ScopePolicy that a route uses, and warns which routes break", async () => {
    await apply([
      scopePolicy("spare", ["x"]),
      route("spare-route", { path: "/spare", policies: ["spare"], scopes: ["x"] }),
    ]);
    await eventually(() => expect(store?.has("ApiRoute", "spare-route")).toBe(true));
    const deleted = await c().kubectl(["delete", "scopepolicy", "spare", "-n", namespace], {
      allowFailure: true,
    });
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(deleted.stderr).toContain(
      "Warning: ApiRoute shop/spare-route is rejected after this change (UnknownScopePolicy): " +
        "spec.scopePolicyRefs[0]: ScopePolicy shop/spare not found",
    );
  });

  it("loads a certificate that something else issues into a Secret, and follows its renewal", async () => {
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const issue = async () => {
      const issued = await issueServingCertificate({ dnsNames: ["x.pg-system.svc"], validityDays: 1 });
      return {
        "tls.crt": Buffer.from(issued.cert).toString("base64"),
        "tls.key": Buffer.from(issued.key).toString("base64"),
        "ca.crt": Buffer.from(issued.ca).toString("base64"),
      };
    };
    const secret = async () =>
      Object.assign(new V1Secret(), {
        metadata: { name: "external-tls", namespace: operatorNamespace },
        type: "kubernetes.io/tls",
        data: await issue(),
      });
    await core.createNamespacedSecret({
      namespace: operatorNamespace,
      body: await secret(),
    });
    const changes: string[] = [];
    const source = await loadCertificateFromSecret({
      kubeConfig,
      namespace: operatorNamespace,
      secretName: "external-tls",
      logger,
      resyncIntervalMs: 200,
      onRotate: (tls) => changes.push(tls.cert),
    });
    try {
      const first = source.current();
      expect(first.cert).toContain("BEGIN CERTIFICATE");
      await core.replaceNamespacedSecret({
        namespace: operatorNamespace,
        name: "external-tls",
        body: await secret(),
      });
      await eventually(() => expect(changes).toHaveLength(1));
      expect(source.current().cert).toBe(changes[0]);
      expect(source.current().cert).not.toBe(first.cert);
    } finally {
      source.close();
    }
  });

  it("without a configuration name (webhook off, snapshot TLS only) issues its certificate and leaves every caBundle alone", async () => {
    const bundles = await readCaBundles();
    const snapshotOnly = await startCertificateManager({
      kubeConfig,
      namespace: operatorNamespace,
      secretName: "snapshot-only-tls",
      dnsNames: ["phantomgate-operator.pg-system.svc"],
      logger,
      resyncIntervalMs: 100,
    });
    try {
      expect(snapshotOnly.current().caBundle).not.toBe(certificates().current().caBundle);
      await snapshotOnly.rotate();
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await readCaBundles()).toEqual(bundles);
    } finally {
      snapshotOnly.close();
    }
  });

  it("rotates on request: new certificate served, caBundle re-patched with both CAs, apply still judged", async () => {
    const before = certificates().current();
    await certificates().rotate();
    const after = certificates().current();
    expect(after.cert).not.toBe(before.cert);
    expect(rotations.at(-1)).toBe(fingerprint(after.cert));
    expect(await readCaBundles()).toEqual([after.caBundle]);
    expect(after.caBundle.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(after.caBundle.endsWith(firstCertificate(before.caBundle))).toBe(true);
    expect(await servedFingerprint()).toBe(fingerprint(after.cert));
    await expectStillJudged("rotated");
  });

  it("renews before expiry on its own clock, and apply keeps working", async () => {
    const before = certificates().current();
    // 24 of 30 days later, the 7-day renewal window has begun.
    clockOffsetMs = 24 * dayMs;
    try {
      await eventually(() => expect(certificates().current().cert).not.toBe(before.cert));
    } finally {
      clockOffsetMs = 0;
    }
    await eventually(async () => expect(await readCaBundles()).toEqual([certificates().current().caBundle]));
    await eventually(async () =>
      expect(await servedFingerprint()).toBe(fingerprint(certificates().current().cert)),
    );
    await expectStillJudged("renewed");
  });

  it("with failurePolicy Ignore and the webhook down, a bad route gets in; with Fail it is rejected", async () => {
    await server?.close();
    server = undefined;
    await setFailurePolicy("Ignore");
    const gotIn = await eventually(async () => {
      const result = await apply([route("sneaky", { path: "/sneaky", scopes: ["nope"] })]);
      expect(result.exitCode, result.stderr).toBe(0);
      return result;
    });
    expect(gotIn.stdout).toContain("apiroute.phantomgate.dev/sneaky created");
    expect(await exists("apiroute", "sneaky")).toBe(true);

    await setFailurePolicy("Fail");
    const rejected = await eventually(async () => {
      const result = await apply([route("blocked", { path: "/blocked" })]);
      expect(result.exitCode).not.toBe(0);
      return result;
    });
    expect(rejected.stderr).toContain('failed calling webhook "validate.phantomgate.dev"');
    expect(await exists("apiroute", "blocked")).toBe(false);
  });
});

// ---- helpers -------------------------------------------------------------------------------------------

interface RouteOptions {
  readonly path?: string;
  readonly methods?: string[];
  readonly scopes?: string[];
  readonly policies?: string[];
  readonly authServer?: string;
}

function route(name: string, options: RouteOptions = {}) {
  return {
    apiVersion: `${group}/${version}`,
    kind: "ApiRoute",
    metadata: { name, namespace },
    spec: {
      hostnames: ["api.example.com"],
      scopePolicyRefs: (options.policies ?? ["billing"]).map((policy) => ({ name: policy })),
      authServerRef: { name: options.authServer ?? "as" },
      rules: [
        {
          matches: [{ path: { value: options.path ?? "/orders" }, methods: options.methods ?? ["GET"] }],
          authentication: { mode: "phantom" },
          requiredScopes: { allOf: options.scopes ?? ["read_invoice"] },
          backendRefs: [{ url: "http://orders.internal" }],
        },
      ],
    },
  };
}

function scopePolicy(name: string, scopes: string[]) {
  return {
    apiVersion: `${group}/${version}`,
    kind: "ScopePolicy",
    metadata: { name, namespace },
    spec: { domain: name, scopes: scopes.map((scope) => ({ name: scope })) },
  };
}

function authServer(name: string) {
  return {
    apiVersion: `${group}/${version}`,
    kind: "AuthServer",
    metadata: { name, namespace },
    spec: {
      issuer: "https://as.example.com",
      clientAuthentication: {
        clientId: "gateway",
        // The Secret does not exist: the webhook does not judge Secrets (status will say SecretNotFound).
        clientSecret: { secretRef: { name: "as-credentials", key: "client-secret" } },
      },
    },
  };
}

async function apply(objects: readonly object[], extra: readonly string[] = []) {
  const input = objects.map((object) => toYaml(object)).join("---\n");
  return c().kubectl(["apply", ...extra, "-f", "-"], { input, allowFailure: true });
}

async function exists(resource: string, name: string): Promise<boolean> {
  const result = await c().kubectl(["get", resource, name, "-n", namespace], { allowFailure: true });
  return result.exitCode === 0;
}

/** A bad route is still rejected by the webhook and a good one accepted: the API server trusts what is served. */
async function expectStillJudged(suffix: string): Promise<void> {
  const bad = await apply([route(`bad-${suffix}`, { path: `/bad-${suffix}`, policies: ["missing"] })]);
  expect(bad.stderr).toContain(
    "denied the request: spec.scopePolicyRefs[0]: ScopePolicy shop/missing not found",
  );
  const good = await apply([route(`good-${suffix}`, { path: `/good-${suffix}` })]);
  expect(good.exitCode, good.stderr).toBe(0);
}

async function readCaBundles(): Promise<string[]> {
  const { stdout } = await c().kubectl([
    "get",
    "validatingwebhookconfiguration",
    configurationName,
    "-o",
    "json",
  ]);
  const configuration = JSON.parse(stdout) as { webhooks: { clientConfig: { caBundle?: string } }[] };
  return [
    ...new Set(
      configuration.webhooks.map((webhook) =>
        Buffer.from(webhook.clientConfig.caBundle ?? "", "base64").toString(),
      ),
    ),
  ];
}

async function setFailurePolicy(policy: "Fail" | "Ignore"): Promise<void> {
  const patch = [{ op: "replace", path: "/webhooks/0/failurePolicy", value: policy }];
  await c().kubectl([
    "patch",
    "validatingwebhookconfiguration",
    configurationName,
    "--type=json",
    "-p",
    JSON.stringify(patch),
  ]);
}

/** SHA-256 fingerprint of the certificate the webhook presents to a new connection. */
function servedFingerprint(): Promise<string> {
  const port = server?.port;
  if (port === undefined) throw new Error("webhook server not running");
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? "");
      socket.end();
    });
    socket.on("error", reject);
  });
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

function firstCertificate(bundle: string): string {
  const match = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/.exec(bundle);
  return match?.[0] ?? "";
}

async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

interface TestStore {
  readonly world: () => readonly SourceObject[];
  has(kind: string, name: string): boolean;
  stop(): Promise<void>;
}

/**
 * Stands in for the operator's object store (built by another part of the operator): informers over the
 * three kinds, all namespaces, feeding a map that the webhook reads as its world.
 */
async function startTestStore(config: KubeConfig): Promise<TestStore> {
  const api = config.makeApiClient(CustomObjectsApi);
  const objects = new Map<string, KubernetesObject>();
  const plurals = { ApiRoute: "apiroutes", ScopePolicy: "scopepolicies", AuthServer: "authservers" } as const;
  const key = (kind: string, object: KubernetesObject) =>
    `${kind} ${object.metadata?.namespace ?? ""}/${object.metadata?.name ?? ""}`;
  let stopped = false;
  const informers = Object.entries(plurals).map(([kind, plural]) => {
    const informer = makeInformer<KubernetesObject>(
      config,
      `/apis/${group}/${version}/${plural}`,
      () =>
        api.listClusterCustomObject({ group, version, plural }) as Promise<
          KubernetesListObject<KubernetesObject>
        >,
    );
    informer.on(ADD, (object) => objects.set(key(kind, object), object));
    informer.on(UPDATE, (object) => objects.set(key(kind, object), object));
    informer.on(DELETE, (object) => objects.delete(key(kind, object)));
    informer.on(ERROR, () => {
      if (!stopped) setTimeout(() => void informer.start().catch(() => undefined), 500);
    });
    return informer;
  });
  await Promise.all(informers.map((informer) => informer.start()));
  return {
    world: () => [...objects.values()].map((object) => ({ object })),
    has: (kind, name) => objects.has(`${kind} ${namespace}/${name}`),
    stop: async () => {
      stopped = true;
      await Promise.all(informers.map((informer) => informer.stop()));
    },
  };
}
