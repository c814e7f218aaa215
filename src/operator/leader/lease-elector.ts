// Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it: the holder
// renews every `renewIntervalMs`; another replica takes over once it has seen no change of the Lease for
// `leaseDurationMs` on its own clock (so clocks need not agree); the holder steps down when it could not renew
// for `renewDeadlineMs` (< lease duration, so it stops before anyone else may start) and hands the Lease back
// on shutdown. Writes use the Lease's resourceVersion: of two replicas racing for it, one wins.
import type { Logger } from "pino";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { leases, resourcePath } from "../kube/api-resources.ts";
import { isKubeStatus, type KubeClient } from "../kube/kube-client.ts";
import { describeError } from "../kube/list-watch.ts";
import { sleep, systemTimers, type TimerHandle, type Timers } from "../kube/timers.ts";
import { microTime } from "../status/events.ts";

export interface LeaderElectionOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  readonly name: string;
  /** This replica (Pod name). */
  readonly identity: string;
  /** How long a Lease is valid after its last renewal. Default 10 s. */
  readonly leaseDurationMs?: number;
  /** How often the holder renews. Default 2 s. */
  readonly renewIntervalMs?: number;
  /** The holder steps down when it could not renew for this long. Default ⅔ of the lease duration. */
  readonly renewDeadlineMs?: number;
  /** How often a non-holder tries to acquire (with up to 20 % jitter). Default: the renew interval. */
  readonly retryIntervalMs?: number;
  readonly onStartedLeading?: () => void;
  readonly onStoppedLeading?: () => void;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly timers?: Timers;
  readonly random?: () => number;
}

export interface LeaderElector {
  isLeader(): boolean;
  /** The holder as last observed (this replica or another), if any. */
  holder(): string | undefined;
  /** Stops campaigning; a leader releases the Lease first. */
  stop(): Promise<void>;
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [key: string]: unknown };
  spec?: LeaseSpec;
}

type Attempt = "leading" | "held-by-other" | "failed";

export function startLeaderElection(options: LeaderElectionOptions): LeaderElector {
  const { client, namespace, name, identity, logger } = options;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const random = options.random ?? Math.random;
  const leaseDurationMs = options.leaseDurationMs ?? 10_000;
  const renewIntervalMs = options.renewIntervalMs ?? 2_000;
  const renewDeadlineMs = options.renewDeadlineMs ?? Math.floor((leaseDurationMs * 2) / 3);
  const retryIntervalMs = options.retryIntervalMs ?? renewIntervalMs;
  const leaseDurationSeconds = Math.max(1, Math.ceil(leaseDurationMs / 1000));
  const requestTimeoutMs = Math.max(1_000, Math.min(5_000, renewDeadlineMs / 2));
  const itemPath = resourcePath(leases, { namespace, name });
  const log = logger.child({ lease: `${namespace}/${name}`, identity });
  const stopController = new AbortController();
  // A function, not the property: TypeScript would otherwise narrow it across the awaits that change it.
  const stopped = (): boolean => stopController.signal.aborted;

  let leading = false;
  let lastRenewMs = 0;
  let observedSpecJson: string | undefined;
  let observedAtMs = 0;
  let observedHolder: string | undefined;
  let lastLease: Lease | undefined;

  const observe = (spec: LeaseSpec | undefined): void => {
    const json = JSON.stringify(spec ?? {});
    if (json !== observedSpecJson) {
      observedSpecJson = json;
      observedAtMs = clock.now();
    }
    observedHolder = spec?.holderIdentity === "" ? undefined : spec?.holderIdentity;
  };

  const newSpec = (previous: LeaseSpec | undefined, nowMs: number): LeaseSpec => {
    const renewing = previous?.holderIdentity === identity;
    return {
      holderIdentity: identity,
      leaseDurationSeconds,
      acquireTime: renewing && previous.acquireTime !== undefined ? previous.acquireTime : microTime(nowMs),
      renewTime: microTime(nowMs),
      leaseTransitions: (previous?.leaseTransitions ?? 0) + (renewing ? 0 : 1),
    };
  };

  const attempt = async (): Promise<Attempt> => {
    const signal = stopController.signal;
    let lease: Lease;
    try {
      lease = await client.request<Lease>({
        method: "GET",
        path: itemPath,
        signal,
        timeoutMs: requestTimeoutMs,
      });
    } catch (error) {
      if (!isKubeStatus(error, 404)) throw error;
      const spec = newSpec(undefined, clock.now());
      try {
        lastLease = await client.request<Lease>({
          method: "POST",
          path: resourcePath(leases, { namespace }),
          body: {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name, namespace },
            spec: { ...spec, leaseTransitions: 0 },
          },
          signal,
          timeoutMs: requestTimeoutMs,
        });
      } catch (createError) {
        if (isKubeStatus(createError, 409)) return "held-by-other"; // someone created it first
        throw createError;
      }
      observe(lastLease.spec);
      return "leading";
    }
    lastLease = lease;
    observe(lease.spec);
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? "";
    const durationMs = (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
    if (holder !== "" && holder !== identity && observedAtMs + durationMs > clock.now())
      return "held-by-other";
    // Ours to renew, free, or expired: write it with its resourceVersion, so only one racer wins.
    try {
      lastLease = await client.request<Lease>({
        method: "PUT",
        path: itemPath,
        body: { ...lease, spec: newSpec(spec, clock.now()) },
        signal,
        timeoutMs: requestTimeoutMs,
      });
    } catch (error) {
      if (isKubeStatus(error, 409)) return "held-by-other";
      throw error;
    }
    observe(lastLease.spec);
    return "leading";
  };

  const setLeading = (value: boolean): void => {
    if (leading === value) return;
    leading = value;
    if (value) {
      log.info("became leader");
      options.onStartedLeading?.();
    } else {
      log.warn("stopped leading");
      options.onStoppedLeading?.();
    }
  };

  // The renew deadline counts from when the last successful renewal was sent, and a timer enforces it: an
  // attempt that hangs (each of its requests may take requestTimeoutMs) must not keep this replica leading past
  // it, while another may take the Lease once the lease duration has passed since that renewal.
  let deadlineTimer: TimerHandle | undefined;
  const armDeadline = (): void => {
    timers.clearTimeout(deadlineTimer);
    deadlineTimer = timers.setTimeout(() => {
      if (leading && clock.now() - lastRenewMs > renewDeadlineMs) {
        log.warn(
          { sinceRenewalMs: clock.now() - lastRenewMs },
          "lease not renewed within the renew deadline",
        );
        setLeading(false);
      }
    }, renewDeadlineMs + 1);
  };

  const run = async (): Promise<void> => {
    while (!stopped()) {
      let outcome: Attempt;
      const startedMs = clock.now();
      try {
        outcome = await attempt();
      } catch (error) {
        if (stopped()) break;
        outcome = "failed";
        log.warn(
          { err: describeError(error) },
          leading ? "could not renew the lease" : "could not read the lease",
        );
      }
      if (stopped()) break;
      const nowMs = clock.now();
      if (outcome === "leading") {
        lastRenewMs = startedMs;
        armDeadline();
        setLeading(true);
      } else if (leading && (outcome === "held-by-other" || nowMs - lastRenewMs > renewDeadlineMs)) {
        // Someone else holds it now, or we could not renew in time: stop acting before they start.
        setLeading(false);
      }
      const waitMs = leading ? renewIntervalMs : Math.round(retryIntervalMs * (1 + 0.2 * random()));
      await sleep(timers, waitMs, stopController.signal);
    }
  };

  const done = run().catch((error: unknown) =>
    log.error({ err: error }, "leader election loop ended unexpectedly"),
  );

  return {
    isLeader: () => leading && clock.now() - lastRenewMs <= renewDeadlineMs,
    holder: () => (leading ? identity : observedHolder),
    async stop() {
      stopController.abort();
      timers.clearTimeout(deadlineTimer);
      await done;
      if (!leading) return;
      setLeading(false);
      // Hand the Lease back so another replica takes over at once instead of after the lease duration.
      const lease = lastLease;
      if (lease === undefined) return;
      // A few quick tries: a pooled connection may turn out dead, and waiting out the lease costs a failover.
      for (let attempt = 1; ; attempt++) {
        try {
          const nowMs = clock.now();
          await client.request({
            method: "PUT",
            path: itemPath,
            body: {
              ...lease,
              spec: {
                ...lease.spec,
                holderIdentity: "",
                leaseDurationSeconds: 1,
                renewTime: microTime(nowMs),
                acquireTime: microTime(nowMs),
              },
            },
            timeoutMs: 2_000,
          });
          log.info("released the lease");
          return;
        } catch (error) {
          // 409: someone wrote it since (another holder, or our last renewal raced): nothing to hand back.
          if (attempt >= 3 || isKubeStatus(error, 409)) {
            log.warn({ err: describeError(error) }, "could not release the lease; it expires on its own");
            return;
          }
        }
      }
    },
  };
}
