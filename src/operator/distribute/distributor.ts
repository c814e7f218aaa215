// The distributor: the operator's view of its gateway fleet. Holds the current snapshot, the open streams (one
// per gateway name), what each gateway serves and whether it ACKed or NACKed the current revision, and fans
// revocations out. Transport-free: the distribution server attaches streams and records ACKs through the
// internals registered below; the operator core only sees the `Distributor` interface.
import type { Logger } from "pino";
import type { Counter, Histogram } from "prom-client";
import type { Snapshot } from "../../snapshot/snapshot.ts";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { encodeStreamMessage, REVOCATION_REPLAY_MS, type AckBody } from "./protocol.ts";

export interface GatewayState {
  readonly name: string;
  readonly connected: boolean;
  readonly revision: string | undefined;
  readonly status: "ACK" | "NACK" | "pending";
  readonly reason: string | undefined;
  readonly lastSeenMs: number;
}

export interface FleetView {
  readonly revision: string | undefined;
  readonly gateways: readonly GatewayState[];
  readonly connected: number;
  /** Connected gateways that ACKed `revision`. */
  readonly programmed: number;
}

export interface Distributor {
  /** Makes `snapshot` current and pushes it to every connected gateway that does not serve it yet. */
  publish(snapshot: Snapshot): void;
  /**
   * Sends fingerprints to every connected gateway (and to gateways that connect soon after), and hands them to
   * the revocation recorder when one is set (the other replicas' gateways); returns how many streams got them.
   */
  revoke(fingerprints: readonly string[]): number;
  fleet(): FleetView;
  /** Called after any change of the fleet view; returns the unsubscribe function. */
  onFleetChange(listener: () => void): () => void;
}

export interface DistributorOptions {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** A disconnected gateway leaves the fleet view after this long. Default 10 minutes. */
  readonly forgetAfterMs?: number;
  /**
   * Revocations are replayed to gateways that connect within this long after them, so a gateway that was
   * disconnected at the time still evicts. Keep it ≥ the largest AuthServer `cache.maxTtlSeconds`: entries
   * older than that have expired anyway. Default 15 minutes.
   */
  readonly revocationRetentionMs?: number;
  /** Bound on retained revocations (the oldest go first). Default 100,000. */
  readonly maxRetainedRevocations?: number;
  /** A stream whose unsent output exceeds this is dropped (the gateway reconnects). Default 256 MiB. */
  readonly maxBufferedBytes?: number;
}

/** One open stream, as the distribution server hands it over. */
export interface StreamSink {
  /**
   * Queues a line; returns the bytes buffered and not yet sent. A snapshot comes as one Buffer shared by every
   * stream, so slow streams queue references to it rather than copies of their own.
   */
  write(line: string | Buffer): number;
  /** Ends the stream (a newer stream for the same gateway, or shutdown). */
  close(): void;
}

/** Metrics the distribution server binds (it owns the registry). */
export interface DistributorMetrics {
  readonly ackLatency: Histogram;
  readonly revocations: Counter;
}

export type AckOutcome = "recorded" | "identity-mismatch";

/**
 * Shares the revocations this replica receives with the other replicas (the revocation relay), so gateways
 * streaming from any replica evict them.
 */
export interface RevocationRecorder {
  /**
   * Records fingerprints revoked here at `atMs`. Resolves true once the other replicas can see them, false
   * when the recorder stopped first; never rejects (it retries until then).
   */
  record(fingerprints: readonly string[], atMs: number): Promise<boolean>;
}

/** A revocation received by this replica: fanned out here, and on its way to the other replicas. */
export interface LocalRevocation {
  /** Distinct fingerprints. */
  readonly revoked: number;
  /** Streams of this replica they were written to. */
  readonly gateways: number;
  /** Whether the other replicas can see them: true at once when no recorder is set (a lone replica). */
  readonly recorded: Promise<boolean>;
}

/** What the distribution server needs beyond the public interface. */
export interface DistributorInternals {
  /** Registers a stream; sends the current snapshot when `revision` differs. Returns the detach function. */
  attach(gateway: string, identity: string, revision: string | undefined, sink: StreamSink): () => void;
  recordAck(ack: AckBody, identity: string): AckOutcome;
  /** Writes a ping to every stream. */
  pingAll(): void;
  /** Ends every stream (server shutdown). */
  closeAll(): void;
  bindMetrics(metrics: DistributorMetrics): void;
  connectedCount(): number;
  /** {@link Distributor.revoke}, also saying whether the other replicas got the fingerprints. */
  revokeLocal(fingerprints: readonly string[]): LocalRevocation;
  /**
   * Fans out fingerprints another replica received (read from its relay Lease): those not retained here yet
   * are written to every stream and kept for replay; nothing is recorded again. Returns how many were new.
   */
  revokeRelayed(fingerprints: readonly string[]): number;
  /** Sets (or, with undefined, clears) where local revocations are recorded for the other replicas. */
  setRecorder(recorder: RevocationRecorder | undefined): void;
  /**
   * Some recent revocations never reached this replica (the relay found a gap): every connected gateway, and
   * every gateway that connects within the replay window, is told to drop its cached token facts. Returns how
   * many streams were told now.
   */
  revocationsMissed(): number;
}

interface Stream {
  readonly sink: StreamSink;
}

interface GatewayRecord {
  readonly name: string;
  identity: string;
  stream: Stream | undefined;
  /** The revision the gateway says it serves (from connect or its last ACK). */
  served: string | undefined;
  lastReport:
    | { readonly revision: string; readonly status: "ACK" | "NACK"; readonly reason: string | undefined }
    | undefined;
  /** When the current revision was written to this gateway's stream, until its ACK is timed. */
  sentAtMs: number | undefined;
  lastSeenMs: number;
}

interface Current {
  readonly revision: string;
  /** The snapshot line, encoded once for every stream. */
  readonly line: Buffer;
}

const internalsOf = new WeakMap<Distributor, DistributorInternals>();

/** The internals of a distributor made by {@link createDistributor}; throws for any other object. */
export function distributorInternals(distributor: Distributor): DistributorInternals {
  const internals = internalsOf.get(distributor);
  if (internals === undefined) throw new TypeError("not a distributor made by createDistributor()");
  return internals;
}

/** Creates an empty distributor: no snapshot, no gateways. */
export function createDistributor(options: DistributorOptions = {}): Distributor {
  const clock = options.clock ?? systemClock;
  const logger = options.logger;
  const forgetAfterMs = options.forgetAfterMs ?? 10 * 60_000;
  const retentionMs = options.revocationRetentionMs ?? REVOCATION_REPLAY_MS;
  const maxRetained = options.maxRetainedRevocations ?? 100_000;
  const maxBufferedBytes = options.maxBufferedBytes ?? 256 * 1024 * 1024;
  const gateways = new Map<string, GatewayRecord>();
  const listeners = new Set<() => void>();
  /** fingerprint → when it was revoked; Map order is insertion order, so the oldest come first. */
  const retained = new Map<string, number>();
  let current: Current | undefined;
  let metrics: DistributorMetrics | undefined;
  let recorder: RevocationRecorder | undefined;
  /**
   * When the replay set last became incomplete: revocations this replica missed (a relay gap), or retained ones
   * dropped before their time (more than `maxRetained` within the window). A gateway connecting within the
   * window after that is told to drop its cached token facts, since the replay cannot be trusted to cover it.
   */
  let replayIncompleteAtMs: number | undefined;
  const forgetLine = encodeStreamMessage({ type: "forget-tokens" });

  function changed(): void {
    for (const listener of listeners) {
      try {
        listener();
      } catch (error) {
        logger?.error({ err: error }, "fleet change listener failed");
      }
    }
  }

  function send(record: GatewayRecord, line: string | Buffer): boolean {
    const stream = record.stream;
    if (stream === undefined) return false;
    const buffered = stream.sink.write(line);
    if (buffered <= maxBufferedBytes) return true;
    // A gateway that cannot keep up gets a fresh start: it reconnects and receives only the current snapshot.
    logger?.warn(
      { gateway: record.name, bufferedBytes: buffered },
      "gateway stream too far behind; dropping it",
    );
    stream.sink.close();
    return false;
  }

  /** Sends the current snapshot unless the gateway serves it already; true when it was written. */
  function sendCurrent(record: GatewayRecord): boolean {
    if (current === undefined || record.served === current.revision) return false;
    if (!send(record, current.line)) return false;
    record.sentAtMs = clock.now();
    return true;
  }

  /** Writes one revoke line to every open stream; returns how many took it. */
  function fanOut(fingerprints: readonly string[]): number {
    const line = encodeStreamMessage({ type: "revoke", fingerprints });
    let reached = 0;
    for (const record of gateways.values()) if (send(record, line)) reached += 1;
    return reached;
  }

  function pruneRetained(nowMs: number): void {
    for (const [fingerprint, atMs] of retained) {
      const expired = atMs <= nowMs - retentionMs;
      if (!expired && retained.size <= maxRetained) break;
      retained.delete(fingerprint);
      if (!expired) replayIncompleteAtMs = nowMs;
    }
  }

  function pruneGateways(nowMs: number): void {
    for (const [name, record] of gateways) {
      if (record.stream === undefined && nowMs - record.lastSeenMs > forgetAfterMs) gateways.delete(name);
    }
  }

  function stateOf(record: GatewayRecord): GatewayState {
    let status: GatewayState["status"] = "pending";
    let reason: string | undefined;
    const report = record.lastReport;
    if (current === undefined) {
      if (report !== undefined) ({ status, reason } = report);
      else if (record.served !== undefined) status = "ACK";
    } else if (record.served === current.revision) {
      status = "ACK";
      if (report?.revision === current.revision) reason = report.reason;
    } else if (report?.revision === current.revision && report.status === "NACK") {
      status = "NACK";
      reason = report.reason;
    }
    return {
      name: record.name,
      connected: record.stream !== undefined,
      revision: record.served,
      status,
      reason,
      lastSeenMs: record.lastSeenMs,
    };
  }

  const distributor: Distributor = {
    publish(snapshot) {
      if (current?.revision === snapshot.revision) return;
      current = {
        revision: snapshot.revision,
        line: Buffer.from(encodeStreamMessage({ type: "snapshot", snapshot })),
      };
      let sent = 0;
      for (const record of gateways.values()) {
        record.sentAtMs = undefined;
        if (record.stream !== undefined && sendCurrent(record)) sent += 1;
      }
      logger?.info(
        { revision: snapshot.revision, routes: snapshot.routes.length, gateways: sent },
        "snapshot published",
      );
      changed();
    },

    revoke(fingerprints) {
      return internals.revokeLocal(fingerprints).gateways;
    },

    fleet() {
      pruneGateways(clock.now());
      const states = [...gateways.values()]
        .map(stateOf)
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      return {
        revision: current?.revision,
        gateways: states,
        connected: states.filter((g) => g.connected).length,
        programmed: states.filter((g) => g.connected && current !== undefined && g.status === "ACK").length,
      };
    },

    onFleetChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };

  const internals: DistributorInternals = {
    attach(gateway, identity, revision, sink) {
      const nowMs = clock.now();
      pruneGateways(nowMs);
      let record = gateways.get(gateway);
      if (record === undefined) {
        record = {
          name: gateway,
          identity,
          stream: undefined,
          served: undefined,
          lastReport: undefined,
          sentAtMs: undefined,
          lastSeenMs: nowMs,
        };
        gateways.set(gateway, record);
      }
      const previous = record.stream;
      const stream: Stream = { sink };
      // The newest stream for a name wins: the older one is usually a connection the gateway already gave up on.
      record.stream = stream;
      record.identity = identity;
      record.served = revision;
      record.sentAtMs = undefined;
      record.lastSeenMs = nowMs;
      if (previous !== undefined) {
        logger?.warn(
          { gateway, identity },
          "gateway reconnected; closing its previous stream (if this repeats, two gateways share this name)",
        );
        previous.sink.close();
      }
      if (!sendCurrent(record) && current !== undefined && revision === current.revision) {
        // The gateway started from its last-known-good copy of the current revision: nothing to resend, but
        // it learns that the operator vouches for what it serves.
        send(record, encodeStreamMessage({ type: "current", revision }));
      }
      pruneRetained(nowMs);
      if (retained.size > 0) {
        send(record, encodeStreamMessage({ type: "revoke", fingerprints: [...retained.keys()] }));
      }
      if (replayIncompleteAtMs !== undefined && nowMs - replayIncompleteAtMs < retentionMs) {
        send(record, forgetLine);
      }
      logger?.info(
        { gateway, identity, revision: revision ?? null, current: current?.revision ?? null },
        "gateway connected",
      );
      changed();
      const owner = record;
      return () => {
        if (owner.stream !== stream) return;
        owner.stream = undefined;
        owner.sentAtMs = undefined;
        owner.lastSeenMs = clock.now();
        logger?.info({ gateway }, "gateway disconnected");
        changed();
      };
    },

    recordAck(ack, identity) {
      const nowMs = clock.now();
      let record = gateways.get(ack.gateway);
      if (record !== undefined && record.identity !== identity) return "identity-mismatch";
      if (record === undefined) {
        // An ACK can overtake a reconnect; remember it so the stream that follows starts from the truth.
        record = {
          name: ack.gateway,
          identity,
          stream: undefined,
          served: undefined,
          lastReport: undefined,
          sentAtMs: undefined,
          lastSeenMs: nowMs,
        };
        gateways.set(ack.gateway, record);
      }
      record.lastSeenMs = nowMs;
      record.lastReport = { revision: ack.revision, status: ack.status, reason: ack.reason };
      if (ack.status === "ACK") {
        record.served = ack.revision;
        if (current?.revision === ack.revision && record.sentAtMs !== undefined) {
          metrics?.ackLatency.observe((nowMs - record.sentAtMs) / 1000);
          record.sentAtMs = undefined;
        }
      } else {
        logger?.warn(
          { gateway: ack.gateway, revision: ack.revision, reason: ack.reason },
          "gateway rejected a snapshot",
        );
      }
      changed();
      return "recorded";
    },

    pingAll() {
      const line = encodeStreamMessage({ type: "ping" });
      for (const record of gateways.values()) send(record, line);
    },

    closeAll() {
      for (const record of gateways.values()) record.stream?.sink.close();
    },

    bindMetrics(bound) {
      metrics = bound;
    },

    connectedCount() {
      let count = 0;
      for (const record of gateways.values()) if (record.stream !== undefined) count += 1;
      return count;
    },

    revokeLocal(fingerprints) {
      const unique = [...new Set(fingerprints)];
      if (unique.length === 0) return { revoked: 0, gateways: 0, recorded: Promise.resolve(true) };
      const nowMs = clock.now();
      for (const fingerprint of unique) {
        retained.delete(fingerprint);
        retained.set(fingerprint, nowMs);
      }
      pruneRetained(nowMs);
      metrics?.revocations.inc(unique.length);
      const reached = fanOut(unique);
      logger?.info({ fingerprints: unique.length, gateways: reached }, "revocations fanned out");
      const recorded = recorder === undefined ? Promise.resolve(true) : recorder.record(unique, nowMs);
      return { revoked: unique.length, gateways: reached, recorded };
    },

    revocationsMissed() {
      replayIncompleteAtMs = clock.now();
      let told = 0;
      for (const record of gateways.values()) if (send(record, forgetLine)) told += 1;
      return told;
    },

    revokeRelayed(fingerprints) {
      const nowMs = clock.now();
      pruneRetained(nowMs);
      // Already retained: this replica fanned it out before (and replays it), whoever told it first.
      const fresh = [...new Set(fingerprints)].filter((fingerprint) => !retained.has(fingerprint));
      if (fresh.length === 0) return 0;
      // Kept from when this replica learnt of them, so its replay window never ends before the sender's.
      for (const fingerprint of fresh) retained.set(fingerprint, nowMs);
      pruneRetained(nowMs);
      metrics?.revocations.inc(fresh.length);
      const reached = fanOut(fresh);
      logger?.info(
        { fingerprints: fresh.length, gateways: reached },
        "revocations from another replica fanned out",
      );
      return fresh.length;
    },

    setRecorder(next) {
      recorder = next;
    },
  };
  internalsOf.set(distributor, internals);
  return distributor;
}

/** How much an entry says about a gateway and the revision being judged: a report about it beats none. */
function weight(gateway: GatewayState): number {
  if (gateway.status === "ACK") return 3;
  if (gateway.status === "NACK") return 2;
  return gateway.connected ? 1 : 0;
}

/**
 * How much an entry knows about what a gateway serves: a gateway that ACKed, then the replica holding its stream
 * (told the revision at connect and by every ACK), then any entry naming a revision. A NACK-only record on a
 * replica without the stream knows what the gateway refused, not what it serves.
 */
function servedWeight(gateway: GatewayState): number {
  if (gateway.revision === undefined) return 0;
  if (gateway.status === "ACK") return 3;
  return gateway.connected ? 2 : 1;
}

/**
 * Merges the fleet views of several operator replicas (each serves the gateways connected to it) into one, for
 * the leader's status. Entries from a replica whose current revision is not `revision` are first re-judged
 * against `revision`. Per gateway name, the gateway counts as connected when any replica has its stream open,
 * and its state comes from the entry that says most about `revision`: an ACK of it, else a NACK, else the
 * connected entry, else the one seen last — behind a Service a gateway's ACK travels on a connection of its
 * own and can reach a replica other than the one it streams from. (Replicas' clocks need not agree, so
 * `lastSeenMs` only breaks ties.) The revision the gateway serves is taken separately, from the entry that knows
 * it best (see {@link servedWeight}), so a NACK that reached another replica does not hide it.
 */
export function mergeFleetViews(revision: string | undefined, views: readonly FleetView[]): FleetView {
  const byName = new Map<string, GatewayState>();
  for (const view of views) {
    for (const entry of view.gateways) {
      const gateway: GatewayState =
        view.revision === revision
          ? entry
          : {
              ...entry,
              status: entry.revision !== undefined && entry.revision === revision ? "ACK" : "pending",
              reason: undefined,
            };
      const seen = byName.get(gateway.name);
      if (seen === undefined) {
        byName.set(gateway.name, gateway);
        continue;
      }
      const wins =
        weight(gateway) > weight(seen) ||
        (weight(gateway) === weight(seen) && gateway.lastSeenMs > seen.lastSeenMs);
      const chosen = wins ? gateway : seen;
      const servedWins =
        servedWeight(gateway) > servedWeight(seen) ||
        (servedWeight(gateway) === servedWeight(seen) && gateway.lastSeenMs > seen.lastSeenMs);
      byName.set(gateway.name, {
        ...chosen,
        connected: gateway.connected || seen.connected,
        revision: (servedWins ? gateway : seen).revision,
      });
    }
  }
  const gateways = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    revision,
    gateways,
    connected: gateways.filter((g) => g.connected).length,
    programmed: gateways.filter((g) => g.connected && revision !== undefined && g.status === "ACK").length,
  };
}
