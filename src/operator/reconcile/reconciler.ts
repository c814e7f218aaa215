// The reconcile stage: a debounced compile of the object store into a snapshot, published to the fleet when its
// revision changes, with the per-object results handed on to the status stage. Compile is pure and never
// throws on bad objects; this stage only decides when to run it.
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { compile, type CompileResult, type ObjectResult } from "../../compile/compile.ts";
import type { Snapshot } from "../../snapshot/snapshot.ts";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { systemTimers, type TimerHandle, type Timers } from "../kube/timers.ts";
import type { OperatorMetrics } from "../metrics.ts";
import type { ObjectStore } from "../source/object-store.ts";
import { createDebouncer } from "./debounce.ts";

/** One compile of the store. */
export interface Compiled {
  readonly result: CompileResult;
  /** The store's spec version it was compiled from. */
  readonly specVersion: number;
  readonly compiledAtMs: number;
}

/** What the reconciler reads of the source stage. */
export interface ReconcileSource {
  readonly store: ObjectStore;
  isSynced(): boolean;
  isSettled(): boolean;
  readonly synced: Promise<void>;
}

export interface ReconcilerOptions {
  readonly source: ReconcileSource;
  /** Receives every new revision (the distributor). */
  readonly publish: (snapshot: Snapshot) => void;
  /** Quiet period after a change before compiling. */
  readonly debounceMs: number;
  /** Longest a change waits while changes keep coming. */
  readonly maxWaitMs: number;
  /** Longest compile waits for Secrets being fetched after new references (then compiles anyway). Default 5 s. */
  readonly settleTimeoutMs?: number;
  /** The source's `--secret-label-selector`, named in the status of an AuthServer whose Secret is missing. */
  readonly secretLabelSelector?: string | undefined;
  readonly logger: Logger;
  readonly metrics?: OperatorMetrics;
  readonly clock?: Clock;
  readonly timers?: Timers;
}

export interface Reconciler {
  /** The last compile, once there was one. */
  current(): Compiled | undefined;
  /** Called after every compile (a new revision or not: per-object results may still differ). */
  onCompiled(listener: (compiled: Compiled) => void): () => void;
  /** Compiles now if anything is pending (tests, shutdown). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Starts compiling once the source has synced, then after every change of compile input. */
/** How many rejected objects the "snapshot compiled" log line names. */
export const maxLoggedRejected = 20;

/** `Kind namespace/name (reason)` of the first rejected objects, and how many more there are. */
export function describeRejected(rejected: readonly ObjectResult[]): string[] {
  const named = rejected
    .slice(0, maxLoggedRejected)
    .map((object) => `${object.kind} ${object.namespace}/${object.name} (${object.reason})`);
  const more = rejected.length - named.length;
  return more > 0 ? [...named, `… and ${more} more`] : named;
}

export function startReconciler(options: ReconcilerOptions): Reconciler {
  const { source, logger, metrics } = options;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const settleTimeoutMs = options.settleTimeoutMs ?? 5_000;
  const listeners = new Set<(compiled: Compiled) => void>();
  let current: Compiled | undefined;
  let unsettledSinceMs: number | undefined;
  let settleTimer: TimerHandle | undefined;

  const run = (): void => {
    if (!source.isSynced()) return; // `synced` triggers the first run
    if (!source.isSettled()) {
      unsettledSinceMs ??= clock.now();
      const waitedMs = clock.now() - unsettledSinceMs;
      if (waitedMs < settleTimeoutMs) {
        // The store touches itself when it settles; this timer is the upper bound.
        timers.clearTimeout(settleTimer);
        settleTimer = timers.setTimeout(() => debouncer.trigger(), settleTimeoutMs - waitedMs);
        return;
      }
      logger.warn({ waitedMs }, "referenced Secrets still being listed; compiling without them");
    }
    unsettledSinceMs = undefined;
    timers.clearTimeout(settleTimer);
    const specVersion = source.store.specVersion;
    const started = performance.now();
    let result: CompileResult;
    try {
      result = compile({
        objects: source.store.sourceObjects(),
        secretLabelSelector: options.secretLabelSelector,
      });
    } catch (error) {
      metrics?.reconciles.labels("error").inc();
      logger.error({ err: error }, "compile failed");
      return;
    }
    const seconds = (performance.now() - started) / 1000;
    metrics?.compileSeconds.observe(seconds);
    const previousRevision = current?.result.snapshot.revision;
    const revision = result.snapshot.revision;
    current = { result, specVersion, compiledAtMs: clock.now() };
    recordObjectCounts(result);
    if (revision !== previousRevision) {
      options.publish(result.snapshot);
      metrics?.reconciles.labels("published").inc();
      metrics?.snapshotRevision.reset();
      metrics?.snapshotRevision.labels(revision).set(1);
      const rejectedObjects = result.perObjectResults.filter((object) => !object.accepted);
      logger.info(
        {
          revision,
          previous: previousRevision ?? null,
          routes: result.snapshot.routes.length,
          rejected: rejectedObjects.length,
          ...(rejectedObjects.length === 0 ? {} : { rejectedObjects: describeRejected(rejectedObjects) }),
          compileMs: Math.round(seconds * 1000),
        },
        "snapshot compiled",
      );
    } else {
      metrics?.reconciles.labels("unchanged").inc();
    }
    for (const listener of listeners) {
      try {
        listener(current);
      } catch (error) {
        logger.error({ err: error }, "compile listener failed");
      }
    }
  };

  const recordObjectCounts = (result: CompileResult): void => {
    if (metrics === undefined) return;
    metrics.objects.reset();
    for (const object of result.perObjectResults) {
      metrics.objects.labels(object.kind, String(object.accepted)).inc();
    }
  };

  const debouncer = createDebouncer({
    delayMs: options.debounceMs,
    maxWaitMs: options.maxWaitMs,
    run,
    onError: (error) => logger.error({ err: error }, "reconcile failed"),
    clock,
    timers,
  });
  const unsubscribe = source.store.onChange((change) => {
    if (change === "spec") debouncer.trigger();
  });
  void source.synced.then(() => debouncer.trigger());

  return {
    current: () => current,
    onCompiled(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    flush: () => debouncer.flush(),
    async close() {
      unsubscribe();
      timers.clearTimeout(settleTimer);
      await debouncer.close();
    },
  };
}
