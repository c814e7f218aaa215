// Shared by the Helm chart tests: running helm without a cluster (lint, template), reading rendered
// manifests, and the few Kubernetes object shapes the tests look into.
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { repoRoot, resolveK8sTools } from "./harness/cluster.ts";

const execFileAsync = promisify(execFile);

export const chartDir = join(repoRoot, "charts/phantomgate");
export const goldenDir = join(repoRoot, "test/golden/helm");
/** The Kubernetes version `helm template` assumes, pinned so the golden files do not depend on helm's build. */
export const templateKubeVersion = "v1.35.0";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [key: string]: unknown;
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  ports?: { name: string; containerPort: number }[];
  securityContext?: Record<string, unknown>;
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  startupProbe?: { httpGet?: { path: string; port: string | number } };
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  resources?: Record<string, unknown>;
}

export interface PodSpec {
  serviceAccountName: string;
  automountServiceAccountToken?: boolean;
  terminationGracePeriodSeconds?: number;
  securityContext?: Record<string, unknown>;
  containers: Container[];
  volumes?: ({ name: string } & Record<string, unknown>)[];
}

export interface Deployment extends K8sObject {
  spec: {
    replicas?: number;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}

export interface Service extends K8sObject {
  spec: {
    type: string;
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: string | number }[];
  };
}

export interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

let helmPath: string | undefined;
const helmHome = mkdtempSync(join(tmpdir(), "phantomgate-helm-"));

async function helmBinary(): Promise<string> {
  helmPath ??= (await resolveK8sTools()).helm;
  return helmPath;
}

export interface HelmResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs helm with private state dirs and no kubeconfig (lint and template need no cluster). */
export async function runHelm(args: readonly string[]): Promise<HelmResult> {
  try {
    const { stdout, stderr } = await execFileAsync(await helmBinary(), [...args], {
      cwd: repoRoot,
      maxBuffer: 32 * 1024 * 1024,
      env: {
        ...process.env,
        HELM_CACHE_HOME: join(helmHome, "cache"),
        HELM_CONFIG_HOME: join(helmHome, "config"),
        HELM_DATA_HOME: join(helmHome, "data"),
        KUBECONFIG: join(helmHome, "no-kubeconfig"),
      },
    });
    return { exitCode: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== "number") throw error;
    return { exitCode: failed.code, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}

/** `helm template` of the chart as release `phantomgate` in namespace `phantomgate`; rejects on failure. */
export async function renderChart(
  extraArgs: readonly string[] = [],
  release = "phantomgate",
  namespace = "phantomgate",
): Promise<string> {
  const result = await runHelm([
    "template",
    release,
    chartDir,
    "--namespace",
    namespace,
    "--kube-version",
    templateKubeVersion,
    ...extraArgs,
  ]);
  if (result.exitCode !== 0)
    throw new Error(`helm template ${extraArgs.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

export function parseManifests(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((document) => document.toJS() as unknown)
    .filter(
      (object): object is K8sObject => typeof object === "object" && object !== null && "kind" in object,
    );
}

export function findObject(objects: readonly K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) {
    throw new Error(
      `no ${kind} ${name} among: ${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(", ")}`,
    );
  }
  return found;
}

export const findDeployment = (objects: readonly K8sObject[], name: string): Deployment =>
  findObject(objects, "Deployment", name) as Deployment;

export const findService = (objects: readonly K8sObject[], name: string): Service =>
  findObject(objects, "Service", name) as Service;

export function containerOf(deployment: Deployment): Container {
  const container = deployment.spec.template.spec.containers[0];
  if (container === undefined) throw new Error(`${deployment.metadata.name} has no container`);
  return container;
}

/** Expands `$(VAR)` the way the kubelet does for container args, from the given values. */
export function expandArgs(args: readonly string[], env: Readonly<Record<string, string>>): string[] {
  return args.map((arg) =>
    arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole),
  );
}

/** A rule in one canonical form: sorted lists, so rule lists can be compared as sets. */
export function canonicalRule(rule: Rule): string {
  return JSON.stringify({
    apiGroups: [...rule.apiGroups].sort(),
    resources: [...rule.resources].sort(),
    verbs: [...rule.verbs].sort(),
    resourceNames: rule.resourceNames === undefined ? [] : [...rule.resourceNames].sort(),
  });
}
