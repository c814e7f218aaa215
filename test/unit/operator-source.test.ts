// The object store and what the source keeps of watched objects: slimmed custom resources, status kept aside,
// only the referenced keys of referenced Secrets.
import { describe, expect, it } from "vitest";
import { ObjectStore, type StoreChange } from "../../src/operator/source/object-store.ts";
import {
  collectSecretReferences,
  namespacesWithNewReferences,
} from "../../src/operator/source/secret-references.ts";
import { slimCustomResource, slimSecret } from "../../src/operator/source/slim.ts";

const apiRoute = (resourceVersion: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: "phantomgate.dev/v1alpha1",
  kind: "ApiRoute",
  metadata: {
    name: "echo",
    namespace: "shop",
    uid: "u1",
    generation: 2,
    resourceVersion,
    creationTimestamp: "2030-01-01T00:00:00Z",
    annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{…a copy of the spec…}" },
    managedFields: [{ manager: "kubectl" }],
    labels: { team: "a" },
  },
  spec: { rules: [] },
  ...extra,
});

describe("slimming", () => {
  it("keeps what compile reads of a custom resource, and its status aside", () => {
    const stored = slimCustomResource("ApiRoute", apiRoute("7", { status: { observedGeneration: 1 } }));
    expect(stored).toEqual({
      kind: "ApiRoute",
      namespace: "shop",
      name: "echo",
      uid: "u1",
      generation: 2,
      resourceVersion: "7",
      object: {
        apiVersion: "phantomgate.dev/v1alpha1",
        kind: "ApiRoute",
        metadata: {
          name: "echo",
          namespace: "shop",
          uid: "u1",
          generation: 2,
          creationTimestamp: "2030-01-01T00:00:00Z",
        },
        spec: { rules: [] },
      },
      status: { observedGeneration: 1 },
    });
  });

  it("keeps only the referenced keys of a Secret, and none of its metadata beyond identity", () => {
    const secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: "creds",
        namespace: "shop",
        uid: "s1",
        annotations: { "kubectl.kubernetes.io/last-applied-configuration": "secret!" },
      },
      type: "Opaque",
      data: { "client-secret": "c2VjcmV0", "other-key": "b3RoZXI=" },
    };
    expect(slimSecret(secret, new Set(["client-secret"]))?.object).toEqual({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "creds", namespace: "shop", uid: "s1" },
      data: { "client-secret": "c2VjcmV0" },
    });
  });
});

describe("object store", () => {
  it("tells compile-input changes from status-only and resourceVersion-only changes", () => {
    const store = new ObjectStore();
    const changes: StoreChange[] = [];
    store.onChange((change) => changes.push(change));
    const put = (object: Record<string, unknown>) => {
      const stored = slimCustomResource("ApiRoute", object);
      if (stored !== undefined) store.upsert(stored);
    };
    put(apiRoute("1"));
    put(apiRoute("2")); // nothing compile reads changed
    put(apiRoute("3", { status: { observedGeneration: 2 } }));
    put(apiRoute("4", { spec: { rules: [{}] } }));
    store.remove("ApiRoute", "shop", "echo");
    store.remove("ApiRoute", "shop", "echo");
    expect(changes).toEqual(["spec", "status", "spec", "spec"]);
  });

  it("replace() makes a list the whole truth for its kind and namespace, with one notification", () => {
    const store = new ObjectStore();
    const slim = (name: string, namespace: string) =>
      slimCustomResource("ScopePolicy", {
        apiVersion: "phantomgate.dev/v1alpha1",
        kind: "ScopePolicy",
        metadata: { name, namespace, generation: 1 },
        spec: {},
      });
    for (const [name, namespace] of [
      ["a", "x"],
      ["b", "x"],
      ["c", "y"],
    ] as const) {
      const stored = slim(name, namespace);
      if (stored !== undefined) store.upsert(stored);
    }
    let notifications = 0;
    store.onChange(() => notifications++);
    const listed = slim("a", "x");
    store.replace("ScopePolicy", "x", listed === undefined ? [] : [listed]);
    expect(
      store
        .list("ScopePolicy")
        .map((o) => `${o.namespace}/${o.name}`)
        .sort(),
    ).toEqual(["x/a", "y/c"]);
    expect(notifications).toBe(1);
    expect(store.sourceObjects()).toHaveLength(2);
  });
});

describe("Secret references", () => {
  const authServer = (namespace: string, secretName: string, key: string) => {
    const stored = slimCustomResource("AuthServer", {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "AuthServer",
      metadata: { name: `as-${secretName}`, namespace, generation: 1 },
      spec: { clientAuthentication: { clientSecret: { secretRef: { name: secretName, key } } } },
    });
    if (stored === undefined) throw new Error("no name");
    return stored;
  };

  it("collects namespace/name → keys and reports the namespaces whose references grew", () => {
    const before = collectSecretReferences([authServer("shop", "creds", "id")]);
    const after = collectSecretReferences([
      authServer("shop", "creds", "id"),
      authServer("shop", "creds2", "k"),
      authServer("pay", "creds", "id"),
    ]);
    expect([...after.entries()].map(([id, keys]) => [id, [...keys]])).toEqual([
      ["shop/creds", ["id"]],
      ["shop/creds2", ["k"]],
      ["pay/creds", ["id"]],
    ]);
    expect([...namespacesWithNewReferences(before, after)].sort()).toEqual(["pay", "shop"]);
    expect(namespacesWithNewReferences(after, before).size).toBe(0);
    const newKey = collectSecretReferences([authServer("shop", "creds", "secret")]);
    expect([...namespacesWithNewReferences(before, newKey)]).toEqual(["shop"]);
  });
});
