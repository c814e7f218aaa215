// The source stage: list+watch loops for ApiRoute, ScopePolicy, AuthServer and Secret (all namespaces or each
// configured namespace) feeding the object store. Secrets are all watched — Kubernetes cannot select "the ones
// an AuthServer names" — but only the referenced keys of referenced Secrets are kept; when the references grow,
// the Secret loops list again, and the store reports "not settled" until they have, so compile never sees an
// AuthServer before its Secret.
import type { Logger } from "pino";
import type { SourceObject } from "../../compile/compile.ts";
import type { Clock } from "../../tokens/clock.ts";
import { apiRoutes, authServers, scopePolicies, secrets, type ApiResource } from "../kube/api-resources.ts";
import type { KubeClient } from "../kube/kube-client.ts";
import {
  startListWatch,
  type KubeObject,
  type ListWatch,
  type ListWatchHandler,
} from "../kube/list-watch.ts";
import type { Timers } from "../kube/timers.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { ObjectStore, type WatchedKind } from "./object-store.ts";
import {
  collectSecretReferences,
  namespacesWithNewReferences,
  sameReferences,
  type SecretReferences,
} from "./secret-references.ts";
import { identityKey, slimCustomResource, slimSecret } from "./slim.ts";

export interface SourceOptions {
  readonly client: KubeClient;
  /** Watch only these namespaces; empty: all namespaces. */
  readonly namespaces: readonly string[];
  /** List again this often even when the watches look healthy. */
  readonly relistIntervalMs: number;
  /** Restart a watch that delivered nothing (not even a bookmark) for this long. */
  readonly stallTimeoutMs: number;
  /** Server-side timeout of each watch call. */
  readonly watchTimeoutSeconds: number;
  /** Only Secrets with these labels are read (e.g. `phantomgate.dev/auth-server=true`); empty: all. */
  readonly secretLabelSelector?: string | undefined;
  readonly logger: Logger;
  readonly metrics?: OperatorMetrics;
  readonly clock?: Clock;
  readonly timers?: Timers;
}

export interface Source {
  readonly store: ObjectStore;
  /** Resolves when every loop has completed its first list. */
  readonly synced: Promise<void>;
  isSynced(): boolean;
  /** False while Secret loops re-list for references that just appeared. */
  isSettled(): boolean;
  /** The watched objects as compile input (for the webhook's cross-object checks). */
  world(): SourceObject[];
  /** Every loop (for diagnosis and tests). */
  readonly loops: readonly ListWatch[];
  stop(): Promise<void>;
}

/** Starts watching. The store fills as the first lists complete; wait for `synced` before compiling. */
export function startSource(options: SourceOptions): Source {
  const { client, logger, metrics } = options;
  const store = new ObjectStore();
  const scopes: (string | undefined)[] =
    options.namespaces.length === 0 ? [undefined] : [...new Set(options.namespaces)];
  let references: SecretReferences = new Map();
  let pendingSecretLists = 0;
  let stopped = false;

  const customResourceHandler = (
    kind: Exclude<WatchedKind, "Secret">,
    namespace: string | undefined,
  ): ListWatchHandler => ({
    replace(items) {
      const slimmed = items.flatMap((item) => slimCustomResource(kind, item) ?? []);
      store.replace(kind, namespace, slimmed);
    },
    apply(type, object) {
      if (type === "DELETED") {
        const identity = identityKey(object);
        if (identity !== undefined) store.remove(kind, identity.namespace, identity.name);
        return;
      }
      const slimmed = slimCustomResource(kind, object);
      if (slimmed !== undefined) store.upsert(slimmed);
    },
  });

  const secretHandler = (namespace: string | undefined): ListWatchHandler => {
    const keep = (object: KubeObject) => {
      const identity = identityKey(object);
      if (identity === undefined) return undefined;
      const keys = references.get(`${identity.namespace}/${identity.name}`);
      return keys === undefined ? undefined : slimSecret(object, keys);
    };
    return {
      replace(items) {
        store.replace(
          "Secret",
          namespace,
          items.flatMap((item) => keep(item) ?? []),
        );
      },
      apply(type, object) {
        const identity = identityKey(object);
        if (identity === undefined) return;
        const slimmed = type === "DELETED" ? undefined : keep(object);
        if (slimmed === undefined) store.remove("Secret", identity.namespace, identity.name);
        else store.upsert(slimmed);
      },
    };
  };

  const makeLoop = (
    resource: ApiResource,
    namespace: string | undefined,
    handler: ListWatchHandler,
    labelSelector?: string,
  ) =>
    startListWatch({
      client,
      resource,
      namespace,
      labelSelector,
      handler,
      relistIntervalMs: options.relistIntervalMs,
      stallTimeoutMs: options.stallTimeoutMs,
      watchTimeoutSeconds: options.watchTimeoutSeconds,
      // Secret lists may be large (Helm keeps releases in Secrets): smaller pages bound the memory of a list.
      pageSize: resource === secrets ? 100 : 500,
      logger,
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      ...(options.timers === undefined ? {} : { timers: options.timers }),
      onRestart: (reason) => metrics?.watchRestarts.labels(resource.plural, reason).inc(),
      onList: () => metrics?.lists.labels(resource.plural).inc(),
      onEvent: (type) => metrics?.watchEvents.labels(resource.plural, type).inc(),
    });

  const secretLoops = new Map<string | undefined, ListWatch>();
  const loops: ListWatch[] = [];
  const authServerLoops: ListWatch[] = [];
  for (const namespace of scopes) {
    const authServerLoop = makeLoop(authServers, namespace, customResourceHandler("AuthServer", namespace));
    authServerLoops.push(authServerLoop);
    loops.push(authServerLoop);
    loops.push(makeLoop(scopePolicies, namespace, customResourceHandler("ScopePolicy", namespace)));
    loops.push(makeLoop(apiRoutes, namespace, customResourceHandler("ApiRoute", namespace)));
  }
  // Secrets after the AuthServers: listed before them, every referenced Secret would be dropped and need a
  // second list.
  const secretsStarted = Promise.all(authServerLoops.map((loop) => loop.synced)).then(() => {
    if (stopped) return;
    for (const namespace of scopes) {
      const secretLoop = makeLoop(secrets, namespace, secretHandler(namespace), options.secretLabelSelector);
      secretLoops.set(namespace, secretLoop);
      loops.push(secretLoop);
    }
  });

  // The Secrets kept follow the AuthServers: recompute the references when an AuthServer changes.
  const refreshReferences = (): void => {
    const next = collectSecretReferences(store.list("AuthServer"));
    if (sameReferences(references, next)) return;
    const grown = namespacesWithNewReferences(references, next);
    references = next;
    // Drop what is no longer referenced (a Secret, or keys of one).
    for (const secret of store.list("Secret")) {
      if (!references.has(`${secret.namespace}/${secret.name}`))
        store.remove("Secret", secret.namespace, secret.name);
    }
    if (grown.size === 0) return;
    const affected = new Set<ListWatch>();
    for (const namespace of grown) {
      const loop = secretLoops.get(scopes[0] === undefined ? undefined : namespace);
      if (loop !== undefined) affected.add(loop);
    }
    for (const loop of affected) {
      // Only after the first list: that one reads the references as they are by then anyway.
      if (!loop.hasSynced()) continue;
      pendingSecretLists += 1;
      logger.debug({ watch: loop.description }, "AuthServers reference new Secrets; listing Secrets again");
      void loop.relist().finally(() => {
        pendingSecretLists -= 1;
        if (!stopped) store.touch("Secret");
      });
    }
  };
  store.onChange((change, kind) => {
    if (change === "spec" && kind === "AuthServer") refreshReferences();
  });

  const synced = secretsStarted
    .then(() => Promise.all(loops.map((loop) => loop.synced)))
    .then(() => undefined);

  return {
    store,
    synced,
    isSynced: () => secretLoops.size > 0 && loops.every((loop) => loop.hasSynced()),
    isSettled: () => pendingSecretLists === 0,
    world: () => store.sourceObjects(),
    loops,
    async stop() {
      stopped = true;
      // Secret loops not started yet never will be (`stopped` is checked when AuthServers sync).
      await Promise.all(loops.map((loop) => loop.stop()));
    },
  };
}
