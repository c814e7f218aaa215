// Where the operator's Kubernetes credentials come from: an explicit kubeconfig file, else the Pod's
// ServiceAccount (in-cluster), else KUBECONFIG or ~/.kube/config. Loading and authentication plugins (token
// files, exec, OIDC) are client-node's; requests go through our own client (kube-client.ts).
import { existsSync } from "node:fs";
import { KubeConfig } from "@kubernetes/client-node";

const serviceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/** How the credentials were found, for the start-up log line. */
export type KubeConfigSource = "file" | "in-cluster" | "default";

export interface LoadedKubeConfig {
  readonly kubeConfig: KubeConfig;
  readonly source: KubeConfigSource;
  /** The API server URL of the current context. */
  readonly server: string;
}

/**
 * Loads credentials: `kubeconfigPath` when given; otherwise in-cluster when running in a Pod
 * (KUBERNETES_SERVICE_HOST set and a ServiceAccount token mounted); otherwise client-node's default search
 * (KUBECONFIG, then ~/.kube/config).
 */
export function loadKubeConfig(
  kubeconfigPath: string | undefined,
  env: Readonly<Record<string, string | undefined>> = process.env,
): LoadedKubeConfig {
  const kubeConfig = new KubeConfig();
  let source: KubeConfigSource;
  if (kubeconfigPath !== undefined) {
    kubeConfig.loadFromFile(kubeconfigPath);
    source = "file";
  } else if ((env.KUBERNETES_SERVICE_HOST ?? "") !== "" && existsSync(serviceAccountTokenPath)) {
    kubeConfig.loadFromCluster();
    source = "in-cluster";
  } else {
    kubeConfig.loadFromDefault();
    source = "default";
  }
  const cluster = kubeConfig.getCurrentCluster();
  if (cluster === null) {
    throw new Error(`no current cluster in the ${source} Kubernetes configuration`);
  }
  return { kubeConfig, source, server: cluster.server.replace(/\/+$/, "") };
}
