// The world the propagation benchmark runs in: a real etcd + kube-apiserver (the Kubernetes tests' harness), the
// CRDs, the operator's ServiceAccount bound to exactly the rules of src/operator/permissions.ts, a gateway
// ServiceAccount whose audience-bound tokens come from the TokenRequest API (`kubectl create token`), a
// revoker ServiceAccount allowed to `create` revocations.phantomgate.dev, the demo authorization server and a
// tiny upstream in this process, then one operator and N gateway processes.
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { loadOperatorConfig } from "../../src/operator/config.ts";
import { permissionOptionsOf, renderRbacYaml } from "../../src/operator/permissions.ts";
import { repoRoot, startTestCluster, type TestCluster } from "../../test/k8s/harness/cluster.ts";
import {
  operatorFlags,
  startGatewayProcess,
  startOperatorProcess,
  type GatewayProcess,
  type OperatorProcess,
} from "./fleet.ts";
import { createKubeAdmin, type KubeAdmin } from "./kube-admin.ts";
import type { FixtureOptions } from "./objects.ts";

export const ROUTE_NAMESPACE = "bench";
export const SYSTEM_NAMESPACE = "pg-bench-system";
const OPERATOR_ACCOUNT = "phantomgate-operator";
const GATEWAY_ACCOUNT = "phantomgate-gateway";
const REVOKER_ACCOUNT = "revoker";
const LEASE_NAME = "phantomgate-operator";
export const AUDIENCE = "phantomgate";

export interface World {
  readonly cluster: TestCluster;
  readonly admin: KubeAdmin;
  readonly as: DemoAuthServer;
  readonly upstream: string;
  readonly fixture: FixtureOptions;
  /** Token of the revoker ServiceAccount, audience `phantomgate`. */
  readonly revokerToken: string;
  readonly gatewayToken: string;
  readonly operatorKubeconfig: string;
  /** Flags the operator runs with, after the kubeconfig and identity. */
  readonly operatorArgs: readonly string[];
  readonly operatorExtraArgs: readonly string[];
  operator?: OperatorProcess;
  gateways: GatewayProcess[];
  close(): Promise<void>;
}

/** A node:http upstream answering 200 to everything (the routes forward here). */
async function startUpstream(): Promise<Server> {
  const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "text/plain", "content-length": "3" }).end("ok\n");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return server;
}

export async function createWorld(
  log: (message: string) => void,
  operatorExtraArgs: readonly string[],
): Promise<World> {
  log("starting etcd + kube-apiserver (test/k8s/harness; builds the binaries on a first run)");
  const cluster = await startTestCluster();
  const closers: (() => Promise<void>)[] = [() => cluster.stop()];
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch {
        // Best effort: the rest must still go.
      }
    }
    closers.length = 0;
  };
  try {
    const as = await startDemoAuthServer({ port: 0 });
    closers.push(() => as.close());
    const upstreamServer = await startUpstream();
    closers.push(async () => {
      upstreamServer.closeAllConnections();
      upstreamServer.close();
      await once(upstreamServer, "close");
    });
    const upstream = `http://127.0.0.1:${(upstreamServer.address() as AddressInfo).port}`;

    log("installing CRDs, namespaces, ServiceAccounts and RBAC");
    await cluster.kubectl(["apply", "-f", join(repoRoot, "crds")]);
    await cluster.kubectl(["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    for (const namespace of [ROUTE_NAMESPACE, SYSTEM_NAMESPACE]) {
      await cluster.kubectl(["create", "namespace", namespace]);
    }
    for (const account of [OPERATOR_ACCOUNT, GATEWAY_ACCOUNT, REVOKER_ACCOUNT]) {
      await cluster.kubectl(["create", "serviceaccount", account, "-n", SYSTEM_NAMESPACE]);
    }
    const flagSpec = {
      namespace: SYSTEM_NAMESPACE,
      gatewayServiceAccount: GATEWAY_ACCOUNT,
      leaseName: LEASE_NAME,
      extraArgs: operatorExtraArgs,
    };
    const config = loadOperatorConfig(["--identity", "bench-operator", ...operatorFlags(flagSpec)], {});
    await cluster.kubectl(["apply", "-f", "-"], {
      input: renderRbacYaml({
        ...permissionOptionsOf(config),
        name: "phantomgate-operator",
        serviceAccount: { namespace: SYSTEM_NAMESPACE, name: OPERATOR_ACCOUNT },
        namespaces: [],
      }),
    });
    await cluster.kubectl(["apply", "-f", "-"], {
      input: `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: phantomgate-revoker, namespace: ${SYSTEM_NAMESPACE} }
rules:
  - apiGroups: [phantomgate.dev]
    resources: [revocations]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: phantomgate-revoker, namespace: ${SYSTEM_NAMESPACE} }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: phantomgate-revoker }
subjects: [{ kind: ServiceAccount, name: ${REVOKER_ACCOUNT}, namespace: ${SYSTEM_NAMESPACE} }]
`,
    });
    // TokenRequest API, as a kubelet would for a projected volume.
    const token = async (account: string, audience?: string): Promise<string> => {
      const args = ["create", "token", account, "-n", SYSTEM_NAMESPACE, "--duration", "4h"];
      if (audience !== undefined) args.push("--audience", audience);
      return (await cluster.kubectl(args)).stdout.trim();
    };
    const operatorKubeconfig = await cluster.writeTokenKubeconfig(
      "bench-operator",
      await token(OPERATOR_ACCOUNT),
    );
    const admin = createKubeAdmin({
      server: cluster.server,
      caPem: cluster.caPem,
      certPem: cluster.adminCert,
      keyPem: cluster.adminKey,
    });
    closers.push(() => admin.close());
    const world: World = {
      cluster,
      admin,
      as,
      upstream,
      fixture: { namespace: ROUTE_NAMESPACE, issuer: as.issuer, upstream },
      revokerToken: await token(REVOKER_ACCOUNT, AUDIENCE),
      gatewayToken: await token(GATEWAY_ACCOUNT, AUDIENCE),
      operatorKubeconfig,
      operatorArgs: operatorFlags(flagSpec),
      operatorExtraArgs,
      gateways: [],
      close: async () => {
        for (const gateway of world.gateways) {
          await gateway.publicPool.close().catch(() => undefined);
          await gateway.adminPool.close().catch(() => undefined);
          await gateway.process.stop();
        }
        await world.operator?.process.stop();
        await closeAll();
      },
    };
    return world;
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** Starts the operator, then `count` gateways in parallel. */
export async function startFleet(world: World, count: number, stateParent: string): Promise<void> {
  const operator = await startOperatorProcess({
    kubeconfig: world.operatorKubeconfig,
    namespace: SYSTEM_NAMESPACE,
    gatewayServiceAccount: GATEWAY_ACCOUNT,
    leaseName: LEASE_NAME,
    extraArgs: world.operatorExtraArgs,
  });
  world.operator = operator;
  world.gateways = await Promise.all(
    Array.from({ length: count }, (_, index) =>
      startGatewayProcess(`gw-${index + 1}`, operator.snapshotUrl, world.gatewayToken, stateParent),
    ),
  );
}
