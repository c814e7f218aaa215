// Control-plane snapshot source: the gateway's end of the operator's snapshot stream (docs/architecture.md,
// "Operator — layout and wire protocol"). Starts from the last-known-good snapshot on disk, then streams; each
// snapshot is validated, swapped in, persisted and ACKed (or NACKed with the reason while the old one keeps
// serving); revocations evict from the token cache. Reconnects with capped exponential backoff and full jitter,
// and treats a stream that has said nothing for 30 s as dead. The stream is a POST whose request body carries
// this gateway's heartbeats, so the operator can tell a frozen or vanished gateway from a live one.
import { readFile } from "node:fs/promises";
import { PassThrough } from "node:stream";
import type { LogFn, Logger } from "pino";
import { describeError } from "../../errors/describe.ts";
import { Counter, Gauge, type Registry } from "prom-client";
import { Agent, request } from "undici";
import {
  ACKS_PATH,
  HEARTBEAT_HEADER,
  HEARTBEAT_LINE,
  NDJSON_CONTENT_TYPE,
  REVOCATION_REPLAY_MS,
  STALL_TIMEOUT_MS,
  STREAM_PATH,
  createLineSplitter,
  fingerprintSchema,
  parseHeartbeatInterval,
  streamMessageSchema,
  type AckBody,
} from "../../operator/distribute/protocol.ts";
import { checkSnapshot, describeSnapshotIssues } from "../../snapshot/check.ts";
import type { Snapshot } from "../../snapshot/snapshot.ts";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { loadLastKnownGood, prepareStateDir, saveLastKnownGood } from "../state/last-known-good.ts";
import type { ConfigProblem, SnapshotSource } from "./file-source.ts";

export interface BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
}

/** 0.5 s doubling up to 10 s. */
export const defaultBackoff: BackoffPolicy = { baseMs: 500, capMs: 10_000 };

/**
 * Full jitter: a uniform delay in [0, min(cap, base·2^attempt)). Spreads a fleet's reconnects after an operator
 * restart instead of having every gateway knock at the same instants.
 */
export function backoffDelayMs(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.min(Math.floor(random() * ceiling), Math.max(ceiling - 1, 0));
}

export interface ControlPlaneSourceOptions {
  /** Base URL of the operator's snapshot service, e.g. `https://phantomgate-operator.phantomgate.svc:8443`. */
  readonly url: string;
  /** Projected ServiceAccount token; read again on every connect and ACK because the kubelet rotates it. */
  readonly tokenFile: string;
  /** PEM bundle to trust for an https `url` (instead of the system CAs). */
  readonly caFile?: string | undefined;
  readonly gatewayName: string;
  readonly stateDir: string;
  readonly registry?: Registry | undefined;
  readonly clock?: Clock;
  readonly random?: () => number;
  readonly backoff?: BackoffPolicy;
  /** Nothing received for this long → reconnect. Default 30 s (the server pings every 10 s). */
  readonly stallTimeoutMs?: number;
  /** Bound on one snapshot line. Default 256 MiB. */
  readonly maxSnapshotBytes?: number;
  /**
   * While connected, the latest ACK or NACK is sent again this often. Default 2 min (the operator forgets an
   * ACK-only record after 10 min; see `postAck`).
   */
  readonly ackRefreshMs?: number;
  /** How long a snapshot's ACK waits for its last-known-good copy to be written. Default 10 s. */
  readonly saveWaitMs?: number;
  /** Writes the last-known-good copy. Default: `saveLastKnownGood` into `stateDir` (tests stand in a hung disk). */
  readonly saveSnapshot?: (snapshot: Snapshot) => Promise<void>;
}

export interface ControlPlaneHandlers {
  /** Swaps a validated snapshot in; throws when it cannot be served (the gateway then NACKs with the message). */
  apply(snapshot: Snapshot): void;
  /** Evicts token fingerprints from the cache; returns the entries dropped. */
  revoke(fingerprints: readonly string[]): number;
  /**
   * Drops every cached token fact: called on a reconnect after a disconnection longer than the operator replays
   * revocations for (REVOCATION_REPLAY_MS), and when the operator says it missed some (`forget-tokens`).
   */
  forgetTokens(): void;
}

export type ConnectionState = "connecting" | "connected" | "disconnected";

/** What `/readyz` shows about the control plane. */
export interface ControlPlaneStatus {
  readonly url: string;
  readonly gateway: string;
  readonly state: ConnectionState;
  /** When `state` last changed (ISO 8601). */
  readonly since: string;
  readonly revision: string | null;
  /** Where the snapshot being served came from. */
  readonly servingFrom: "control-plane" | "last-known-good" | null;
  readonly servingSince: string | null;
  /** Why the last connection ended or failed (kept while a newer connection is up, for diagnosis). */
  readonly lastError: string | null;
  /** One line for people: "connected …" or "not connected …; serving last-known-good revision X since …". */
  readonly summary: string;
}

export interface ControlPlaneSource extends SnapshotSource {
  status(): ControlPlaneStatus;
  /** The last rejected snapshot, as a configuration problem (empty once a snapshot is accepted). */
  problems(): readonly ConfigProblem[];
}

interface Metrics {
  readonly connected: Gauge;
  readonly connects: Counter<"result">;
  readonly snapshots: Counter<"result">;
  readonly revocations: Counter;
  readonly tokenCacheResets: Counter;
}

function createMetrics(registry: Registry): Metrics {
  const registers = [registry];
  return {
    connected: new Gauge({
      name: "phantomgate_control_plane_connected",
      help: "1 while the snapshot stream to the operator is open.",
      registers,
    }),
    connects: new Counter({
      name: "phantomgate_control_plane_connects_total",
      help: "Attempts to open the snapshot stream, by result (ok, refused, error).",
      labelNames: ["result"],
      registers,
    }),
    snapshots: new Counter({
      name: "phantomgate_control_plane_snapshots_total",
      help: "Snapshots received from the operator, by result (ack, nack).",
      labelNames: ["result"],
      registers,
    }),
    revocations: new Counter({
      name: "phantomgate_control_plane_revocations_total",
      help: "Token fingerprints received for eviction.",
      registers,
    }),
    tokenCacheResets: new Counter({
      name: "phantomgate_control_plane_token_cache_resets_total",
      help: "Token caches dropped: on a reconnect after a disconnection longer than revocations are replayed, or when the operator missed revocations.",
      registers,
    }),
  };
}

/** Reconnecting within this much of the replay window's end counts as too late (stall detection, timers). */
const REPLAY_MARGIN_MS = 60_000;

/** How often a connected gateway sends its latest ACK or NACK again (see postAck). */
const ACK_REFRESH_MS = 120_000;
/** How long a snapshot's ACK waits for its last-known-good copy to be written. */
const SAVE_WAIT_MS = 10_000;
/** A stream that stayed up this long was healthy: the reconnect backoff starts over after it. */
const HEALTHY_STREAM_MS = 10_000;

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/**
 * Loads the last-known-good snapshot (serving it at once), then connects in the background. Rejects only when
 * the state directory cannot be used.
 */
export async function startControlPlaneSource(
  options: ControlPlaneSourceOptions,
  handlers: ControlPlaneHandlers,
  logger: Logger,
): Promise<ControlPlaneSource> {
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const backoff = options.backoff ?? defaultBackoff;
  const stallTimeoutMs = options.stallTimeoutMs ?? STALL_TIMEOUT_MS;
  const maxLineChars = options.maxSnapshotBytes ?? 256 * 1024 * 1024;
  const base = options.url.replace(/\/+$/, "");
  const log = logger.child({ controlPlane: base, gateway: options.gatewayName });
  const metrics = options.registry === undefined ? undefined : createMetrics(options.registry);
  // Fail at start, naming the setting, rather than retrying forever on a problem only a person can fix.
  await prepareStateDir(options.stateDir, (message) => log.warn({ stateDir: options.stateDir }, message));
  let ca: string | undefined;
  if (options.caFile !== undefined) {
    try {
      ca = await readFile(options.caFile, "utf8");
    } catch (error) {
      throw new Error(`control-plane CA file ${options.caFile} cannot be read (${describeError(error)})`, {
        cause: error,
      });
    }
  }
  let dispatcher = new Agent({ keepAliveTimeout: 10_000, connect: ca === undefined ? {} : { ca } });
  // The operator rotates its serving certificate (and the CA Secret mounted here); a new CA takes effect on the
  // next connect instead of after a restart.
  const refreshCa = async (): Promise<void> => {
    if (options.caFile === undefined) return;
    let next: string;
    try {
      next = await readFile(options.caFile, "utf8");
    } catch (error) {
      log.warn({ reason: describeError(error) }, "control-plane CA file unreadable; keeping the CA in use");
      return;
    }
    if (next === ca || next.trim() === "") return;
    const previous = dispatcher;
    ca = next;
    dispatcher = new Agent({ keepAliveTimeout: 10_000, connect: { ca } });
    log.info("control-plane CA changed; using it from this connect on");
    void previous.close().catch(() => undefined);
  };
  const stopping = new AbortController();
  // A function, not a property read, so flow analysis does not assume it stays false across awaits.
  const stopped = (): boolean => stopping.signal.aborted;

  let state: ConnectionState = "connecting";
  let stateSinceMs = clock.now();
  let serving: { revision: string; from: "control-plane" | "last-known-good"; sinceMs: number } | undefined;
  let lastError: string | undefined;
  let problems: readonly ConfigProblem[] = [];

  // When the stream was last lost: revocations sent since then are replayed on the next stream only for
  // REVOCATION_REPLAY_MS, so a longer gap means the token cache cannot be trusted to hold none of them. Until a
  // first stream, that is the start: a gateway serving its last-known-good snapshot while the operator is down
  // caches token facts all the same.
  let lostAtMs: number | undefined = clock.now();
  const setState = (next: ConnectionState): void => {
    if (next === state) return;
    const nowMs = clock.now();
    if (state === "connected") lostAtMs = nowMs;
    if (
      next === "connected" &&
      lostAtMs !== undefined &&
      nowMs - lostAtMs > REVOCATION_REPLAY_MS - REPLAY_MARGIN_MS
    ) {
      handlers.forgetTokens();
      metrics?.tokenCacheResets.inc();
      log.warn(
        { disconnectedSeconds: Math.round((nowMs - lostAtMs) / 1000) },
        "reconnected after longer than the operator replays revocations: cached token facts dropped",
      );
    }
    state = next;
    stateSinceMs = nowMs;
    metrics?.connected.set(next === "connected" ? 1 : 0);
  };

  const saved = await loadLastKnownGood(options.stateDir, log, base);
  if (saved !== undefined) {
    try {
      handlers.apply(saved.snapshot);
      serving = { revision: saved.snapshot.revision, from: "last-known-good", sinceMs: clock.now() };
      log.info(
        { revision: saved.snapshot.revision, savedAt: new Date(saved.savedAtMs).toISOString() },
        "serving the last-known-good snapshot until the control plane answers",
      );
    } catch (error) {
      log.warn({ reason: describeError(error) }, "last-known-good snapshot could not be served; ignoring it");
    }
  }

  const readToken = async (): Promise<string> => {
    const token = (await readFile(options.tokenFile, "utf8")).trim();
    if (token === "") throw new Error(`token file ${options.tokenFile} is empty`);
    return token;
  };

  // ---- ACKs -----------------------------------------------------------------------------------------------
  // An ACK is a request of its own, so behind the operator's Service it can reach another replica than the one
  // holding this gateway's stream. That replica keeps it in a record without a stream and forgets it after a
  // while, and only the replica holding the stream learns of a reconnect. So an ACK is retried until it is
  // taken or a newer one replaces it, and the latest one is sent again every ackRefreshMs while connected.
  // ACKs go out one at a time and never hold up the next snapshot; an ACK still waiting when a newer one is
  // queued is dropped, since the operator keeps only the latest report per gateway anyway.
  let queuedAck: AckBody | undefined;
  let acking = false;
  let lastAck: AckBody | undefined;
  // A function for the same reason as `stopped`: a newer ACK can be queued while this one waits.
  const superseded = (): boolean => queuedAck !== undefined;
  async function postAck(ack: AckBody): Promise<void> {
    for (let attempt = 0; !stopped() && !superseded(); attempt++) {
      if (attempt > 0)
        await sleep(backoffDelayMs(attempt, { baseMs: 250, capMs: 10_000 }, random) + 50, stopping.signal);
      if (stopped() || superseded()) return;
      try {
        const response = await request(`${base}${ACKS_PATH}`, {
          method: "POST",
          dispatcher,
          signal: stopping.signal,
          headers: { authorization: `Bearer ${await readToken()}`, "content-type": "application/json" },
          body: JSON.stringify(ack),
          headersTimeout: 10_000,
          bodyTimeout: 10_000,
        });
        await response.body.dump();
        if (response.statusCode === 204) return;
        ackLog(attempt)(
          { status: response.statusCode, revision: ack.revision, attempt },
          `${ack.status} refused by the control plane`,
        );
        // A 4xx will not change on retry, except 401 (token rotated between read and use), 408 (the body came
        // too slowly) and 429 (the operator sheds load).
        const status = response.statusCode;
        if (status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429) return;
      } catch (error) {
        if (stopped()) return;
        ackLog(attempt)(
          { reason: describeError(error), revision: ack.revision, attempt },
          `${ack.status} could not be sent`,
        );
      }
    }
    // Replaced by a newer ACK, or the source stopped.
  }
  // The first failure and every tenth are warnings; the retries between them are debug lines.
  const ackLog = (attempt: number): LogFn => (attempt % 10 === 0 ? log.warn.bind(log) : log.debug.bind(log));

  const refreshAcks = setInterval(() => {
    if (state === "connected" && lastAck !== undefined && !acking) queueAck(lastAck);
  }, options.ackRefreshMs ?? ACK_REFRESH_MS);
  refreshAcks.unref();
  function queueAck(ack: AckBody): void {
    lastAck = ack;
    queuedAck = ack;
    if (acking) return;
    acking = true;
    void (async () => {
      while (queuedAck !== undefined && !stopped()) {
        const next = queuedAck;
        queuedAck = undefined;
        await postAck(next);
      }
      acking = false;
    })();
  }

  // ---- snapshots: validated and applied one at a time, newest wins ----------------------------------------
  let pending: unknown;
  let working = false;

  // Writes of the last-known-good copy, one after another so an older one never lands last. Only the newest
  // snapshot waiting is written (earlier ones are skipped, not held in memory), and a snapshot is ACKed once its
  // copy is written or after SAVE_WAIT_MS, whichever comes first: a hung disk slows nothing but the copy.
  const saveWaitMs = options.saveWaitMs ?? SAVE_WAIT_MS;
  const saveSnapshot =
    options.saveSnapshot ??
    ((snapshot: Snapshot) => saveLastKnownGood(options.stateDir, snapshot, clock, base));
  let writing: Promise<void> = Promise.resolve();
  let toWrite: Snapshot | undefined;
  let writeSeq = 0;
  const persist = (snapshot: Snapshot): Promise<void> => {
    const mine = ++writeSeq;
    toWrite = snapshot;
    writing = writing.then(async () => {
      const next = toWrite;
      if (mine !== writeSeq || next === undefined) return; // a newer one is queued behind this
      toWrite = undefined;
      await saveSnapshot(next);
    });
    const written = writing;
    // The chain goes on after a failed write (the error is this write's caller's).
    writing = writing.catch(() => undefined);
    return written;
  };

  async function processSnapshot(raw: unknown): Promise<void> {
    const parsed = checkSnapshot(raw);
    if (!parsed.ok) {
      const claimed = (raw as { revision?: unknown } | null)?.revision;
      const revision = typeof claimed === "string" && claimed !== "" ? claimed.slice(0, 128) : "(none)";
      refuse(revision, `invalid snapshot: ${describeSnapshotIssues(parsed.issues)}`);
      return;
    }
    const snapshot = parsed.snapshot;
    if (serving?.revision !== snapshot.revision) {
      try {
        handlers.apply(snapshot);
      } catch (error) {
        refuse(snapshot.revision, `snapshot could not be served: ${describeError(error)}`);
        return;
      }
    }
    serving = {
      revision: snapshot.revision,
      from: "control-plane",
      sinceMs: serving?.revision === snapshot.revision ? serving.sinceMs : clock.now(),
    };
    problems = [];
    metrics?.snapshots.labels("ack").inc();
    let reason: string | undefined;
    let waitTimer: NodeJS.Timeout | undefined;
    const waited = new Promise<"slow">((resolve) => {
      waitTimer = setTimeout(() => resolve("slow"), saveWaitMs);
    });
    const written = persist(snapshot);
    try {
      if ((await Promise.race([written, waited])) === "slow") {
        reason = `serving, but the last-known-good copy is not written after ${saveWaitMs / 1000} s (a slow or hung state directory)`;
        log.error({ reason, stateDir: options.stateDir }, "last-known-good snapshot not persisted yet");
        written.catch((error: unknown) =>
          log.error(
            { reason: describeError(error), stateDir: options.stateDir },
            "last-known-good snapshot not persisted",
          ),
        );
      }
    } catch (error) {
      reason = `serving, but the last-known-good copy was not written: ${describeError(error)}`;
      log.error({ reason, stateDir: options.stateDir }, "last-known-good snapshot not persisted");
    } finally {
      clearTimeout(waitTimer);
    }
    queueAck({
      gateway: options.gatewayName,
      revision: snapshot.revision,
      status: "ACK",
      ...(reason === undefined ? {} : { reason }),
    });
  }

  function refuse(revision: string, reason: string): void {
    log.error(
      { revision, reason, serving: serving?.revision ?? null },
      "snapshot rejected; keeping the current one",
    );
    problems = [{ message: `snapshot ${revision} rejected: ${reason}` }];
    metrics?.snapshots.labels("nack").inc();
    queueAck({ gateway: options.gatewayName, revision, status: "NACK", reason: reason.slice(0, 4096) });
  }

  function enqueueSnapshot(raw: unknown): void {
    pending = raw;
    if (working) return;
    working = true;
    void (async () => {
      while (pending !== undefined && !stopped()) {
        const next = pending;
        pending = undefined;
        try {
          await processSnapshot(next);
        } catch (error) {
          log.error({ err: error }, "snapshot handling failed");
        }
      }
      working = false;
    })();
  }

  function handleLine(line: string): void {
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      log.warn({ bytes: line.length }, "control plane sent a line that is not JSON; ignoring it");
      return;
    }
    const message = streamMessageSchema.safeParse(json);
    if (!message.success) {
      const type = (json as { type?: unknown } | null)?.type;
      if (type === "revoke") {
        // Revocations this gateway cannot read are revocations it misses: its cached token facts are no longer
        // known to hold none of them.
        handlers.forgetTokens();
        metrics?.tokenCacheResets.inc();
        log.warn("control plane sent a revocation this gateway cannot read: cached token facts dropped");
        return;
      }
      // Newer operators may send message types this gateway does not know yet.
      log.debug({ type }, "ignoring an unknown stream message");
      return;
    }
    switch (message.data.type) {
      case "ping":
        return;
      case "snapshot":
        enqueueSnapshot(message.data.snapshot);
        return;
      case "revoke": {
        const fingerprints = message.data.fingerprints.filter((f) => fingerprintSchema.safeParse(f).success);
        metrics?.revocations.inc(fingerprints.length);
        const dropped = handlers.revoke(fingerprints);
        const unreadable = message.data.fingerprints.length - fingerprints.length;
        if (unreadable > 0) {
          handlers.forgetTokens();
          metrics?.tokenCacheResets.inc();
          log.warn(
            { fingerprints: fingerprints.length, unreadable },
            "control plane sent fingerprints this gateway cannot read: cached token facts dropped",
          );
        }
        log.info({ fingerprints: fingerprints.length, entriesDropped: dropped }, "revoked tokens evicted");
        return;
      }
      case "current":
        // The operator's current revision is the one served from the last-known-good copy: it is now the
        // control plane's (the snapshot is not sent again).
        if (serving?.revision === message.data.revision && serving.from === "last-known-good") {
          serving = { ...serving, from: "control-plane" };
          log.info({ revision: serving.revision }, "the control plane confirms the last-known-good revision");
        }
        return;
      case "forget-tokens":
        handlers.forgetTokens();
        metrics?.tokenCacheResets.inc();
        log.warn(
          "the operator cannot vouch that every recent revocation reached this gateway: cached token facts dropped",
        );
        return;
    }
  }

  // ---- the stream -----------------------------------------------------------------------------------------
  /**
   * One connection, until it ends. Resolves true when it was healthy: lines arrived and it stayed up for
   * HEALTHY_STREAM_MS (a stream ended right after its first line — two gateways under one name closing each
   * other's, a proxy cutting streams — keeps backing off).
   * The stream is opened with POST and a request body that stays open: this gateway writes a heartbeat line into
   * it at the interval the server asks for (its heartbeat header), and the server closes a stream whose
   * heartbeats stop. An operator of an older release answers POST with 405; then the stream is a plain GET.
   */
  async function streamOnce(): Promise<boolean> {
    const attempt = new AbortController();
    const onStop = (): void => attempt.abort();
    stopping.signal.addEventListener("abort", onStop, { once: true });
    let watchdog: NodeJS.Timeout | undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    let heartbeats: PassThrough | undefined;
    let receivedLine = false;
    let connectedAtMs: number | undefined;
    const healthy = (): boolean =>
      receivedLine && connectedAtMs !== undefined && clock.now() - connectedAtMs >= HEALTHY_STREAM_MS;
    const arm = (): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(
        () => attempt.abort(new Error(`nothing received for ${stallTimeoutMs} ms`)),
        stallTimeoutMs,
      );
    };
    try {
      const query = new URLSearchParams({ gateway: options.gatewayName });
      if (serving !== undefined) query.set("revision", serving.revision);
      arm();
      const url = `${base}${STREAM_PATH}?${query.toString()}`;
      const headers = { authorization: `Bearer ${await readToken()}`, accept: NDJSON_CONTENT_TYPE };
      const common = { dispatcher, signal: attempt.signal, headersTimeout: stallTimeoutMs, bodyTimeout: 0 };
      heartbeats = new PassThrough();
      // undici destroys the body with the connection's error (abort, reset); that error is the response's too.
      heartbeats.on("error", () => undefined);
      // undici sends the request head with the first body chunk: the first heartbeat goes out with it.
      heartbeats.write(HEARTBEAT_LINE);
      let response = await request(url, {
        ...common,
        method: "POST",
        headers: { ...headers, "content-type": NDJSON_CONTENT_TYPE },
        body: heartbeats,
      });
      if (response.statusCode === 405) {
        await response.body.dump();
        heartbeats.destroy();
        heartbeats = undefined;
        log.info("the control plane does not take heartbeats (an older operator); streaming with GET");
        response = await request(url, { ...common, method: "GET", headers });
      }
      const contentType = String(response.headers["content-type"] ?? "")
        .split(";")[0]
        ?.trim()
        .toLowerCase();
      if (response.statusCode === 200 && contentType !== NDJSON_CONTENT_TYPE) {
        await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        lastError = `HTTP 200 but not a snapshot stream (content-type ${contentType === "" ? "none" : contentType})`;
        metrics?.connects.labels("refused").inc();
        log.warn({ contentType }, "the control-plane URL answered, but not with a snapshot stream");
        return false;
      }
      if (response.statusCode !== 200) {
        const text = await readAtMost(response.body, 4096);
        let code: unknown;
        try {
          code = (JSON.parse(text) as { code?: unknown }).code;
        } catch {
          code = undefined;
        }
        lastError = `HTTP ${response.statusCode}${typeof code === "string" ? ` ${code}` : ""}`;
        metrics?.connects.labels("refused").inc();
        log.warn({ status: response.statusCode, code }, "control plane refused the stream");
        return false;
      }
      metrics?.connects.labels("ok").inc();
      setState("connected");
      connectedAtMs = clock.now();
      let heartbeatMs: number | null = null;
      if (heartbeats !== undefined) {
        heartbeatMs = parseHeartbeatInterval(response.headers[HEARTBEAT_HEADER]);
        const body = heartbeats;
        // Bounded: a connection that stopped taking bytes gets no more (the stall watchdog ends it).
        const beat = (): void => {
          if (!body.destroyed && !body.writableNeedDrain) body.write(HEARTBEAT_LINE);
        };
        beat();
        heartbeat = setInterval(beat, heartbeatMs);
      }
      log.info({ revision: serving?.revision ?? null, heartbeatMs }, "connected to the control plane");
      const decoder = new TextDecoder("utf-8");
      const splitter = createLineSplitter((line) => {
        receivedLine = true;
        handleLine(line);
      }, maxLineChars);
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        arm();
        splitter.push(decoder.decode(chunk, { stream: true }));
      }
      lastError = "stream ended by the control plane";
      log.warn("control plane ended the stream");
    } catch (error) {
      if (stopped()) return healthy();
      const reason: unknown = attempt.signal.aborted ? attempt.signal.reason : error;
      lastError = describeError(reason);
      if (state !== "connected") metrics?.connects.labels("error").inc();
      log.warn(
        { reason: lastError },
        state === "connected" ? "snapshot stream lost" : "control plane unreachable",
      );
    } finally {
      clearTimeout(watchdog);
      clearInterval(heartbeat);
      stopping.signal.removeEventListener("abort", onStop);
      attempt.abort();
      heartbeats?.destroy();
    }
    return healthy();
  }

  const loop = (async () => {
    let attempt = 0;
    while (!stopped()) {
      await refreshCa();
      const healthy = await streamOnce();
      if (stopped()) break;
      setState("disconnected");
      if (healthy) attempt = 0;
      const delayMs = backoffDelayMs(attempt, backoff, random);
      attempt += 1;
      log.debug({ delayMs, attempt }, "reconnecting after backoff");
      await sleep(delayMs, stopping.signal);
      if (!stopped()) setState("connecting");
    }
  })();

  const iso = (ms: number): string => new Date(ms).toISOString();
  return {
    status() {
      const since = iso(stateSinceMs);
      const what =
        serving === undefined
          ? "no snapshot yet"
          : serving.from === "last-known-good"
            ? `serving last-known-good revision ${serving.revision} since ${iso(serving.sinceMs)}`
            : `serving revision ${serving.revision} since ${iso(serving.sinceMs)}`;
      const summary =
        state === "connected"
          ? `connected to ${base} since ${since}; ${what}`
          : `not connected (${state}) since ${since}; ${what}`;
      return {
        url: base,
        gateway: options.gatewayName,
        state,
        since,
        revision: serving?.revision ?? null,
        servingFrom: serving?.from ?? null,
        servingSince: serving === undefined ? null : iso(serving.sinceMs),
        lastError: lastError ?? null,
        summary,
      };
    },
    problems: () => problems,
    close() {
      clearInterval(refreshAcks);
      stopping.abort();
      void loop.finally(() => dispatcher.close().catch(() => undefined));
    },
  };
}

/** Up to `limit` bytes of a body as text; the rest is not read (the body is destroyed). */
async function readAtMost(
  body: AsyncIterable<Buffer> & { destroy(): unknown },
  limit: number,
): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= limit) break;
    }
  } catch {
    // What arrived is enough to describe the refusal.
  } finally {
    body.destroy();
  }
  return Buffer.concat(chunks).subarray(0, limit).toString("utf8");
}
