// Vitest globalSetup of the Kubernetes tests: build etcd, kube-apiserver, kubectl and helm once before any
// test file starts (the first build takes many minutes; globalSetup has no timeout, hooks do).
import { ensureK8sTools } from "./cluster.ts";

export default async function setup(): Promise<void> {
  const started = Date.now();
  await ensureK8sTools();
  const seconds = (Date.now() - started) / 1000;
  if (seconds > 5) console.log(`k8s tools built in ${seconds.toFixed(0)} s`);
}
