// `make dev-cluster` / `make dev-cluster-down`: the test harness's etcd + kube-apiserver, left running for
// developers, with the admin kubeconfig at .dev/kubeconfig. State (certs, etcd data, logs, pids) lives in
// .dev/cluster/; `down` stops the servers and removes it. Usage: node dev-cluster-main.ts up|down|status
import { copyFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { clusterRunningInDir, repoRoot, startTestCluster, stopClusterInDir } from "./cluster.ts";

const devDir = join(repoRoot, ".dev");
const dataDir = join(devDir, "cluster");
const kubeconfig = join(devDir, "kubeconfig");

async function up(): Promise<void> {
  if (clusterRunningInDir(dataDir)) {
    console.log(`dev cluster already running; KUBECONFIG=${kubeconfig}`);
    return;
  }
  // Leftovers of a cluster that died: start clean.
  await stopClusterInDir(dataDir);
  await rm(dataDir, { recursive: true, force: true });
  const started = Date.now();
  const cluster = await startTestCluster({ dataDir, detached: true, ensureTools: false });
  await copyFile(cluster.kubeconfigPath, kubeconfig);
  await writeFile(join(devDir, "etcd.pid"), `${cluster.pids.etcd}\n`);
  await writeFile(join(devDir, "kube-apiserver.pid"), `${cluster.pids.kubeApiserver}\n`);
  console.log(
    [
      `dev cluster up in ${((Date.now() - started) / 1000).toFixed(1)} s: Kubernetes ${cluster.tools.kubeVersion} at ${cluster.server}`,
      `  export KUBECONFIG=${kubeconfig}`,
      `  kubectl: ${cluster.tools.kubectl}`,
      `  helm:    ${cluster.tools.helm}`,
      `  logs:    ${cluster.logs.kubeApiserver}`,
      `           ${cluster.logs.etcd}`,
      "  no controller-manager: no Pods, no garbage collection, namespaces never finish terminating",
      "  stop it with: make dev-cluster-down",
    ].join("\n"),
  );
}

async function down(): Promise<void> {
  const stopped = await stopClusterInDir(dataDir);
  await rm(dataDir, { recursive: true, force: true });
  for (const file of ["kubeconfig", "etcd.pid", "kube-apiserver.pid"]) {
    await rm(join(devDir, file), { force: true });
  }
  console.log(stopped > 0 ? "dev cluster stopped" : "no dev cluster was running");
}

function status(): void {
  if (clusterRunningInDir(dataDir)) {
    console.log(`dev cluster running; KUBECONFIG=${kubeconfig}`);
  } else {
    console.log("dev cluster not running");
    process.exitCode = 3;
  }
}

const command = process.argv[2];
try {
  if (command === "up") await up();
  else if (command === "down") await down();
  else if (command === "status") status();
  else {
    console.error("usage: node test/k8s/harness/dev-cluster-main.ts up|down|status");
    process.exitCode = 2;
  }
} catch (error) {
  console.error(`dev-cluster ${command ?? ""}: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
// The servers are detached; nothing here should keep this process alive.
process.exit();
