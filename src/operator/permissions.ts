// The exact Kubernetes permissions the operator needs, as data, and their rendering as RBAC objects. The Helm
// chart grants exactly these, and the Kubernetes tests run the operator under a ServiceAccount bound only to
// them. Every rule says which part of the operator uses it; change this file with the code that needs it.
import { stringify } from "yaml";

/** One RBAC rule (rbac.authorization.k8s.io/v1 PolicyRule). */
export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  readonly resourceNames?: readonly string[];
}

/**
 * Where a rule applies: `cluster` (cluster-scoped resources), `watched` (every watched namespace: a
 * ClusterRole when all namespaces are watched, else a Role in each), `own` (the operator's namespace).
 */
export type PermissionScope = "cluster" | "watched" | "own";

export interface Permission {
  readonly scope: PermissionScope;
  readonly rule: PolicyRule;
  /** Which part of the operator needs it, and for what. */
  readonly usedBy: string;
}

export interface PermissionOptions {
  /** The election Lease (fleet reports are `<leaseName>-fleet-*` beside it). */
  readonly leaseName: string;
  /** Whether the admission webhook runs (its certificate Secret and configuration). */
  readonly webhook: boolean;
  /** Whether the snapshot stream serves TLS with the same certificate (managed even without the webhook). */
  readonly snapshotTls?: boolean;
  /** `self`: the operator issues the serving certificate and sets the caBundle; `secret`: it only reads it. */
  readonly webhookCertificate: "self" | "secret";
  readonly webhookConfigurationName: string;
  readonly webhookSecretName: string;
}

const group = "phantomgate.dev";
const customResources = ["apiroutes", "scopepolicies", "authservers"] as const;

/** The permissions, in a stable order. */
export function operatorPermissions(options: PermissionOptions): Permission[] {
  const permissions: Permission[] = [
    {
      scope: "watched",
      rule: { apiGroups: [group], resources: [...customResources], verbs: ["list", "watch"] },
      usedBy: "source: list+watch ApiRoute, ScopePolicy, AuthServer",
    },
    {
      scope: "watched",
      rule: {
        apiGroups: [group],
        resources: customResources.map((plural) => `${plural}/status`),
        verbs: ["get", "patch"],
      },
      usedBy:
        "status (leader): patch conditions, observedGeneration and fleet counts (uid tested); get after a refused patch",
    },
    {
      scope: "watched",
      rule: { apiGroups: [""], resources: ["secrets"], verbs: ["list", "watch"] },
      usedBy: "source: the Secrets AuthServers reference (only referenced keys are kept)",
    },
    {
      scope: "watched",
      rule: { apiGroups: ["events.k8s.io"], resources: ["events"], verbs: ["create"] },
      usedBy: "status (leader): a Warning Event when an object is rejected",
    },
    {
      scope: "own",
      rule: {
        apiGroups: ["coordination.k8s.io"],
        resources: ["leases"],
        verbs: ["get", "list", "watch", "create", "update", "delete"],
      },
      usedBy: `leader: the election Lease ${options.leaseName}; status: each replica's fleet report Lease ${options.leaseName}-fleet-<replica> (list+watch to merge them, delete of stale ones); distribute: each replica's revocation relay Lease ${options.leaseName}-revocations-<replica> (list+watch to fan out the others', delete of stale ones)`,
    },
    {
      scope: "cluster",
      rule: { apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] },
      usedBy: "distribute: authenticate gateways' and callers' ServiceAccount tokens",
    },
    {
      scope: "cluster",
      rule: { apiGroups: ["authorization.k8s.io"], resources: ["subjectaccessreviews"], verbs: ["create"] },
      usedBy: "distribute: check that a revocation caller may create revocations.phantomgate.dev",
    },
  ];
  const certificate = options.webhook || options.snapshotTls === true;
  if (certificate && options.webhookCertificate === "secret") {
    permissions.push({
      scope: "own",
      rule: {
        apiGroups: [""],
        resources: ["secrets"],
        verbs: ["get"],
        resourceNames: [options.webhookSecretName],
      },
      usedBy: "webhook: read the serving certificate Secret another issuer (cert-manager) renews",
    });
  }
  if (certificate && options.webhookCertificate === "self") {
    permissions.push(
      {
        scope: "own",
        rule: {
          apiGroups: [""],
          resources: ["secrets"],
          verbs: ["get", "update"],
          resourceNames: [options.webhookSecretName],
        },
        usedBy: "webhook: read and renew the serving certificate Secret",
      },
      {
        // RBAC cannot limit create to a name.
        scope: "own",
        rule: { apiGroups: [""], resources: ["secrets"], verbs: ["create"] },
        usedBy: "webhook: create the serving certificate Secret on first start",
      },
    );
  }
  // Only with the webhook on: with the snapshot TLS alone there is no configuration to keep.
  if (options.webhook && options.webhookCertificate === "self") {
    permissions.push({
      scope: "cluster",
      rule: {
        apiGroups: ["admissionregistration.k8s.io"],
        resources: ["validatingwebhookconfigurations"],
        verbs: ["get", "patch"],
        resourceNames: [options.webhookConfigurationName],
      },
      usedBy: "webhook: keep the configuration's caBundle on the serving certificate's CA",
    });
  }
  return permissions;
}

/** The permission options a running operator with `config` needs. */
export function permissionOptionsOf(config: {
  readonly leaseName: string;
  readonly webhook: boolean;
  readonly snapshotTls: boolean;
  readonly webhookCertificate: "self" | "secret";
  readonly webhookConfigurationName: string;
  readonly webhookSecretName: string;
}): PermissionOptions {
  return {
    leaseName: config.leaseName,
    webhook: config.webhook,
    snapshotTls: config.snapshotTls,
    webhookCertificate: config.webhookCertificate,
    webhookConfigurationName: config.webhookConfigurationName,
    webhookSecretName: config.webhookSecretName,
  };
}

export interface RbacOptions extends PermissionOptions {
  /** Prefix of the ClusterRole/Role names. */
  readonly name: string;
  /** The operator's ServiceAccount. */
  readonly serviceAccount: { readonly namespace: string; readonly name: string };
  /** Watched namespaces; empty: all (watched rules go into the ClusterRole). */
  readonly namespaces: readonly string[];
}

const rbacApiVersion = "rbac.authorization.k8s.io/v1";

function toRule(rule: PolicyRule): Record<string, unknown> {
  return {
    apiGroups: [...rule.apiGroups],
    resources: [...rule.resources],
    ...(rule.resourceNames === undefined ? {} : { resourceNames: [...rule.resourceNames] }),
    verbs: [...rule.verbs],
  };
}

/**
 * The RBAC objects granting exactly {@link operatorPermissions}: a ClusterRole (+ binding) for cluster-scoped
 * rules and, when all namespaces are watched, the watched rules; a Role (+ binding) in the operator's namespace;
 * and a Role (+ binding) per watched namespace when namespaces are listed.
 */
export function renderRbacObjects(options: RbacOptions): Record<string, unknown>[] {
  const permissions = operatorPermissions(options);
  const pick = (scope: PermissionScope) =>
    permissions.filter((p) => p.scope === scope).map((p) => toRule(p.rule));
  const subject = {
    kind: "ServiceAccount",
    name: options.serviceAccount.name,
    namespace: options.serviceAccount.namespace,
  };
  const labels = { "app.kubernetes.io/name": "phantomgate", "app.kubernetes.io/component": "operator" };
  const objects: Record<string, unknown>[] = [];
  const clusterRules = [...pick("cluster"), ...(options.namespaces.length === 0 ? pick("watched") : [])];
  objects.push(
    {
      apiVersion: rbacApiVersion,
      kind: "ClusterRole",
      metadata: { name: options.name, labels },
      rules: clusterRules,
    },
    {
      apiVersion: rbacApiVersion,
      kind: "ClusterRoleBinding",
      metadata: { name: options.name, labels },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: options.name },
      subjects: [subject],
    },
  );
  const role = (namespace: string, name: string, rules: Record<string, unknown>[]) => [
    { apiVersion: rbacApiVersion, kind: "Role", metadata: { name, namespace, labels }, rules },
    {
      apiVersion: rbacApiVersion,
      kind: "RoleBinding",
      metadata: { name, namespace, labels },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name },
      subjects: [subject],
    },
  ];
  objects.push(...role(options.serviceAccount.namespace, options.name, pick("own")));
  for (const namespace of new Set(options.namespaces)) {
    objects.push(...role(namespace, `${options.name}-watch`, pick("watched")));
  }
  return objects;
}

/** {@link renderRbacObjects} as a multi-document YAML stream (for `kubectl apply -f -`). */
export function renderRbacYaml(options: RbacOptions): string {
  return renderRbacObjects(options)
    .map((object) => stringify(object))
    .join("---\n");
}
