// The status stage's writes against a REAL etcd + kube-apiserver, as the operator's ServiceAccount (bound only
// to the rules of src/operator/permissions.ts): a status is written where the object is the one compiled, and
// never onto an object deleted and re-created under the same name meanwhile (the uid test of the JSON Patch; the
// API server ignores a uid in a merge patch of /status). The stage runs in this process so the test can hold the
// store at the old object, as a watch that has not yet brought the re-creation does. Last, the source, compile and
// status stages together with `--secret-label-selector`: an AuthServer whose Secret lacks those labels is told so.
// Also an Event as the recorder writes it: a note over 1024 bytes and a long object name are cut to what the API
// server accepts.
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compile } from "../../src/compile/compile.ts";
import { loadOperatorConfig } from "../../src/operator/config.ts";
import { createKubeClient, type KubeClient } from "../../src/operator/kube/kube-client.ts";
import { createOperatorMetrics, type OperatorMetrics } from "../../src/operator/metrics.ts";
import { permissionOptionsOf, renderRbacYaml } from "../../src/operator/permissions.ts";
import { createDistributor } from "../../src/operator/distribute/distributor.ts";
import { startReconciler } from "../../src/operator/reconcile/reconciler.ts";
import { ObjectStore, type StoredObject } from "../../src/operator/source/object-store.ts";
import { startSource } from "../../src/operator/source/source.ts";
import {
  fleetReportAnnotation,
  fleetReportLabel,
  fleetReportName,
  startFleetExchange,
} from "../../src/operator/status/fleet-reports.ts";
import { createEventRecorder } from "../../src/operator/status/events.ts";
import { startStatusWriter } from "../../src/operator/status/status-writer.ts";
import { fixedFleet, fixedReconciler, noEvents } from "../helpers/status-writer.ts";
import { repoRoot, startTestCluster, type TestCluster } from "./harness/cluster.ts";

const startupTimeoutMs = 60 * 60_000;
const systemNamespace = "pg-system";
const operatorAccount = "phantomgate-operator";
const namespace = "status-tests";

let current: TestCluster | undefined;
let client: KubeClient | undefined;
const c = (): TestCluster => {
  if (current === undefined) throw new Error("cluster not started");
  return current;
};
const k = (): KubeClient => {
  if (client === undefined) throw new Error("client not made");
  return client;
};

beforeAll(async () => {
  current = await startTestCluster();
  const cl = current;
  await cl.kubectl(["apply", "-f", join(repoRoot, "crds")]);
  await cl.kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
  await cl.kubectl(["create", "namespace", systemNamespace]);
  await cl.kubectl(["create", "namespace", namespace]);
  await cl.kubectl(["create", "serviceaccount", operatorAccount, "-n", systemNamespace]);
  const config = loadOperatorConfig(["--identity", "x", "--pod-namespace", systemNamespace], {});
  await cl.kubectl(["apply", "-f", "-"], {
    input: renderRbacYaml({
      ...permissionOptionsOf(config),
      name: "phantomgate-operator",
      serviceAccount: { namespace: systemNamespace, name: operatorAccount },
      namespaces: [],
    }),
  });
  const token = (
    await cl.kubectl(["create", "token", operatorAccount, "-n", systemNamespace, "--duration", "1h"])
  ).stdout.trim();
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: "test", server: cl.server, caData: Buffer.from(cl.caPem).toString("base64") }],
    users: [{ name: "operator", token }],
    contexts: [{ name: "test", cluster: "test", user: "operator" }],
    currentContext: "test",
  });
  client = createKubeClient(kubeConfig);
}, startupTimeoutMs);

afterAll(async () => {
  await client?.close();
  await current?.stop();
}, 60_000);

interface PolicyObject {
  metadata: { uid: string; generation: number; resourceVersion: string; name: string; namespace: string };
  spec: unknown;
  status?: {
    conditions?: { type: string; status: string; reason: string }[];
    fleet?: unknown;
    observedGeneration?: number;
  };
}

const policy = (name: string) =>
  JSON.stringify({
    apiVersion: "phantomgate.dev/v1alpha1",
    kind: "ScopePolicy",
    metadata: { name, namespace },
    spec: { domain: "billing", scopes: [{ name: "read_invoice" }] },
  });

async function readPolicy(name: string): Promise<PolicyObject> {
  const text = (await c().kubectl(["get", "scopepolicy", name, "-n", namespace, "-o", "json"])).stdout;
  return JSON.parse(text) as PolicyObject;
}

/** What the operator's watch would have stored for this version of the object. */
function stored(object: PolicyObject): StoredObject {
  return {
    kind: "ScopePolicy",
    namespace: object.metadata.namespace,
    name: object.metadata.name,
    uid: object.metadata.uid,
    generation: object.metadata.generation,
    resourceVersion: object.metadata.resourceVersion,
    object: {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "ScopePolicy",
      metadata: {
        name: object.metadata.name,
        namespace: object.metadata.namespace,
        uid: object.metadata.uid,
        generation: object.metadata.generation,
        resourceVersion: object.metadata.resourceVersion,
      },
      spec: object.spec,
    },
    status: object.status,
  };
}

/** One status pass over what `store` holds, as the leader would make it. */
async function writePass(store: ObjectStore, metrics: OperatorMetrics): Promise<{ warnings: string[] }> {
  const result = compile({ objects: store.sourceObjects() });
  const warnings: string[] = [];
  const logger = pino(
    { level: "warn" },
    { write: (line: string) => warnings.push((JSON.parse(line) as { msg: string }).msg) },
  );
  const writer = startStatusWriter({
    client: k(),
    store,
    reconciler: fixedReconciler(store, result),
    fleet: fixedFleet(),
    isLeader: () => true,
    recorder: noEvents,
    logger,
    metrics,
  });
  try {
    writer.trigger();
    await writer.flush();
  } finally {
    await writer.close();
  }
  return { warnings };
}

async function writeResults(metrics: OperatorMetrics): Promise<Record<string, number>> {
  const counted = await metrics.statusWrites.get();
  return Object.fromEntries(counted.values.map((v) => [String(v.labels.result), v.value]));
}

describe("status writes on a real API server", () => {
  it("write the compiled object's status, keeping other controllers' conditions", async () => {
    await c().kubectl(["apply", "-f", "-"], { input: policy("kept") });
    // Another controller's condition, there before the operator's first write.
    await c().kubectl([
      "patch",
      "scopepolicy",
      "kept",
      "-n",
      namespace,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({
        status: {
          conditions: [
            {
              type: "Audited",
              status: "True",
              reason: "Reviewed",
              message: "by another controller",
              lastTransitionTime: "2026-12-01T00:00:00Z",
            },
          ],
        },
      }),
    ]);
    const store = new ObjectStore();
    store.upsert(stored(await readPolicy("kept")));
    const metrics = createOperatorMetrics(new Registry());
    const { warnings } = await writePass(store, metrics);
    expect(warnings).toEqual([]);
    expect(await writeResults(metrics)).toEqual({ ok: 1 });
    const after = await readPolicy("kept");
    expect(after.status?.observedGeneration).toBe(1);
    expect(after.status?.conditions?.map((condition) => `${condition.type}=${condition.status}`)).toEqual([
      "Accepted=True",
      "Programmed=False",
      "Audited=True",
    ]);
  });

  it("do not write the old object's verdict onto one re-created under the same name", async () => {
    await c().kubectl(["apply", "-f", "-"], { input: policy("again") });
    const old = await readPolicy("again");
    await c().kubectl(["delete", "scopepolicy", "again", "-n", namespace]);
    await c().kubectl(["apply", "-f", "-"], { input: policy("again") });
    const recreated = await readPolicy("again");
    expect(recreated.metadata.uid).not.toBe(old.metadata.uid);
    expect(recreated.metadata.generation).toBe(old.metadata.generation);

    // The store still holds the old object (its watch has not brought the deletion yet).
    const store = new ObjectStore();
    store.upsert(stored(old));
    const metrics = createOperatorMetrics(new Registry());
    const stale = await writePass(store, metrics);
    // The patch fails its uid test; reading the object (get on status, granted) shows another uid: a conflict,
    // not an error, and nothing written.
    expect(stale.warnings).toEqual([]);
    expect(await writeResults(metrics)).toEqual({ conflict: 1 });
    const untouched = await readPolicy("again");
    expect(untouched.status).toBeUndefined();
    expect(untouched.metadata.resourceVersion).toBe(recreated.metadata.resourceVersion);

    // The watch catches up: the new object gets its own status.
    store.upsert(stored(recreated));
    const fresh = await writePass(store, metrics);
    expect(fresh.warnings).toEqual([]);
    expect(await writeResults(metrics)).toEqual({ conflict: 1, ok: 1 });
    expect((await readPolicy("again")).status?.conditions?.[0]).toMatchObject({
      type: "Accepted",
      status: "True",
    });
  });

  it("count a patch the API server refuses for the object itself as an error, and log it", async () => {
    await c().kubectl(["apply", "-f", "-"], { input: policy("refused") });
    const object = await readPolicy("refused");
    // The store believes the object has a status, so the patch adds fields under /status, which the object
    // does not have: the API server refuses the patch (422) though the uid matches.
    const store = new ObjectStore();
    store.upsert(stored({ ...object, status: { observedGeneration: 1 } }));
    const metrics = createOperatorMetrics(new Registry());
    const { warnings } = await writePass(store, metrics);
    expect(warnings).toEqual(["status write failed"]);
    expect(await writeResults(metrics)).toEqual({ error: 1 });
    expect((await readPolicy("refused")).status).toBeUndefined();
  });

  it("record a Warning Event whose note is over 1024 bytes, for an object whose name has a '-' at 200 characters", async () => {
    const name = `${"e".repeat(199)}-${"x".repeat(30)}`;
    await c().kubectl(["apply", "-f", "-"], { input: policy(name) });
    const object = await readPolicy(name);
    const warnings: string[] = [];
    const logger = pino(
      { level: "warn" },
      { write: (line: string) => warnings.push((JSON.parse(line) as { msg: string }).msg) },
    );
    const recorder = createEventRecorder({ client: k(), identity: "status-tests", logger });
    // 960 characters, 1,120 bytes: within 1024 UTF-16 units but not within 1024 bytes.
    const note = "scope a → b ".repeat(80);
    await recorder.record(
      {
        apiVersion: "phantomgate.dev/v1alpha1",
        kind: "ScopePolicy",
        namespace,
        name,
        uid: object.metadata.uid,
      },
      { type: "Warning", reason: "InvalidSpec", action: "Compile", note },
    );
    expect(warnings).toEqual([]);
    const listed = await c().kubectl(["get", "events.events.k8s.io", "-n", namespace, "-o", "json"]);
    const events = (
      JSON.parse(listed.stdout) as {
        items: { metadata: { name: string }; note: string; type: string; regarding: { name: string } }[];
      }
    ).items.filter((event) => event.regarding.name === name);
    expect(events).toHaveLength(1);
    expect(events[0]?.type).toBe("Warning");
    expect(events[0]?.metadata.name.startsWith(`${"e".repeat(199)}.`)).toBe(true);
    expect(Buffer.byteLength(events[0]?.note ?? "", "utf8")).toBeLessThanOrEqual(1024);
    expect(events[0]?.note.endsWith("...")).toBe(true);
    expect(note.startsWith(events[0]?.note.slice(0, -3) ?? "-")).toBe(true);
    // The commands docs/troubleshooting.md gives find it.
    const forObject = await c().kubectl(["-n", namespace, "events", "--for", `scopepolicy/${name}`]);
    expect(forObject.stdout).toContain("InvalidSpec");
    const byController = await c().kubectl([
      "get",
      "events",
      "-A",
      "--field-selector",
      "reportingComponent=phantomgate.dev/operator",
      "--sort-by=.eventTime",
      "-o",
      "name",
    ]);
    expect(byController.stdout).toContain(events[0]?.metadata.name);
  });

  it("name the Secret label selector when an AuthServer's Secret lacks those labels, and accept it once labelled", async () => {
    const selector = "phantomgate.dev/auth-server=true";
    await c().kubectl([
      "create",
      "secret",
      "generic",
      "as-client",
      "-n",
      namespace,
      "--from-literal=secret=s3",
    ]);
    await c().kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "phantomgate.dev/v1alpha1",
        kind: "AuthServer",
        metadata: { name: "labelled", namespace },
        spec: {
          issuer: "https://as.example",
          clientAuthentication: {
            method: "client_secret_basic",
            clientId: "gateway",
            clientSecret: { secretRef: { name: "as-client", key: "secret" } },
          },
        },
      }),
    });
    // The operator's source, reconciler and status stages, in this process, as its ServiceAccount.
    const logger = pino({ level: "silent" });
    const source = startSource({
      client: k(),
      namespaces: [namespace],
      relistIntervalMs: 600_000,
      stallTimeoutMs: 600_000,
      watchTimeoutSeconds: 300,
      secretLabelSelector: selector,
      logger,
    });
    const reconciler = startReconciler({
      source,
      publish: () => undefined,
      secretLabelSelector: selector,
      debounceMs: 50,
      maxWaitMs: 200,
      logger,
    });
    const writer = startStatusWriter({
      client: k(),
      store: source.store,
      reconciler,
      fleet: fixedFleet(),
      isLeader: () => true,
      recorder: noEvents,
      debounceMs: 50,
      maxWaitMs: 200,
      logger,
    });
    const accepted = async () => {
      const text = (await c().kubectl(["get", "authserver", "labelled", "-n", namespace, "-o", "json"]))
        .stdout;
      const object = JSON.parse(text) as PolicyObject;
      return object.status?.conditions?.find((condition) => condition.type === "Accepted") as
        { status: string; reason: string; message: string } | undefined;
    };
    const waitFor = async (test: (condition: Awaited<ReturnType<typeof accepted>>) => boolean) => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const condition = await accepted();
        if (test(condition)) return condition;
        if (Date.now() > deadline) throw new Error(`Accepted is still ${JSON.stringify(condition)}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    };
    try {
      const refused = await waitFor((condition) => condition?.reason === "SecretNotFound");
      expect(refused?.message).toContain(
        `Secret ${namespace}/as-client not found among the Secrets labelled ${selector} (the only ones the operator reads)`,
      );
      await c().kubectl(["label", "secret", "as-client", "-n", namespace, selector]);
      await waitFor((condition) => condition?.status === "True");
    } finally {
      await writer.close();
      await reconciler.close();
      await source.stop();
    }
  });

  it("keep Programmed while the fleet view settles: after a start, and after a replica's report goes away", async () => {
    const leaseName = "phantomgate-operator";
    const settleMs = 2_500;
    await c().kubectl(["apply", "-f", "-"], { input: policy("held") });
    const store = new ObjectStore();
    store.upsert(stored(await readPolicy("held")));
    const result = compile({ objects: store.sourceObjects() });
    const revision = result.snapshot.revision;
    // A peer replica's report: three gateways streaming from it, all serving the current revision.
    const peerReport = JSON.stringify({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name: fleetReportName(leaseName, "peer"),
        namespace: systemNamespace,
        labels: { [fleetReportLabel]: leaseName },
        annotations: {
          [fleetReportAnnotation]: JSON.stringify({
            revision,
            gateways: ["gw-1", "gw-2", "gw-3"].map((name) => ({
              name,
              connected: true,
              revision,
              status: "ACK",
              lastSeenMs: Date.now(),
            })),
          }),
        },
      },
      spec: { holderIdentity: "peer", leaseDurationSeconds: 600 },
    });
    const logger = pino({ level: "silent" });
    /** This replica: a distributor with no gateway of its own, its fleet exchange and its status stage. */
    const startReplica = (identity: string) => {
      const distributor = createDistributor();
      distributor.publish(result.snapshot);
      const fleet = startFleetExchange({
        client: k(),
        namespace: systemNamespace,
        leaseName,
        identity,
        distributor,
        heartbeatMs: 1_000,
        staleAfterMs: 600_000,
        settleMs,
        isLeader: () => true,
        relistIntervalMs: 600_000,
        stallTimeoutMs: 600_000,
        logger,
      });
      const writer = startStatusWriter({
        client: k(),
        store,
        reconciler: fixedReconciler(store, result),
        fleet,
        isLeader: () => true,
        recorder: noEvents,
        debounceMs: 50,
        maxWaitMs: 200,
        logger,
      });
      // The store follows what is written, as the watch would.
      const follow = setInterval(() => {
        readPolicy("held").then(
          (object) => store.upsert(stored(object)),
          () => undefined,
        );
      }, 100);
      return {
        fleet,
        async stop() {
          clearInterval(follow);
          await writer.close();
          await fleet.stop();
        },
      };
    };
    const programmed = async () => {
      const object = await readPolicy("held");
      const condition = object.status?.conditions?.find((entry) => entry.type === "Programmed");
      const fleet = object.status?.fleet as
        { revision?: string; programmed?: number; gateways?: number } | undefined;
      return `${condition?.reason ?? "none"} ${fleet?.programmed ?? "-"}/${fleet?.gateways ?? "-"} of ${fleet?.revision ?? "-"}`;
    };
    const onAll = `Programmed 3/3 of ${revision}`;
    const none = `NoGateways 0/0 of ${revision}`;
    const waitFor = async (expected: string, withinMs: number) => {
      const deadline = Date.now() + withinMs;
      let seen = await programmed();
      while (seen !== expected && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        seen = await programmed();
      }
      expect(seen).toBe(expected);
    };
    /** What the status says, sampled every 100 ms for `ms`. */
    const sample = async (ms: number) => {
      const seen = new Set<string>();
      for (const until = Date.now() + ms; Date.now() < until;) {
        seen.add(await programmed());
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return [...seen];
    };

    await c().kubectl(["apply", "-f", "-"], { input: peerReport });
    const first = startReplica("op-a");
    try {
      await waitFor(onAll, 10_000);
      await new Promise((resolve) => setTimeout(resolve, settleMs));
      expect(first.fleet.settling?.()).toBe(false);
      // The peer stops (its report deleted): its gateways would be reconnecting to this replica now.
      await c().kubectl(["delete", "lease", fleetReportName(leaseName, "peer"), "-n", systemNamespace]);
      expect(await sample(settleMs - 1_000)).toEqual([onAll]);
      // No gateway came: once settled, the status says so.
      await waitFor(none, 5_000);
      expect(first.fleet.settling?.()).toBe(false);
    } finally {
      await first.stop();
    }

    // A replica that starts (or takes the lead after a restart) knows no gateway yet: it keeps what is written.
    await c().kubectl(["apply", "-f", "-"], { input: peerReport });
    const second = startReplica("op-b");
    try {
      await waitFor(onAll, 10_000);
    } finally {
      await second.stop();
    }
    await c().kubectl(["delete", "lease", fleetReportName(leaseName, "peer"), "-n", systemNamespace]);
    const third = startReplica("op-c");
    try {
      expect(third.fleet.settling?.()).toBe(true);
      expect(await sample(settleMs - 1_000)).toEqual([onAll]);
      await waitFor(none, 5_000);
    } finally {
      await third.stop();
    }
  });
});
