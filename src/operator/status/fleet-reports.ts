// The whole fleet for the leader's status. Every replica serves snapshots, so each knows only the gateways
// streaming from it: each replica publishes its view in a Lease of its own (labelled, in the operator's
// namespace, like the API server's identity Leases) and everyone watches those Leases; the merged view is this
// replica's own plus every peer report seen recently. A replica that vanished stops renewing its report and
// drops out after `staleAfterMs`; the leader deletes reports that stayed stale much longer.
import type { Logger } from "pino";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import {
  mergeFleetViews,
  type Distributor,
  type FleetView,
  type GatewayState,
} from "../distribute/distributor.ts";
import { leases, resourcePath } from "../kube/api-resources.ts";
import { isKubeStatus, type KubeClient } from "../kube/kube-client.ts";
import { describeError, startListWatch, type KubeObject, type ListWatch } from "../kube/list-watch.ts";
import { systemTimers, type TimerHandle, type Timers } from "../kube/timers.ts";
import { createDebouncer } from "../reconcile/debounce.ts";
import { microTime } from "./events.ts";
import type { FleetSource } from "./status-writer.ts";

/** Label on every fleet report Lease; its value is the election Lease's name (one operator install). */
export const fleetReportLabel = "phantomgate.dev/fleet-report";
/** Annotation holding a report: `{ revision, gateways }` as JSON. */
export const fleetReportAnnotation = "phantomgate.dev/fleet";
/** Annotations are limited to 256 KiB in total; a larger report is cut (and says so in the log). */
const maxReportBytes = 200 * 1024;

export interface FleetExchangeOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  /** The election Lease's name: reports are `<leaseName>-fleet-<identity>`. */
  readonly leaseName: string;
  readonly identity: string;
  readonly distributor: Distributor;
  /** A replica renews its report this often (and on every change of its view, debounced). Default 5 s. */
  readonly heartbeatMs?: number;
  /** Reports not renewed for this long are left out. Default 3 heartbeats. */
  readonly staleAfterMs?: number;
  /** The leader deletes reports stale for this long. Default 10 minutes. */
  readonly deleteAfterMs?: number;
  /**
   * How long the view is "settling" after this replica starts and after a peer's report goes away (deleted by a
   * replica that stopped, or stale): the gateways that streamed from a replica that went away, or that stream
   * from peers this replica has not heard from yet, are reconnecting (within their backoff of up to 10 s) or
   * not yet reported. Default 15 s.
   */
  readonly settleMs?: number;
  readonly isLeader: () => boolean;
  readonly relistIntervalMs: number;
  readonly stallTimeoutMs: number;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly timers?: Timers;
}

export interface FleetExchange extends FleetSource {
  /** Stops publishing and watching, and deletes this replica's report. */
  stop(): Promise<void>;
}

interface PeerReport {
  readonly name: string;
  readonly identity: string;
  readonly view: FleetView;
  readonly resourceVersion: string | undefined;
  /** When this replica last saw the report change (its own clock: replicas' clocks need not agree). */
  seenMs: number;
}

/** The report Lease name of a replica (a DNS subdomain of at most 253 characters). */
export function fleetReportName(leaseName: string, identity: string): string {
  const suffix = identity
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return `${leaseName}-fleet-${suffix === "" ? "replica" : suffix}`.slice(0, 253).replace(/[^a-z0-9]+$/, "");
}

function parseReport(object: KubeObject): { identity: string; view: FleetView } | undefined {
  const annotations = object.metadata?.annotations as Record<string, unknown> | undefined;
  const text = annotations?.[fleetReportAnnotation];
  const spec = object.spec as { holderIdentity?: unknown } | undefined;
  if (typeof text !== "string" || typeof spec?.holderIdentity !== "string") return undefined;
  try {
    const parsed = JSON.parse(text) as { revision?: unknown; gateways?: unknown };
    if (!Array.isArray(parsed.gateways)) return undefined;
    const gateways = (parsed.gateways as Partial<GatewayState>[]).filter(
      (gateway): gateway is GatewayState =>
        typeof gateway.name === "string" &&
        typeof gateway.connected === "boolean" &&
        typeof gateway.lastSeenMs === "number",
    );
    const revision = typeof parsed.revision === "string" ? parsed.revision : undefined;
    const connected = gateways.filter((gateway) => gateway.connected);
    return {
      identity: spec.holderIdentity,
      view: {
        revision,
        gateways,
        connected: connected.length,
        programmed: connected.filter((gateway) => gateway.status === "ACK").length,
      },
    };
  } catch {
    return undefined;
  }
}

export function startFleetExchange(options: FleetExchangeOptions): FleetExchange {
  const { client, namespace, leaseName, identity, distributor, logger } = options;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const heartbeatMs = options.heartbeatMs ?? 5_000;
  const staleAfterMs = options.staleAfterMs ?? heartbeatMs * 3;
  const deleteAfterMs = options.deleteAfterMs ?? 10 * 60_000;
  const settleMs = options.settleMs ?? 15_000;
  const ownName = fleetReportName(leaseName, identity);
  const collectionPath = resourcePath(leases, { namespace });
  const ownPath = resourcePath(leases, { namespace, name: ownName });
  const log = logger.child({ fleetReport: `${namespace}/${ownName}` });
  const listeners = new Set<() => void>();
  const peers = new Map<string, PeerReport>();
  let ownResourceVersion: string | undefined;
  let stopped = false;
  let heartbeat: TimerHandle | undefined;
  let staleTimer: TimerHandle | undefined;
  /** Until the collector's first list, and until this time, the view is settling. */
  let listed = false;
  let settlingUntilMs = clock.now() + settleMs;
  let settledTimer: TimerHandle | undefined;

  const notify = (): void => {
    for (const listener of listeners) listener();
  };

  // Listeners hear when the settling ends: the view is then taken at its word.
  const scheduleSettled = (): void => {
    timers.clearTimeout(settledTimer);
    const waitMs = settlingUntilMs - clock.now();
    if (waitMs >= 0) settledTimer = timers.setTimeout(notify, waitMs + 1);
  };
  /** A peer's report went away: the gateways it listed are moving to other replicas. */
  const unsettle = (): void => {
    settlingUntilMs = Math.max(settlingUntilMs, clock.now() + settleMs);
    scheduleSettled();
  };
  scheduleSettled();

  // A peer report going stale changes the merged view although no event arrives: wake up then.
  const scheduleStaleCheck = (): void => {
    timers.clearTimeout(staleTimer);
    const nowMs = clock.now();
    let nextMs: number | undefined;
    for (const peer of peers.values()) {
      const staleAtMs = peer.seenMs + staleAfterMs;
      if (staleAtMs > nowMs && (nextMs === undefined || staleAtMs < nextMs)) nextMs = staleAtMs;
    }
    if (nextMs !== undefined) {
      staleTimer = timers.setTimeout(
        () => {
          unsettle(); // a peer's report just went stale
          notify();
          scheduleStaleCheck();
        },
        nextMs - nowMs + 1,
      );
    }
  };

  const accept = (object: KubeObject): void => {
    const name = object.metadata?.name;
    if (typeof name !== "string" || name === ownName) return;
    const report = parseReport(object);
    if (report === undefined) return;
    const previous = peers.get(name);
    const resourceVersion = object.metadata?.resourceVersion;
    if (previous !== undefined && previous.resourceVersion === resourceVersion) return;
    peers.set(name, { name, ...report, resourceVersion, seenMs: clock.now() });
  };

  /** A report deleted: a replica that stopped (not one already stale, which the leader clears away). */
  const dropPeer = (name: string): void => {
    const peer = peers.get(name);
    if (peer === undefined) return;
    peers.delete(name);
    if (clock.now() - peer.seenMs <= staleAfterMs) unsettle();
  };

  const collector: ListWatch = startListWatch({
    client,
    resource: leases,
    namespace,
    labelSelector: `${fleetReportLabel}=${leaseName}`,
    relistIntervalMs: options.relistIntervalMs,
    stallTimeoutMs: options.stallTimeoutMs,
    logger,
    clock,
    timers,
    handler: {
      replace(items) {
        const names = new Set(items.map((item) => item.metadata?.name));
        for (const name of peers.keys()) if (!names.has(name)) dropPeer(name);
        for (const item of items) accept(item);
        listed = true;
        scheduleStaleCheck();
        notify();
      },
      apply(type, object) {
        const name = object.metadata?.name;
        if (typeof name !== "string") return;
        if (type === "DELETED") dropPeer(name);
        else accept(object);
        scheduleStaleCheck();
        notify();
      },
    },
  });

  const body = (view: FleetView): Record<string, unknown> => {
    let gateways = view.gateways;
    let text = JSON.stringify({ revision: view.revision, gateways });
    if (Buffer.byteLength(text) > maxReportBytes) {
      // Connected gateways matter most; disconnected ones are only remembered for a while anyway.
      gateways = gateways.filter((gateway) => gateway.connected);
      while (
        gateways.length > 0 &&
        Buffer.byteLength((text = JSON.stringify({ revision: view.revision, gateways }))) > maxReportBytes
      ) {
        gateways = gateways.slice(0, Math.floor(gateways.length * 0.9));
      }
      log.warn({ gateways: view.gateways.length, reported: gateways.length }, "fleet report too large; cut");
    }
    const nowMs = clock.now();
    return {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name: ownName,
        namespace,
        labels: { [fleetReportLabel]: leaseName, "app.kubernetes.io/managed-by": "phantomgate" },
        annotations: { [fleetReportAnnotation]: text },
        ...(ownResourceVersion === undefined ? {} : { resourceVersion: ownResourceVersion }),
      },
      spec: {
        holderIdentity: identity,
        leaseDurationSeconds: Math.max(1, Math.ceil(staleAfterMs / 1000)),
        renewTime: microTime(nowMs),
      },
    };
  };

  const publish = async (): Promise<void> => {
    if (stopped) return;
    const view = distributor.fleet();
    try {
      let written: KubeObject;
      if (ownResourceVersion === undefined) {
        try {
          written = await client.request<KubeObject>({
            method: "POST",
            path: collectionPath,
            body: body(view),
          });
        } catch (error) {
          if (!isKubeStatus(error, 409)) throw error;
          // Left over from an earlier run of this replica: take it over.
          const existing = await client.request<KubeObject>({ method: "GET", path: ownPath });
          ownResourceVersion = existing.metadata?.resourceVersion;
          written = await client.request<KubeObject>({ method: "PUT", path: ownPath, body: body(view) });
        }
      } else {
        try {
          written = await client.request<KubeObject>({ method: "PUT", path: ownPath, body: body(view) });
        } catch (error) {
          if (!isKubeStatus(error, 409) && !isKubeStatus(error, 404)) throw error;
          ownResourceVersion = undefined; // someone deleted or changed it: start over on the next beat
          throw error;
        }
      }
      ownResourceVersion = written.metadata?.resourceVersion;
    } catch (error) {
      log.warn({ err: describeError(error) }, "could not publish the fleet report");
    }
    if (options.isLeader()) await collectGarbage();
  };

  const collectGarbage = async (): Promise<void> => {
    const nowMs = clock.now();
    for (const peer of [...peers.values()]) {
      if (nowMs - peer.seenMs <= deleteAfterMs) continue;
      try {
        await client.request({
          method: "DELETE",
          path: resourcePath(leases, { namespace, name: peer.name }),
        });
        peers.delete(peer.name);
        log.info({ report: peer.name, replica: peer.identity }, "deleted a stale fleet report");
      } catch (error) {
        if (isKubeStatus(error, 404)) peers.delete(peer.name);
        else
          log.warn({ err: describeError(error), report: peer.name }, "could not delete a stale fleet report");
      }
    }
  };

  const publisher = createDebouncer({
    delayMs: 100,
    maxWaitMs: 500,
    run: publish,
    onError: (error) => log.warn({ err: error }, "fleet report failed"),
    clock,
    timers,
  });
  const beat = (): void => {
    publisher.trigger();
    heartbeat = timers.setTimeout(beat, heartbeatMs);
  };
  beat();
  const unsubscribe = distributor.onFleetChange(() => {
    publisher.trigger();
    notify();
  });

  return {
    view() {
      const local = distributor.fleet();
      const nowMs = clock.now();
      const fresh = [...peers.values()]
        .filter((peer) => nowMs - peer.seenMs <= staleAfterMs)
        .map((peer) => peer.view);
      if (fresh.length === 0) return local;
      return mergeFleetViews(local.revision, [local, ...fresh]);
    },
    settling() {
      return !listed || clock.now() < settlingUntilMs;
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async stop() {
      stopped = true;
      unsubscribe();
      timers.clearTimeout(heartbeat);
      timers.clearTimeout(staleTimer);
      timers.clearTimeout(settledTimer);
      await publisher.close();
      await collector.stop();
      try {
        await client.request({ method: "DELETE", path: ownPath, timeoutMs: 3_000 });
      } catch (error) {
        if (!isKubeStatus(error, 404))
          log.debug({ err: describeError(error) }, "could not delete own fleet report");
      }
    },
  };
}
