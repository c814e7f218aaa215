// Cuts watched objects down to what compile reads before they are stored: no managedFields, no annotations
// (kubectl's last-applied-configuration would keep a second copy of every spec, and of Secret values), no
// status (kept aside for the status writer); for Secrets only the keys an AuthServer references.
import type { KubeObject } from "../kube/list-watch.ts";
import type { StoredObject, WatchedKind } from "./object-store.ts";

/** The identity of an object from the API server, or undefined when it lacks a name. */
function identityOf(object: KubeObject): { namespace: string; name: string } | undefined {
  const name = object.metadata?.name;
  if (typeof name !== "string" || name === "") return undefined;
  const namespace = object.metadata?.namespace;
  return { namespace: typeof namespace === "string" && namespace !== "" ? namespace : "default", name };
}

const numberOrUndefined = (value: unknown): number | undefined =>
  typeof value === "number" ? value : undefined;
const stringOrUndefined = (value: unknown): string | undefined =>
  typeof value === "string" ? value : undefined;

/** A custom resource as compile reads it (apiVersion, kind, name, namespace, uid, generation, creation, spec). */
export function slimCustomResource(
  kind: Exclude<WatchedKind, "Secret">,
  object: KubeObject,
): StoredObject | undefined {
  const identity = identityOf(object);
  if (identity === undefined) return undefined;
  const metadata = object.metadata ?? {};
  const generation = numberOrUndefined(metadata.generation);
  const uid = stringOrUndefined(metadata.uid);
  const creationTimestamp = stringOrUndefined(metadata.creationTimestamp);
  return {
    kind,
    ...identity,
    uid,
    generation,
    resourceVersion: stringOrUndefined(metadata.resourceVersion),
    object: {
      apiVersion: object.apiVersion,
      kind: object.kind ?? kind,
      metadata: {
        name: identity.name,
        namespace: identity.namespace,
        ...(uid === undefined ? {} : { uid }),
        ...(generation === undefined ? {} : { generation }),
        ...(creationTimestamp === undefined ? {} : { creationTimestamp }),
      },
      spec: object.spec,
    },
    status: object.status,
  };
}

/** A Secret reduced to the referenced `keys` of its data (base64 as the API server sends it). */
export function slimSecret(object: KubeObject, keys: ReadonlySet<string>): StoredObject | undefined {
  const identity = identityOf(object);
  if (identity === undefined) return undefined;
  const metadata = object.metadata ?? {};
  const uid = stringOrUndefined(metadata.uid);
  const data: Record<string, string> = {};
  const source = object.data;
  if (typeof source === "object" && source !== null) {
    for (const key of keys) {
      const value = (source as Record<string, unknown>)[key];
      if (typeof value === "string") data[key] = value;
    }
  }
  return {
    kind: "Secret",
    ...identity,
    uid,
    generation: undefined,
    resourceVersion: stringOrUndefined(metadata.resourceVersion),
    object: {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: identity.name, namespace: identity.namespace, ...(uid === undefined ? {} : { uid }) },
      data,
    },
    status: undefined,
  };
}

/** `namespace/name` of an object from the API server (for deletes). */
export function identityKey(object: KubeObject): { namespace: string; name: string } | undefined {
  return identityOf(object);
}
