// The status stage (leader only): after every compile, fleet change or foreign status edit (debounced), compute
// each ApiRoute/ScopePolicy/AuthServer's status and patch `/status` where it differs from what the watch last
// showed. Our own writes come back as status-only watch events, which compare equal: no write loop. A rejection
// also becomes a Warning Event, once per change of the Accepted condition.
import type { Logger } from "pino";
import { canonicalJson, type ObjectResult } from "../../compile/compile.ts";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import type { FleetView } from "../distribute/distributor.ts";
import { apiVersionOf, resourcePath, statusResources } from "../kube/api-resources.ts";
import { createBackoff } from "../kube/backoff.ts";
import { isKubeStatus, type KubeClient } from "../kube/kube-client.ts";
import { describeError } from "../kube/list-watch.ts";
import { systemTimers, type TimerHandle, type Timers } from "../kube/timers.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { createDebouncer } from "../reconcile/debounce.ts";
import type { Compiled } from "../reconcile/reconciler.ts";
import { objectKey, type ObjectStore, type StoredObject } from "../source/object-store.ts";
import {
  acceptedConditionType,
  computeStatus,
  readConditions,
  statusUpToDate,
  type ObjectStatus,
} from "./conditions.ts";
import type { EventRecorder } from "./events.ts";
import { isStatusKind, RevisionLedger, type StatusKind } from "./programmed.ts";

/** Where the fleet view comes from (this replica's distributor, or all replicas' views merged). */
export interface FleetSource {
  view(): FleetView;
  /**
   * True while the view is known to be incomplete (the replica just started, or a peer replica went away and its
   * gateways are reconnecting elsewhere): an object's Programmed condition is then not lowered. Listeners hear
   * when it ends. Absent: never.
   */
  settling?(): boolean;
  onChange(listener: () => void): () => void;
}

export interface StatusWriterOptions {
  readonly client: KubeClient;
  readonly store: ObjectStore;
  readonly reconciler: {
    current(): Compiled | undefined;
    onCompiled(listener: (compiled: Compiled) => void): () => void;
  };
  readonly fleet: FleetSource;
  readonly isLeader: () => boolean;
  readonly recorder: EventRecorder;
  /** Quiet period before writing after a change. Default 200 ms. */
  readonly debounceMs?: number;
  /** Longest a change waits while changes keep coming. Default 1 s. */
  readonly maxWaitMs?: number;
  /** Status patches in flight at once. Default 8. */
  readonly concurrency?: number;
  readonly logger: Logger;
  readonly metrics?: OperatorMetrics;
  readonly clock?: Clock;
  readonly timers?: Timers;
}

export interface StatusWriter {
  /** Asks for a pass (e.g. on becoming leader). */
  trigger(): void;
  /** Runs a pending pass now and waits for its writes. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

interface Write {
  readonly stored: StoredObject;
  readonly kind: StatusKind;
  readonly result: ObjectResult;
  readonly desired: ObjectStatus;
  readonly desiredJson: string;
}

/** One JSON Patch operation (RFC 6902), as the status write uses them. */
export type StatusPatchOperation =
  | { readonly op: "test"; readonly path: string; readonly value: unknown }
  | { readonly op: "add"; readonly path: string; readonly value: unknown };

/**
 * The status write as a JSON Patch. Its first operation tests the object's uid, which the API server checks
 * against the object as stored: a re-created object of the same name fails it (422) and is not given the old
 * object's verdict. (A uid in a merge patch of `/status` is not checked: the API server keeps the stored
 * metadata and drops the patch's.) Only the fields we own are replaced, as a merge patch would: other fields of
 * an existing status stay.
 */
export function statusPatch(
  uid: string | undefined,
  existing: unknown,
  desired: ObjectStatus,
): StatusPatchOperation[] {
  const operations: StatusPatchOperation[] = [];
  if (uid !== undefined) operations.push({ op: "test", path: "/metadata/uid", value: uid });
  if (typeof existing !== "object" || existing === null || Array.isArray(existing)) {
    operations.push({ op: "add", path: "/status", value: desired });
    return operations;
  }
  for (const [field, value] of Object.entries(desired))
    if (value !== undefined) operations.push({ op: "add", path: `/status/${field}`, value });
  return operations;
}

/** metav1.Time has second precision; a finer time would never compare equal after a round trip. */
export function kubeTime(epochMs: number): string {
  return new Date(epochMs).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function startStatusWriter(options: StatusWriterOptions): StatusWriter {
  const { client, store, reconciler, fleet, isLeader, recorder, logger, metrics } = options;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const concurrency = options.concurrency ?? 8;
  const ledger = new RevisionLedger();
  /**
   * Per object: what we last wrote, its Accepted condition, and the resourceVersion the store held then (its watch
   * event is pending).
   */
  const lastWritten = new Map<
    string,
    { json: string; basedOn: string | undefined; accepted: ObjectStatus["conditions"][number] | undefined }
  >();
  const retryBackoff = createBackoff({ initialMs: 1_000, maxMs: 60_000 });
  let retryTimer: TimerHandle | undefined;
  let closed = false;
  /** False once a write came back without `fleet`: the CRD's status schema prunes it, so it is not compared. */
  let fleetStored = true;

  const uidOf = (kind: StatusKind, namespace: string, name: string) => store.get(kind, namespace, name)?.uid;

  const plan = (compiled: Compiled, view: FleetView): Write[] => {
    const nowIso = kubeTime(clock.now());
    const holdProgrammed = fleet.settling?.() ?? false;
    const writes: Write[] = [];
    const present = new Set<string>();
    for (const result of compiled.result.perObjectResults) {
      if (!isStatusKind(result.kind)) continue;
      const key = objectKey(result.kind, result.namespace, result.name);
      present.add(key);
      const stored = store.get(result.kind, result.namespace, result.name);
      // Gone, or changed since this compile: the next compile speaks for it.
      if (stored === undefined || stored.generation !== result.generation) continue;
      const programmed = ledger.programmedInput(result.kind, result.namespace, result.name, view);
      const desired = computeStatus({ result, programmed, existing: stored.status, nowIso, holdProgrammed });
      if (statusUpToDate(stored.status, desired, { ignoreFleet: !fleetStored })) {
        lastWritten.delete(key);
        continue;
      }
      const desiredJson = canonicalJson(desired);
      const last = lastWritten.get(key);
      if (last !== undefined && last.json === desiredJson && last.basedOn === stored.resourceVersion)
        continue;
      writes.push({ stored, kind: result.kind, result, desired, desiredJson });
    }
    for (const key of lastWritten.keys()) if (!present.has(key)) lastWritten.delete(key);
    return writes;
  };

  /**
   * Whether a refused write (422) failed its uid test: the object is gone or is another object now. A 422 for
   * the same object is a real refusal (e.g. a status the CRD's schema does not take), logged as a failure.
   */
  const replacedMeanwhile = async (error: unknown, { stored, kind }: Write): Promise<boolean> => {
    if (!isKubeStatus(error, 422) || stored.uid === undefined) return false;
    const resource = statusResources[kind];
    try {
      const now = await client.request<{ metadata?: { uid?: string } } | undefined>({
        method: "GET",
        path: resourcePath(resource, {
          namespace: stored.namespace,
          name: stored.name,
          subresource: "status",
        }),
      });
      return now?.metadata?.uid !== stored.uid;
    } catch (lookup) {
      return isKubeStatus(lookup, 404);
    }
  };

  const write = async (entry: Write): Promise<boolean> => {
    const { stored, kind, result, desired } = entry;
    const resource = statusResources[kind];
    const path = resourcePath(resource, {
      namespace: stored.namespace,
      name: stored.name,
      subresource: "status",
    });
    let written: { status?: { fleet?: unknown } } | undefined;
    try {
      written = await client.request<{ status?: { fleet?: unknown } } | undefined>({
        method: "PATCH",
        path,
        contentType: "application/json-patch+json",
        body: statusPatch(stored.uid, stored.status, desired),
      });
    } catch (error) {
      if (isKubeStatus(error, 404) || isKubeStatus(error, 409) || (await replacedMeanwhile(error, entry))) {
        metrics?.statusWrites.labels(kind, "conflict").inc();
        return true; // deleted or re-created meanwhile: its watch event brings a new pass
      }
      metrics?.statusWrites.labels(kind, "error").inc();
      logger.warn(
        { err: describeError(error), object: `${kind} ${stored.namespace}/${stored.name}` },
        "status write failed",
      );
      return false;
    }
    metrics?.statusWrites.labels(kind, "ok").inc();
    if (fleetStored && written?.status !== undefined && written.status.fleet === undefined) {
      fleetStored = false;
      logger.warn(
        { crd: `${resource.plural}.${resource.group}` },
        "the CRD's status schema has no fleet field (the API server drops it): update the CRDs; comparing without it",
      );
    }
    logger.debug(
      { object: `${kind} ${stored.namespace}/${stored.name}`, generation: result.generation },
      "status written",
    );
    const key = objectKey(kind, stored.namespace, stored.name);
    const previous = lastWritten.get(key);
    const after = desired.conditions.find((condition) => condition.type === acceptedConditionType);
    lastWritten.set(key, { json: entry.desiredJson, basedOn: stored.resourceVersion, accepted: after });
    // Compared with what the object says now: our previous write when the watch has not brought it back yet
    // (the store still holds the version it was based on), else the stored status.
    const before =
      previous !== undefined && previous.basedOn === stored.resourceVersion
        ? previous.accepted
        : readConditions(stored.status).find((condition) => condition.type === acceptedConditionType);
    const changed =
      before === undefined ||
      before.status !== after?.status ||
      before.reason !== after.reason ||
      before.message !== after.message;
    if (!result.accepted && after !== undefined && changed) {
      await recorder.record(
        {
          apiVersion: apiVersionOf(resource),
          kind,
          namespace: stored.namespace,
          name: stored.name,
          uid: stored.uid,
          resourceVersion: stored.resourceVersion,
        },
        { type: "Warning", reason: result.reason, action: "Compile", note: after.message },
      );
    }
    return true;
  };

  const pass = async (): Promise<void> => {
    if (closed || !isLeader()) return;
    const compiled = reconciler.current();
    if (compiled === undefined) return;
    const writes = plan(compiled, fleet.view());
    if (writes.length === 0) return;
    let failures = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < writes.length && !closed && isLeader()) {
        const entry = writes[next++];
        if (entry !== undefined && !(await write(entry))) failures += 1;
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, writes.length) }, worker));
    logger.debug({ writes: writes.length, failures }, "status pass done");
    if (failures === 0) {
      retryBackoff.reset();
      return;
    }
    // Nothing else may change for a while: come back on our own.
    timers.clearTimeout(retryTimer);
    retryTimer = timers.setTimeout(() => debouncer.trigger(), retryBackoff.next());
  };

  const debouncer = createDebouncer({
    delayMs: options.debounceMs ?? 200,
    maxWaitMs: options.maxWaitMs ?? 1_000,
    run: pass,
    onError: (error) => logger.error({ err: error }, "status pass failed"),
    clock,
    timers,
  });

  const unsubscribers = [
    reconciler.onCompiled((compiled) => {
      ledger.record(compiled.result, uidOf);
      debouncer.trigger();
    }),
    fleet.onChange(() => debouncer.trigger()),
    // Someone else edited a status (or our write came back): compare again; equal statuses write nothing.
    store.onChange((change) => {
      if (change === "status") debouncer.trigger();
    }),
  ];
  const initial = reconciler.current();
  if (initial !== undefined) ledger.record(initial.result, uidOf);

  return {
    trigger: () => debouncer.trigger(),
    flush: () => debouncer.flush(),
    async close() {
      closed = true;
      for (const unsubscribe of unsubscribers) unsubscribe();
      timers.clearTimeout(retryTimer);
      await debouncer.close();
    },
  };
}
