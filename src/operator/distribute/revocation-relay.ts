// The revocation relay (ADR 0005): a revocation arrives at one replica (gateways reach the replicas through a
// Service), but every gateway must evict it. Each replica records the fingerprints it receives in a Lease of
// its own in the operator's namespace, `<lease-name>-revocations-<identity>` (label
// `phantomgate.dev/revocations`), as an annotation holding its newest fingerprints with the time they were
// revoked; every replica watches those Leases and fans out what it has not seen yet to its own gateways and
// keeps it for replay to gateways that connect later. No new permission (the fleet reports already use Leases
// there), no replica-to-replica traffic, and a replica that starts later learns the recent revocations from
// the Leases. Fingerprints are SHA-256 digests, not tokens; they are still never logged.
//
// Bounds: a Lease holds at most `capacity` fingerprints (the newest); a larger burst is written as several
// successive versions, each of which the watching replicas see. Entries older than the retention are pruned
// on the next write and ignored by readers; a Lease unchanged for longer than the retention is deleted (by its
// owner, or by the leader for a replica that is gone).
//
// Gaps: a reader whose watch restarts during a burst sees only the newest version, and the entries of the
// versions in between are no longer in it. So every version also says where it stands in its writer's
// sequence: `run` (a random id per process), `since` and `upTo` (it holds every entry of that run numbered
// above `since` that has not expired), and `prior` (what a replica restarted under the same identity took over
// from its earlier run's Lease). A reader that last saw the same run up to a number below `since`, or sees a
// new run with `since` above 0 or whose `prior` it is behind on or never saw, missed some; it cannot know which,
// so its gateways drop every cached token fact instead (they introspect again). A Lease first seen after the
// reader's first list is judged from its start. What stays outside: what a replica that starts has missed
// before its first list, and gateways of a release before `forget-tokens`, which ignore it.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { leases, resourcePath } from "../kube/api-resources.ts";
import { createBackoff } from "../kube/backoff.ts";
import { isKubeStatus, type KubeClient } from "../kube/kube-client.ts";
import { describeError, startListWatch, type KubeObject, type ListWatch } from "../kube/list-watch.ts";
import { sleep, systemTimers, type TimerHandle, type Timers } from "../kube/timers.ts";
import { microTime } from "../status/events.ts";
import { distributorInternals, type Distributor, type DistributorInternals } from "./distributor.ts";
import { fingerprintSchema, REVOCATION_REPLAY_MS } from "./protocol.ts";

/** Label on every relay Lease; its value is the election Lease's name (one operator install). */
export const revocationRelayLabel = "phantomgate.dev/revocations";
/**
 * Annotation holding a replica's recent revocations:
 * `{"run":"<hex>","since":<n>,"upTo":<n>,"batches":[{"at":<epoch ms>,"fingerprints":[…]}]}`.
 */
export const revocationRelayAnnotation = "phantomgate.dev/revocations";
/** Where a reader stands with a relay Lease it has not seen before: nothing of any run. */
const unseenRelay: RelayPosition = { run: "", since: 0, upTo: 0 };

/** How long the position of a relay Lease that went away is remembered. */
const POSITION_MEMORY_MS = 24 * 60 * 60_000;
/** Default bound of fingerprints per Lease. */
export const defaultRelayCapacity = 2_000;
/**
 * Largest bound allowed: in the worst case (every fingerprint revoked at its own moment) an entry takes 86 bytes
 * of JSON, so 2,200 of them stay below 190 KiB — annotations are limited to 256 KiB in total.
 */
export const maxRelayCapacity = 2_200;

/** Fingerprints revoked at one moment (the writer's clock, epoch ms). */
export interface RevocationBatch {
  readonly at: number;
  readonly fingerprints: readonly string[];
}

/** The relay Lease name of a replica (a DNS subdomain of at most 253 characters). */
export function revocationRelayName(leaseName: string, identity: string): string {
  const suffix = identity
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return `${leaseName}-revocations-${suffix === "" ? "replica" : suffix}`
    .slice(0, 253)
    .replace(/[^a-z0-9]+$/, "");
}

/**
 * Where a version of a relay Lease stands in its writer's sequence: the writer's run (a random id per process)
 * and the numbers of its entries. The version holds every entry of the run numbered above `since` and up to
 * `upTo` that is still within the retention (an entry revoked again moves to a higher number).
 */
export interface RelayPosition {
  readonly run: string;
  readonly since: number;
  readonly upTo: number;
  /**
   * The run whose Lease this run took over at start (the replica restarted under its identity), and from which
   * of that run's entries on this version still holds what it took over (that run's `since`, or its `upTo` once
   * some of them are gone).
   */
  readonly prior?: { readonly run: string; readonly since: number } | undefined;
}

const runPattern = /^[0-9a-f]{8,64}$/;

export function encodeRevocationBatches(
  batches: readonly RevocationBatch[],
  position?: RelayPosition,
): string {
  return JSON.stringify(position === undefined ? { batches } : { ...position, batches });
}

/** The position an annotation states; undefined for one without (an older writer) or with a malformed one. */
export function decodeRelayPosition(text: unknown): RelayPosition | undefined {
  if (typeof text !== "string") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const { run, since, upTo, prior } = parsed as {
    run?: unknown;
    since?: unknown;
    upTo?: unknown;
    prior?: { run?: unknown; since?: unknown } | null;
  };
  if (typeof run !== "string" || !runPattern.test(run)) return undefined;
  if (!Number.isSafeInteger(since) || !Number.isSafeInteger(upTo)) return undefined;
  const from = since as number;
  const to = upTo as number;
  if (from < 0 || to < from) return undefined;
  if (prior === undefined) return { run, since: from, upTo: to };
  if (
    typeof prior !== "object" ||
    prior === null ||
    typeof prior.run !== "string" ||
    !runPattern.test(prior.run) ||
    !Number.isSafeInteger(prior.since) ||
    (prior.since as number) < 0
  )
    return undefined;
  return { run, since: from, upTo: to, prior: { run: prior.run, since: prior.since as number } };
}

/**
 * Whether a reader that last saw `previous` of a replica's Lease missed entries by now seeing `next`:
 * - the same run, with entries between what it saw and what `next` still holds;
 * - a new run (the replica restarted) whose earlier versions it did not see (`since` above 0), or that took
 *   over entries of the run the reader knew beyond what the reader saw of it, or took over a run the reader
 *   never saw at all.
 * Nothing can be said without a previous position (the relay passes one meaning "nothing seen" for a Lease first
 * seen after its first list) or of a version written without positions (an older release).
 */
export function missedEntries(previous: RelayPosition | undefined, next: RelayPosition | undefined): boolean {
  if (previous === undefined || next === undefined) return false;
  if (previous.run === next.run) return next.since > previous.upTo;
  if (next.since > 0) return true;
  if (next.prior === undefined) return false;
  if (next.prior.run !== previous.run) return true;
  return next.prior.since > previous.upTo;
}

/** Reads an annotation; malformed parts are dropped (a hostile or broken writer cannot inject non-fingerprints). */
export function decodeRevocationBatches(text: unknown): RevocationBatch[] {
  if (typeof text !== "string") return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return [];
  }
  const batches = (parsed as { batches?: unknown } | null)?.batches;
  if (!Array.isArray(batches)) return [];
  const result: RevocationBatch[] = [];
  for (const batch of batches as ({ at?: unknown; fingerprints?: unknown } | null)[]) {
    if (typeof batch !== "object" || batch === null) continue;
    if (typeof batch.at !== "number" || !Number.isFinite(batch.at) || !Array.isArray(batch.fingerprints))
      continue;
    const fingerprints = (batch.fingerprints as unknown[]).filter(
      (fingerprint): fingerprint is string => fingerprintSchema.safeParse(fingerprint).success,
    );
    if (fingerprints.length > 0) result.push({ at: batch.at, fingerprints });
  }
  return result;
}

/**
 * The next version of a replica's Lease content: `batches`, covering local entries up to sequence `upTo`, and
 * every entry still kept above `since` (the newest number of an entry left out below them).
 */
export interface RelayWrite {
  readonly batches: RevocationBatch[];
  readonly since: number;
  readonly upTo: number;
  /** See {@link RelayPosition.prior}. */
  readonly prior?: { readonly run: string; readonly since: number } | undefined;
}

/**
 * What one replica has recorded, newest last: the pure part of the relay. Every local revocation gets a
 * sequence number; `published` is the newest one a successful write carried.
 */
export interface RevocationLog {
  /** Adds fingerprints revoked at `atMs`; returns the sequence number a write must reach to carry them. */
  add(fingerprints: readonly string[], atMs: number): number;
  /**
   * Takes in entries found in this replica's Lease from an earlier run (older than anything added since), with
   * that Lease's position when it had one.
   */
  adopt(batches: readonly RevocationBatch[], position?: RelayPosition): void;
  /** Drops entries older than the retention (and the oldest beyond `maxEntries`). */
  prune(nowMs: number): void;
  /** The next write: the oldest unwritten entries (at most `capacity`) and the newest written ones before them. */
  next(): RelayWrite | undefined;
  /** A write reached the API server. */
  written(upTo: number): void;
  published(): number;
  size(): number;
}

export function createRevocationLog(options: {
  readonly retentionMs: number;
  /** Fingerprints per write; clamped to 1…{@link maxRelayCapacity}. */
  readonly capacity: number;
  /** Bound on entries not yet written (the API server being away for long); the oldest go first. */
  readonly maxUnwritten?: number;
}): RevocationLog {
  const { retentionMs } = options;
  const capacity = Math.min(maxRelayCapacity, Math.max(1, Math.floor(options.capacity)));
  const maxEntries = capacity + Math.max(capacity, options.maxUnwritten ?? 100_000);
  /**
   * fingerprint → entry. Map order is sequence order (a fingerprint revoked again moves to the end; adopted
   * entries, sequence 0, come first), so the written entries are a prefix.
   */
  let entries = new Map<string, { at: number; seq: number }>();
  let sequence = 0;
  let publishedSeq = 0;
  /**
   * The newest number of an entry trimmed away or pushed out by the bound before it expired (a later version no
   * longer holds it), and when that entry was revoked: once that is older than the retention, nothing lost is
   * still due and versions start from 0 again. Entries that simply expired are not losses.
   */
  let droppedSeq = 0;
  let droppedAt = Number.NEGATIVE_INFINITY;
  /** The earlier run whose entries were adopted (number 0), and whether some of them went before expiring. */
  let prior: RelayPosition | undefined;
  /**
   * When the newest adopted entry that went before expiring was revoked (none: -Infinity); like droppedSeq, it
   * stops counting once that entry would have expired.
   */
  let priorLostAt = Number.NEGATIVE_INFINITY;
  let adopted = false;
  const drop = (fingerprint: string, entry: { at: number; seq: number }, expired: boolean): void => {
    entries.delete(fingerprint);
    if (expired) return;
    if (entry.seq === 0) priorLostAt = Math.max(priorLostAt, entry.at);
    else if (entry.seq > droppedSeq) {
      droppedSeq = entry.seq;
      droppedAt = entry.at;
    }
  };

  const group = (items: readonly (readonly [string, { at: number }])[]): RevocationBatch[] => {
    const batches: { at: number; fingerprints: string[] }[] = [];
    for (const [fingerprint, { at }] of items) {
      const last = batches.at(-1);
      if (last?.at === at) last.fingerprints.push(fingerprint);
      else batches.push({ at, fingerprints: [fingerprint] });
    }
    return batches;
  };

  return {
    add(fingerprints, atMs) {
      for (const fingerprint of fingerprints) {
        entries.delete(fingerprint);
        entries.set(fingerprint, { at: atMs, seq: ++sequence });
      }
      return sequence;
    },
    adopt(batches, position) {
      // Only what the Lease held when this run started is an earlier run's.
      if (adopted) return;
      adopted = true;
      prior = position;
      const older = new Map<string, { at: number; seq: number }>();
      for (const batch of batches) {
        for (const fingerprint of batch.fingerprints) {
          if (!entries.has(fingerprint)) older.set(fingerprint, { at: batch.at, seq: 0 });
        }
      }
      entries = new Map([...older, ...entries]);
    },
    prune(nowMs) {
      for (const [fingerprint, entry] of entries) {
        const expired = entry.at <= nowMs - retentionMs;
        if (!expired && entries.size <= maxEntries) break;
        drop(fingerprint, entry, expired);
      }
      if (droppedAt <= nowMs - retentionMs) droppedSeq = 0;
      if (priorLostAt <= nowMs - retentionMs) priorLostAt = Number.NEGATIVE_INFINITY;
    },
    next() {
      const items = [...entries];
      const firstUnwritten = items.findIndex(([, entry]) => entry.seq > publishedSeq);
      if (firstUnwritten === -1) return undefined;
      const end = Math.min(items.length, firstUnwritten + capacity);
      const start = Math.max(0, end - capacity);
      const window = items.slice(start, end);
      // Entries are in sequence order, so everything before the window is numbered below it.
      const before = start > 0 ? (items[start - 1]?.[1].seq ?? 0) : 0;
      // Adopted entries (number 0, at the front) left out of the window are not held by this version.
      const priorHeld = priorLostAt === Number.NEGATIVE_INFINITY && !(start > 0 && items[0]?.[1].seq === 0);
      return {
        batches: group(window),
        since: Math.max(droppedSeq, before),
        upTo: window.at(-1)?.[1].seq ?? publishedSeq,
        prior:
          prior === undefined
            ? undefined
            : { run: prior.run, since: priorHeld ? prior.since : Math.max(prior.since, prior.upTo) },
      };
    },
    written(upTo) {
      publishedSeq = Math.max(publishedSeq, upTo);
      // Only the newest `capacity` written entries can ever be carried into a later write.
      let written = 0;
      for (const entry of entries.values()) if (entry.seq <= publishedSeq) written += 1;
      for (const [fingerprint, entry] of entries) {
        if (written <= capacity || entry.seq > publishedSeq) break;
        drop(fingerprint, entry, false);
        written -= 1;
      }
    },
    published: () => publishedSeq,
    size: () => entries.size,
  };
}

export interface RevocationRelayOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  /** The election Lease's name: relay Leases are `<leaseName>-revocations-<identity>`. */
  readonly leaseName: string;
  readonly identity: string;
  readonly distributor: Distributor;
  /** The leader also deletes other replicas' relay Leases that went stale. */
  readonly isLeader: () => boolean;
  /** How long a revocation is relayed and replayed. Default 15 minutes (the distributor's replay window). */
  readonly retentionMs?: number;
  /** Fingerprints per Lease. Default {@link defaultRelayCapacity}. */
  readonly capacity?: number;
  /** How often stale relay Leases are looked for. Default 1 minute. */
  readonly cleanupIntervalMs?: number;
  readonly relistIntervalMs: number;
  readonly stallTimeoutMs: number;
  readonly logger: Logger;
  /** Registers `phantomgate_operator_revocation_relay_*` here. */
  readonly registry?: Registry;
  readonly clock?: Clock;
  readonly timers?: Timers;
  readonly random?: () => number;
}

export interface RevocationRelay {
  /** Resolves after the first list of the relay Leases was applied. */
  readonly synced: Promise<void>;
  /** Writes what is still unwritten (for up to `graceMs`), then stops watching and writing. */
  stop(graceMs?: number): Promise<void>;
}

/** A Lease's `spec.renewTime` in epoch ms (the writer's clock), if it has a valid one. */
function renewTimeOf(object: KubeObject): number | undefined {
  const renewTime = (object.spec as { renewTime?: unknown } | undefined)?.renewTime;
  if (typeof renewTime !== "string") return undefined;
  const ms = Date.parse(renewTime);
  return Number.isFinite(ms) ? ms : undefined;
}

interface KnownLease {
  resourceVersion: string | undefined;
  /** When this replica last saw it change (its own clock). */
  seenMs: number;
}

/** Where the version of a relay Lease seen last stood in its writer's sequence; when the Lease went away, if so. */
interface SeenPosition {
  readonly position: RelayPosition | undefined;
  goneMs: number | undefined;
}

function metricOnce<T>(registry: Registry | undefined, name: string, make: () => T): T {
  // A restarted relay on the same registry keeps the metrics it registered the first time.
  return (registry?.getSingleMetric(name) as T | undefined) ?? make();
}

function relayMetrics(registry: Registry | undefined): {
  writes: Counter<"result">;
  received: Counter;
  gaps: Counter;
} {
  const registers = registry === undefined ? [] : [registry];
  const writes = metricOnce(
    registry,
    "phantomgate_operator_revocation_relay_writes_total",
    () =>
      new Counter<"result">({
        name: "phantomgate_operator_revocation_relay_writes_total",
        help: "Writes of this replica's revocation relay Lease, by result (ok, error).",
        labelNames: ["result"],
        registers,
      }),
  );
  const received = metricOnce(
    registry,
    "phantomgate_operator_revocation_relay_received_total",
    () =>
      new Counter({
        name: "phantomgate_operator_revocation_relay_received_total",
        help: "Fingerprints learnt from other replicas' relay Leases and fanned out here.",
        registers,
      }),
  );
  const gaps = metricOnce(
    registry,
    "phantomgate_operator_revocation_relay_gaps_total",
    () =>
      new Counter({
        name: "phantomgate_operator_revocation_relay_gaps_total",
        help: "Versions of another replica's relay Lease that showed entries this replica never saw (its gateways were told to drop their cached token facts).",
        registers,
      }),
  );
  return { writes, received, gaps };
}

/** Starts relaying: this replica's revocations out through its Lease, the others' in through theirs. */
export function startRevocationRelay(options: RevocationRelayOptions): RevocationRelay {
  const { client, namespace, leaseName, identity, logger } = options;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const retentionMs = options.retentionMs ?? REVOCATION_REPLAY_MS;
  const capacity = options.capacity ?? defaultRelayCapacity;
  const cleanupIntervalMs = options.cleanupIntervalMs ?? 60_000;
  const internals: DistributorInternals = distributorInternals(options.distributor);
  const metrics = relayMetrics(options.registry);
  const ownName = revocationRelayName(leaseName, identity);
  const collectionPath = resourcePath(leases, { namespace });
  const ownPath = resourcePath(leases, { namespace, name: ownName });
  const log = logger.child({ revocationRelay: `${namespace}/${ownName}` });
  const backoff = createBackoff({ initialMs: 250, maxMs: 10_000 }, options.random);
  const book = createRevocationLog({ retentionMs, capacity });
  /** This run's id in the Lease: the sequence numbers start over with every process. */
  const run = randomBytes(8).toString("hex");
  const known = new Map<string, KnownLease>();
  /**
   * Per relay Lease name, the position seen last. Kept for a day after the Lease is gone: a writer whose idle
   * Lease was deleted as stale numbers on in the same run when it writes again.
   */
  const positions = new Map<string, SeenPosition>();
  let forgetQueued = false;
  /** The first list was taken in: Leases seen from now on were created (or written again) since. */
  let listed = false;
  /** Tells the gateways once, however many Leases showed a gap in one list or event. */
  const forgetSoon = (): void => {
    if (forgetQueued) return;
    forgetQueued = true;
    queueMicrotask(() => {
      forgetQueued = false;
      if (stopped) return;
      const told = internals.revocationsMissed();
      log.warn({ gateways: told }, "gateways told to drop their cached token facts");
    });
  };
  const waiters: { seq: number; resolve: (recorded: boolean) => void }[] = [];
  const stopping = new AbortController();
  let ownResourceVersion: string | undefined;
  /** Whether this replica's Lease from an earlier run was taken in (or this run wrote its own). */
  let ownSettled = false;
  /** The run of the earlier Lease this run took over, if any. */
  let adoptedRun: string | undefined;
  let writing: Promise<void> | undefined;
  let stopped = false;
  // A function, not a variable read, so flow analysis does not assume it stays false across awaits.
  const isStopped = (): boolean => stopped;
  let cleanupTimer: TimerHandle | undefined;

  const settleWaiters = (recorded?: boolean): void => {
    const published = book.published();
    for (let i = waiters.length - 1; i >= 0; i--) {
      const waiter = waiters[i];
      if (waiter === undefined) continue;
      if (recorded === false || waiter.seq <= published) {
        waiters.splice(i, 1);
        waiter.resolve(recorded ?? true);
      }
    }
  };

  /**
   * Fans out what a relay Lease holds that is recent enough and new here. "Recent" is judged on the writer's
   * clock (its entries against the Lease's renewTime), so replicas' clocks need not agree; an entry that aged
   * since is at worst replayed a while longer, which is harmless.
   */
  const take = (batches: readonly RevocationBatch[], writtenAtMs: number | undefined): number => {
    const oldestMs = (writtenAtMs ?? clock.now()) - retentionMs;
    const fingerprints = batches
      .filter((batch) => batch.at > oldestMs)
      .flatMap((batch) => batch.fingerprints);
    if (fingerprints.length === 0) return 0;
    const fresh = internals.revokeRelayed(fingerprints);
    metrics.received.inc(fresh);
    return fresh;
  };

  const observe = (object: KubeObject): void => {
    const name = object.metadata?.name;
    if (typeof name !== "string" || stopped) return;
    const resourceVersion = object.metadata?.resourceVersion;
    const previous = known.get(name);
    if (previous !== undefined && previous.resourceVersion === resourceVersion) return;
    const annotations = object.metadata?.annotations as Record<string, unknown> | undefined;
    const text = annotations?.[revocationRelayAnnotation];
    const position = decodeRelayPosition(text);
    const nowMs = clock.now();
    known.set(name, { resourceVersion, seenMs: nowMs });
    const last = positions.get(name);
    positions.set(name, { position, goneMs: undefined });
    const batches = decodeRevocationBatches(text);
    const writtenAtMs = renewTimeOf(object);
    if (name === ownName) {
      // Written by this replica; only the copy left by an earlier run (same identity) is news.
      if (ownSettled) {
        // The earlier run's copy may still arrive after this run took it over through the create conflict.
        if (position !== undefined && position.run !== run && position.run !== adoptedRun) {
          log.warn(
            { lease: name },
            "another process writes this replica's relay Lease: do two operator replicas share one identity?",
          );
        }
        return;
      }
      ownSettled = true;
      ownResourceVersion = resourceVersion;
      adoptedRun = position?.run;
      book.adopt(batches, position);
      const fresh = take(batches, writtenAtMs);
      if (fresh > 0) log.info({ fingerprints: fresh }, "revocations of an earlier run taken over");
      return;
    }
    const fresh = take(batches, writtenAtMs);
    if (fresh > 0) log.debug({ fingerprints: fresh, from: name }, "revocations relayed from another replica");
    // A Lease first seen after the first list was written since, so it is judged from its start: a new
    // replica's Lease whose first versions went by unseen has missed entries too.
    const from = last?.position ?? (listed ? unseenRelay : undefined);
    if (missedEntries(from, position)) {
      // Versions went by unseen (this replica's watch restarted during a burst larger than a Lease holds, or the
      // writer lost entries while the API server was away): some revocations are unknown here.
      metrics.gaps.inc();
      log.warn(
        { from: name, lastSeen: from?.upTo, since: position?.since },
        "revocations of another replica were missed; telling the gateways to drop their cached token facts",
      );
      forgetSoon();
    }
  };

  /** A relay Lease went away: its content is forgotten, its position kept for a while. */
  const forget = (name: string): void => {
    known.delete(name);
    const seen = positions.get(name);
    if (seen !== undefined) seen.goneMs ??= clock.now();
  };

  const collector: ListWatch = startListWatch({
    client,
    resource: leases,
    namespace,
    labelSelector: `${revocationRelayLabel}=${leaseName}`,
    relistIntervalMs: options.relistIntervalMs,
    stallTimeoutMs: options.stallTimeoutMs,
    logger,
    clock,
    timers,
    handler: {
      replace(items) {
        const names = new Set(items.map((item) => item.metadata?.name));
        for (const name of known.keys()) if (!names.has(name)) forget(name);
        for (const item of items) observe(item);
        listed = true;
      },
      apply(type, object) {
        const name = object.metadata?.name;
        if (typeof name !== "string") return;
        if (type === "DELETED") forget(name);
        else observe(object);
      },
    },
  });

  const leaseBody = (
    batches: readonly RevocationBatch[],
    position: RelayPosition,
    nowMs: number,
  ): Record<string, unknown> => ({
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name: ownName,
      namespace,
      labels: { [revocationRelayLabel]: leaseName, "app.kubernetes.io/managed-by": "phantomgate" },
      annotations: { [revocationRelayAnnotation]: encodeRevocationBatches(batches, position) },
      ...(ownResourceVersion === undefined ? {} : { resourceVersion: ownResourceVersion }),
    },
    spec: {
      holderIdentity: identity,
      // Informational: the entries are good for this long after renewTime.
      leaseDurationSeconds: Math.max(1, Math.ceil(retentionMs / 1000)),
      renewTime: microTime(nowMs),
    },
  });

  const positionOf = (write: RelayWrite): RelayPosition => ({
    run,
    since: write.since,
    upTo: write.upTo,
    ...(write.prior === undefined ? {} : { prior: write.prior }),
  });

  const call = <T>(request: { method: "GET" | "POST" | "PUT"; path: string; body?: unknown }): Promise<T> =>
    client.request<T>({ ...request, signal: stopping.signal, timeoutMs: 10_000 });

  /** One write of the next version; throws when the API server did not take it. */
  const writeOnce = async (): Promise<void> => {
    const nowMs = clock.now();
    book.prune(nowMs);
    let write = book.next();
    if (write === undefined) return;
    let written: KubeObject;
    if (ownResourceVersion === undefined) {
      try {
        written = await call<KubeObject>({
          method: "POST",
          path: collectionPath,
          body: leaseBody(write.batches, positionOf(write), nowMs),
        });
      } catch (error) {
        if (!isKubeStatus(error, 409)) throw error;
        // Left by an earlier run of this replica: keep what it holds (still within the retention), then replace.
        const existing = await call<KubeObject>({ method: "GET", path: ownPath });
        ownResourceVersion = existing.metadata?.resourceVersion;
        if (!ownSettled) {
          ownSettled = true;
          const annotations = existing.metadata?.annotations as Record<string, unknown> | undefined;
          const text = annotations?.[revocationRelayAnnotation];
          const batches = decodeRevocationBatches(text);
          const adoptedPosition = decodeRelayPosition(text);
          adoptedRun = adoptedPosition?.run;
          book.adopt(batches, adoptedPosition);
          take(batches, renewTimeOf(existing));
        }
        // The watch may have taken the earlier run's Lease in while the create was under way: write what the
        // log holds now, with what was adopted.
        book.prune(nowMs);
        write = book.next() ?? write;
        written = await call<KubeObject>({
          method: "PUT",
          path: ownPath,
          body: leaseBody(write.batches, positionOf(write), nowMs),
        });
      }
    } else {
      try {
        written = await call<KubeObject>({
          method: "PUT",
          path: ownPath,
          body: leaseBody(write.batches, positionOf(write), nowMs),
        });
      } catch (error) {
        // 404: deleted as stale meanwhile; 409: changed by someone else. Start over from the API's copy.
        if (isKubeStatus(error, 404)) ownResourceVersion = undefined;
        else if (isKubeStatus(error, 409)) {
          const existing = await call<KubeObject>({ method: "GET", path: ownPath });
          ownResourceVersion = existing.metadata?.resourceVersion;
        }
        throw error;
      }
    }
    ownSettled = true;
    ownResourceVersion = written.metadata?.resourceVersion;
    known.set(ownName, { resourceVersion: ownResourceVersion, seenMs: clock.now() });
    book.written(write.upTo);
    metrics.writes.labels("ok").inc();
    log.debug(
      { fingerprints: write.batches.reduce((n, b) => n + b.fingerprints.length, 0) },
      "relay Lease written",
    );
  };

  /** Writes until everything recorded is published, retrying with backoff. */
  const writeAll = async (): Promise<void> => {
    while (!isStopped() && book.next() !== undefined) {
      try {
        await writeOnce();
        backoff.reset();
        settleWaiters();
      } catch (error) {
        if (isStopped()) return;
        metrics.writes.labels("error").inc();
        const delayMs = backoff.next();
        log.warn(
          { err: describeError(error), retryInMs: delayMs },
          "could not record revocations for the other replicas; retrying",
        );
        await sleep(timers, delayMs, stopping.signal);
      }
    }
    // Entries that expired before they could be written (the API server was away that long) are lost.
    if (!isStopped()) settleWaiters(false);
  };

  /** Starts {@link writeAll} unless it runs; one writer at a time. */
  const drain = (): void => {
    if (writing !== undefined || stopped) return;
    writing = writeAll().finally(() => {
      writing = undefined;
      // Something recorded after the loop's last look.
      if (book.next() !== undefined) drain();
    });
  };

  /** Deletes relay Leases nobody changed for longer than the retention: everything in them has expired. */
  const cleanup = async (): Promise<void> => {
    const nowMs = clock.now();
    for (const [name, seen] of positions) {
      if (seen.goneMs !== undefined && nowMs - seen.goneMs > POSITION_MEMORY_MS) positions.delete(name);
    }
    for (const [name, lease] of [...known]) {
      if (nowMs - lease.seenMs <= retentionMs + cleanupIntervalMs) continue;
      const own = name === ownName;
      if (!own && !options.isLeader()) continue;
      if (own && (writing !== undefined || book.next() !== undefined)) continue;
      try {
        await client.request({
          method: "DELETE",
          path: resourcePath(leases, { namespace, name }),
          body: {
            apiVersion: "v1",
            kind: "DeleteOptions",
            ...(lease.resourceVersion === undefined
              ? {}
              : { preconditions: { resourceVersion: lease.resourceVersion } }),
          },
        });
        log.info({ lease: name }, "deleted a stale revocation relay Lease");
      } catch (error) {
        if (!isKubeStatus(error, 404) && !isKubeStatus(error, 409))
          log.warn({ err: describeError(error), lease: name }, "could not delete a stale relay Lease");
      }
      if (known.get(name) === lease) forget(name);
      if (own) ownResourceVersion = undefined;
    }
  };
  const scheduleCleanup = (): void => {
    cleanupTimer = timers.setTimeout(() => {
      void cleanup()
        .catch((error: unknown) => log.warn({ err: describeError(error) }, "relay cleanup failed"))
        .finally(() => {
          if (!stopped) scheduleCleanup();
        });
    }, cleanupIntervalMs);
  };
  scheduleCleanup();

  internals.setRecorder({
    record(fingerprints, atMs) {
      if (stopped) return Promise.resolve(false);
      const seq = book.add(fingerprints, atMs);
      const recorded = new Promise<boolean>((resolve) => waiters.push({ seq, resolve }));
      drain();
      return recorded;
    },
  });

  return {
    synced: collector.synced,
    async stop(graceMs = 3_000) {
      internals.setRecorder(undefined);
      timers.clearTimeout(cleanupTimer);
      // What was accepted should still reach the others: give the writes a moment.
      const graceEnds = clock.now() + graceMs;
      while (writing !== undefined && clock.now() < graceEnds) {
        await Promise.race([writing, sleep(timers, graceEnds - clock.now())]);
      }
      stopped = true;
      stopping.abort();
      while (writing !== undefined) await writing;
      settleWaiters(false);
      await collector.stop();
      // The Lease stays: a replica that starts later replays its revocations; cleanup deletes it once stale.
    },
  };
}
