// The Kubernetes resources the operator reads and writes, and how their REST paths are built.

/** One resource type of the API (group/version/plural). */
export interface ApiResource {
  /** `""` for the core group. */
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

const phantomgateGroup = "phantomgate.dev";

export const apiRoutes: ApiResource = {
  group: phantomgateGroup,
  version: "v1alpha1",
  plural: "apiroutes",
  kind: "ApiRoute",
  namespaced: true,
};
export const scopePolicies: ApiResource = {
  group: phantomgateGroup,
  version: "v1alpha1",
  plural: "scopepolicies",
  kind: "ScopePolicy",
  namespaced: true,
};
export const authServers: ApiResource = {
  group: phantomgateGroup,
  version: "v1alpha1",
  plural: "authservers",
  kind: "AuthServer",
  namespaced: true,
};
export const secrets: ApiResource = {
  group: "",
  version: "v1",
  plural: "secrets",
  kind: "Secret",
  namespaced: true,
};
export const leases: ApiResource = {
  group: "coordination.k8s.io",
  version: "v1",
  plural: "leases",
  kind: "Lease",
  namespaced: true,
};
export const events: ApiResource = {
  group: "events.k8s.io",
  version: "v1",
  plural: "events",
  kind: "Event",
  namespaced: true,
};

/** The custom resources whose status the operator writes, by kind. */
export const statusResources = {
  ApiRoute: apiRoutes,
  ScopePolicy: scopePolicies,
  AuthServer: authServers,
} as const;

/** `apiVersion` of a resource as objects carry it: `v1` or `group/version`. */
export function apiVersionOf(resource: ApiResource): string {
  return resource.group === "" ? resource.version : `${resource.group}/${resource.version}`;
}

/**
 * The REST path of a collection (no `name`) or of one object, optionally a subresource. A namespaced resource
 * without `namespace` is the all-namespaces collection.
 */
export function resourcePath(
  resource: ApiResource,
  target: {
    readonly namespace?: string | undefined;
    readonly name?: string;
    readonly subresource?: string;
  } = {},
): string {
  const root =
    resource.group === "" ? `/api/${resource.version}` : `/apis/${resource.group}/${resource.version}`;
  const scope =
    resource.namespaced && target.namespace !== undefined
      ? `/namespaces/${encodeURIComponent(target.namespace)}`
      : "";
  const name = target.name === undefined ? "" : `/${encodeURIComponent(target.name)}`;
  const subresource =
    target.subresource === undefined || target.name === undefined ? "" : `/${target.subresource}`;
  return `${root}${scope}/${resource.plural}${name}${subresource}`;
}
