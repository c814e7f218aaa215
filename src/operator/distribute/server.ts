// The snapshot service: the HTTP side of distribution. Every call is authenticated with a TokenReview of the
// caller's audience-bound ServiceAccount token; gateway calls (stream, ACKs) must come from an allowed
// ServiceAccount, revocations need RBAC `create` on `revocations.phantomgate.dev` (a SubjectAccessReview).
// Per request: route → authenticate → authorize → handle, in that order; errors are problem+json. A stream opened
// with POST carries the gateway's heartbeats in its request body; one silent for the liveness timeout is closed.
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Logger } from "pino";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { z } from "zod";
import { distributionErrorCatalogue, type DistributionErrorCode } from "../../errors/catalogue.ts";
import { fingerprintToken } from "../../tokens/fingerprint.ts";
import { ReviewUnavailableError, type TokenReviewer } from "../kube/reviews.ts";
import { distributorInternals, type Distributor, type DistributorInternals } from "./distributor.ts";
import {
  ACKS_PATH,
  DEFAULT_LIVENESS_TIMEOUT_MS,
  HEARTBEAT_HEADER,
  NDJSON_CONTENT_TYPE,
  PING_INTERVAL_MS,
  REVOCATIONS_PATH,
  STREAM_PATH,
  ackBodySchema,
  gatewayNameSchema,
  heartbeatIntervalFor,
  revisionSchema,
  revocationBodySchema,
  serviceAccountOf,
  type RevocationResult,
} from "./protocol.ts";

export interface DistributionServerOptions {
  readonly host: string;
  readonly port: number;
  readonly distributor: Distributor;
  readonly reviewer: TokenReviewer;
  /** Audience every caller's token must be bound to (`phantomgate`). */
  readonly audience: string;
  /** ServiceAccounts (`namespace:name`) allowed to stream and ACK; when absent, any authenticated caller. */
  readonly allowedServiceAccounts?: readonly string[];
  readonly logger: Logger;
  readonly registry: Registry;
  /** PEM certificate chain and key: serve HTTPS. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /**
   * How long a revocation call waits for the fingerprints to be recorded for the other replicas (the revocation
   * relay) before it answers 503 (they reached this replica's gateways either way). Default 10 s.
   */
  readonly revocationRecordTimeoutMs?: number;
  /**
   * A `POST` stream whose request body (the gateway's heartbeats) stays silent this long is closed, so the
   * gateway stops counting as connected; gateways are asked to send a heartbeat every third of it. 0 turns the
   * check off. Default 30 s.
   */
  readonly streamLivenessTimeoutMs?: number;
  /** An ACK or revocation body must have arrived completely this long after it is first read. Default 20 s. */
  readonly requestBodyTimeoutMs?: number;
}

export interface DistributionServer {
  readonly port: number;
  /**
   * Swaps the serving certificate (rotation) for new connections; open streams keep theirs. Throws when the
   * server was started without `tls`.
   */
  updateTls(tls: { readonly cert: string; readonly key: string }): void;
  /** Ends every stream (gateways reconnect elsewhere or later) and stops listening. */
  close(): Promise<void>;
}

/** The errors this server answers with: the operator part of the one catalogue (src/errors/catalogue.ts). */
const problems = distributionErrorCatalogue;
type ProblemCode = DistributionErrorCode;

class DistributionProblem extends Error {
  override readonly name = "DistributionProblem";
  readonly code: ProblemCode;
  /** Safe extra text (validation messages); never a token. */
  readonly extra: string | undefined;
  /** The `allow` header of a 405. */
  readonly allow: string | undefined;
  constructor(code: ProblemCode, extra?: string, allow?: string) {
    super(code);
    this.code = code;
    this.extra = extra;
    this.allow = allow;
  }
}

const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** The methods each endpoint takes: streams are `POST` (with heartbeats) or `GET` (older gateways, without). */
const endpoints = {
  [STREAM_PATH]: ["GET", "POST"],
  [ACKS_PATH]: ["POST"],
  [REVOCATIONS_PATH]: ["POST"],
} as const satisfies Record<string, readonly string[]>;
type Endpoint = keyof typeof endpoints;
/** How long a stream the server has ended may still take to end its request body before the connection goes. */
const STREAM_LINGER_MS = 5_000;
/** Bound on the gateway names remembered for the once-only "streams without heartbeats" log line. */
const MAX_LEGACY_NAMES = 10_000;

interface Caller {
  readonly username: string;
  readonly groups: readonly string[];
}

function sendProblem(res: ServerResponse, problem: DistributionProblem): void {
  const spec = problems[problem.code];
  const headers: Record<string, string> = {
    "content-type": "application/problem+json",
    "cache-control": "no-store",
  };
  if (spec.status === 401) {
    headers["www-authenticate"] =
      problem.code === "PG_ERR_DIST_TOKEN_INVALID"
        ? 'Bearer realm="phantomgate-operator", error="invalid_token"'
        : 'Bearer realm="phantomgate-operator"';
  }
  if (spec.status === 503) headers["retry-after"] = "5";
  if (problem.allow !== undefined) headers.allow = problem.allow;
  // A body still on its way (a stream's heartbeats, a slow or oversized upload) is not waited for: the answer
  // is the last thing on this connection.
  if (!res.req.complete) headers.connection = "close";
  const body = {
    type: "about:blank",
    title: spec.title,
    status: spec.status,
    code: problem.code,
    detail: problem.extra === undefined ? spec.detail : `${spec.detail} ${problem.extra}`,
  };
  res.writeHead(spec.status, headers).end(JSON.stringify(body));
}

function bearerToken(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer +([^\s]+) *$/i.exec(header);
  return match?.[1];
}

/**
 * Reads a JSON body of at most {@link MAX_BODY_BYTES} that must arrive completely within `timeoutMs` (the HTTP
 * server's own request timeout is off, or it would cut every stream). On a refusal the rest of the body is
 * drained and dropped, so the answer still goes out cleanly before the connection closes.
 */
function readJson(req: IncomingMessage, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) fail(new DistributionProblem("PG_ERR_DIST_TOO_LARGE"));
      else chunks.push(chunk);
    };
    const onEnd = (): void => {
      settle();
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown);
      } catch {
        reject(new DistributionProblem("PG_ERR_DIST_BAD_REQUEST", "The body is not JSON."));
      }
    };
    const onBroken = (): void =>
      fail(new DistributionProblem("PG_ERR_DIST_BAD_REQUEST", "The body ended early."));
    const timer = setTimeout(() => fail(new DistributionProblem("PG_ERR_DIST_BODY_TIMEOUT")), timeoutMs);
    timer.unref();
    function settle(): void {
      clearTimeout(timer);
      req.off("data", onData).off("end", onEnd).off("error", onBroken).off("close", onBroken);
    }
    function fail(problem: DistributionProblem): void {
      settle();
      chunks.length = 0;
      req.resume();
      reject(problem);
    }
    req.on("data", onData).on("end", onEnd).on("error", onBroken).on("close", onBroken);
    if (req.destroyed) onBroken(); // the caller went away while it was being authenticated
  });
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.join(".") || "body"}: ${issue.message}`)
    .join("; ");
}

/** `promise`'s value, or false when it takes longer than `timeoutMs`. */
async function withTimeout(promise: Promise<boolean>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

function metricOnce<T>(registry: Registry, name: string, make: () => T): T {
  // A restarted server on the same registry keeps the metrics it registered the first time.
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** Starts the snapshot service and resolves once it listens. */
export async function startDistributionServer(
  options: DistributionServerOptions,
): Promise<DistributionServer> {
  const { logger, reviewer, audience, registry } = options;
  const recordTimeoutMs = options.revocationRecordTimeoutMs ?? 10_000;
  const livenessTimeoutMs = options.streamLivenessTimeoutMs ?? DEFAULT_LIVENESS_TIMEOUT_MS;
  const bodyTimeoutMs = options.requestBodyTimeoutMs ?? 20_000;
  if (!Number.isFinite(livenessTimeoutMs) || livenessTimeoutMs < 0)
    throw new RangeError(`streamLivenessTimeoutMs must be 0 or more, not ${livenessTimeoutMs}`);
  /** Gateways already logged as streaming without heartbeats. */
  const legacyGateways = new Set<string>();
  const internals: DistributorInternals = distributorInternals(options.distributor);
  const allowed =
    options.allowedServiceAccounts === undefined ? undefined : new Set(options.allowedServiceAccounts);
  if (allowed === undefined) {
    logger.warn(
      { audience },
      "no allowed ServiceAccounts configured: any caller with a token for this audience receives snapshots " +
        "(which carry AuthServer client credentials)",
    );
  }

  const registers = [registry];
  metricOnce(
    registry,
    "phantomgate_operator_connected_gateways",
    () =>
      new Gauge({
        name: "phantomgate_operator_connected_gateways",
        help: "Gateways with an open snapshot stream to this replica.",
        registers,
        collect() {
          this.set(internals.connectedCount());
        },
      }),
  );
  const ackLatency = metricOnce(
    registry,
    "phantomgate_operator_ack_latency_seconds",
    () =>
      new Histogram({
        name: "phantomgate_operator_ack_latency_seconds",
        help: "Time from publishing a revision (or sending it to a gateway that connected later) to that gateway's ACK.",
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers,
      }),
  );
  const revocations = metricOnce(
    registry,
    "phantomgate_operator_revocations_total",
    () =>
      new Counter({
        name: "phantomgate_operator_revocations_total",
        help: "Token fingerprints fanned out to the gateways.",
        registers,
      }),
  );
  const requests = metricOnce(
    registry,
    "phantomgate_operator_distribution_requests_total",
    () =>
      new Counter<"endpoint" | "status">({
        name: "phantomgate_operator_distribution_requests_total",
        help: "Calls to the snapshot service, by endpoint and HTTP status.",
        labelNames: ["endpoint", "status"],
        registers,
      }),
  );
  internals.bindMetrics({ ackLatency, revocations });

  async function authenticate(req: IncomingMessage): Promise<Caller> {
    const token = bearerToken(req);
    if (token === undefined) throw new DistributionProblem("PG_ERR_DIST_TOKEN_MISSING");
    const review = await reviewer.reviewToken(token, [audience]);
    if (!review.authenticated || review.username === undefined) {
      logger.info({ remote: req.socket.remoteAddress, reason: review.error ?? null }, "token rejected");
      throw new DistributionProblem("PG_ERR_DIST_TOKEN_INVALID");
    }
    return { username: review.username, groups: review.groups ?? [] };
  }

  function authorizeGateway(caller: Caller): void {
    if (allowed === undefined) return;
    const account = serviceAccountOf(caller.username);
    if (account === undefined || !allowed.has(account)) {
      logger.warn({ user: caller.username }, "caller is not an allowed gateway ServiceAccount");
      throw new DistributionProblem("PG_ERR_DIST_FORBIDDEN", "Not an allowed gateway ServiceAccount.");
    }
  }

  function openStream(req: IncomingMessage, res: ServerResponse, url: URL, caller: Caller): void {
    // The gateway may have gone while its token was being reviewed: its close event has passed, so a stream
    // opened now would never be detached and would count as a connected gateway for good.
    if (res.destroyed || req.socket.destroyed) return;
    const name = gatewayNameSchema.safeParse(url.searchParams.get("gateway") ?? "");
    if (!name.success)
      throw new DistributionProblem("PG_ERR_DIST_BAD_REQUEST", `gateway: ${describeIssues(name.error)}`);
    const rawRevision = url.searchParams.get("revision");
    let revision: string | undefined;
    if (rawRevision !== null && rawRevision !== "") {
      const parsed = revisionSchema.safeParse(rawRevision);
      if (!parsed.success) throw new DistributionProblem("PG_ERR_DIST_BAD_REQUEST", "revision: invalid");
      revision = parsed.data;
    }
    const gateway = name.data;
    const heartbeats = req.method === "POST";
    const headers: Record<string, string> = {
      "content-type": NDJSON_CONTENT_TYPE,
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
    };
    if (livenessTimeoutMs > 0) headers[HEARTBEAT_HEADER] = String(heartbeatIntervalFor(livenessTimeoutMs));
    res.writeHead(200, headers);
    res.flushHeaders();
    const socket: Socket = req.socket;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, PING_INTERVAL_MS);
    if (!heartbeats && !legacyGateways.has(gateway)) {
      if (legacyGateways.size >= MAX_LEGACY_NAMES) legacyGateways.clear();
      legacyGateways.add(gateway);
      logger.info(
        { gateway },
        "gateway streams with GET (an older release): it sends no heartbeats, so its liveness is not checked",
      );
    }
    let closing: NodeJS.Timeout | undefined;
    let watchdog: NodeJS.Timeout | undefined;
    const end = (): void => {
      if (res.writableEnded) return;
      res.end();
      // A peer that reads nothing never lets end() finish: cut it off.
      closing = setTimeout(() => res.destroy(), 5_000).unref();
    };
    const detach = internals.attach(gateway, caller.username, revision, {
      write(line) {
        if (!res.writableEnded) res.write(line);
        return res.writableLength;
      },
      close: end,
    });
    if (heartbeats) {
      // The request body is the gateway's heartbeats: every chunk proves it alive and is dropped unread.
      if (livenessTimeoutMs > 0) {
        const timer = setTimeout(() => {
          logger.warn(
            { gateway, identity: caller.username, silentMs: livenessTimeoutMs },
            `no heartbeat from the gateway for ${livenessTimeoutMs} ms; closing its stream`,
          );
          res.destroy();
        }, livenessTimeoutMs);
        timer.unref();
        watchdog = timer;
        req.on("data", () => timer.refresh());
      } else {
        req.resume();
      }
      req.once("end", () => {
        logger.debug({ gateway }, "gateway ended its heartbeats; ending its stream");
        end();
      });
    }
    res.once("close", () => {
      clearTimeout(closing);
      clearTimeout(watchdog);
      detach();
      // The stream is over but its request body is still coming (a gateway ends it when the stream ends, so
      // this is a peer that does not): give it a moment, then drop the connection.
      if (heartbeats && !req.complete && !socket.destroyed) {
        const linger = setTimeout(() => socket.destroy(), STREAM_LINGER_MS).unref();
        req.once("end", () => clearTimeout(linger));
      }
    });
  }

  async function recordAck(req: IncomingMessage, res: ServerResponse, caller: Caller): Promise<void> {
    const parsed = ackBodySchema.safeParse(await readJson(req, bodyTimeoutMs));
    if (!parsed.success)
      throw new DistributionProblem("PG_ERR_DIST_BAD_REQUEST", describeIssues(parsed.error));
    if (internals.recordAck(parsed.data, caller.username) === "identity-mismatch") {
      logger.warn(
        { gateway: parsed.data.gateway, user: caller.username },
        "ACK for a gateway streaming as another identity",
      );
      throw new DistributionProblem("PG_ERR_DIST_FORBIDDEN", "That gateway streams under another identity.");
    }
    res.writeHead(204).end();
  }

  async function revoke(req: IncomingMessage, res: ServerResponse, caller: Caller): Promise<void> {
    if (!(await reviewer.canCreateRevocations(caller.username, caller.groups))) {
      logger.warn(
        { user: caller.username },
        "revocation refused: no RBAC create on revocations.phantomgate.dev",
      );
      throw new DistributionProblem("PG_ERR_DIST_FORBIDDEN", "Needs create on revocations.phantomgate.dev.");
    }
    const parsed = revocationBodySchema.safeParse(await readJson(req, bodyTimeoutMs));
    if (!parsed.success)
      throw new DistributionProblem("PG_ERR_DIST_BAD_REQUEST", describeIssues(parsed.error));
    // Tokens become fingerprints here and go no further.
    const fingerprints = [
      ...(parsed.data.fingerprints ?? []),
      ...(parsed.data.tokens ?? []).map(fingerprintToken),
    ];
    const revocation = internals.revokeLocal(fingerprints);
    // Answer only once every replica can see them: a 503 makes the caller retry (through the Service, possibly
    // at another replica), and a repeated revocation is harmless.
    if (!(await withTimeout(revocation.recorded, recordTimeoutMs))) {
      logger.warn(
        { user: caller.username, fingerprints: revocation.revoked, gateways: revocation.gateways },
        "revocation fanned out here but not recorded for the other replicas",
      );
      throw new DistributionProblem("PG_ERR_DIST_NOT_RECORDED");
    }
    logger.info(
      { user: caller.username, fingerprints: revocation.revoked, gateways: revocation.gateways },
      "revocation accepted",
    );
    const result: RevocationResult = { revoked: revocation.revoked, gateways: revocation.gateways };
    res.writeHead(202, { "content-type": "application/json" }).end(JSON.stringify(result));
  }

  async function handle(
    req: IncomingMessage,
    res: ServerResponse,
    endpoint: Endpoint,
    url: URL,
  ): Promise<void> {
    const caller = await authenticate(req);
    switch (endpoint) {
      case STREAM_PATH:
        authorizeGateway(caller);
        openStream(req, res, url, caller);
        return;
      case ACKS_PATH:
        authorizeGateway(caller);
        await recordAck(req, res, caller);
        return;
      case REVOCATIONS_PATH:
        await revoke(req, res, caller);
        return;
    }
  }

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    // URL.parse, not new URL: a request-target such as "//" is no URL at all, and a throw here would escape the
    // request event and end the process. It is answered 404 like any other unknown path.
    const url =
      URL.parse(req.url ?? "/", "http://distribution.invalid") ?? new URL("http://distribution.invalid/");
    const known = req.url?.startsWith("/") === true && Object.hasOwn(endpoints, url.pathname);
    const endpoint = known ? (url.pathname as Endpoint) : undefined;
    const label = endpoint ?? "other";
    res.once("finish", () => requests.labels(label, String(res.statusCode)).inc());
    let work: Promise<void>;
    if (endpoint === undefined) work = Promise.reject(new DistributionProblem("PG_ERR_DIST_NOT_FOUND"));
    else if (!(endpoints[endpoint] as readonly string[]).includes(req.method ?? ""))
      work = Promise.reject(
        new DistributionProblem("PG_ERR_DIST_METHOD", undefined, endpoints[endpoint].join(", ")),
      );
    else work = handle(req, res, endpoint, url);
    work.catch((error: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (error instanceof DistributionProblem) {
        sendProblem(res, error);
        return;
      }
      if (error instanceof ReviewUnavailableError) {
        logger.error({ reason: error.message }, "review failed");
        sendProblem(res, new DistributionProblem("PG_ERR_DIST_UNAVAILABLE"));
        return;
      }
      logger.error({ err: error, endpoint: label }, "distribution request failed");
      res.writeHead(500, { "content-type": "application/problem+json" });
      res.end(JSON.stringify({ type: "about:blank", title: "Internal Server Error", status: 500 }));
    });
  };

  // Streams live for hours, and a POST stream's request body (its heartbeats) never completes: Node's request
  // timeout, which runs until the whole request is in, would cut every one. Only the request head has to arrive
  // promptly; ACK and revocation bodies have their own deadline (readJson).
  const timeouts = { headersTimeout: 15_000, requestTimeout: 0 };
  const httpsServer: HttpsServer | undefined =
    options.tls === undefined
      ? undefined
      : createHttpsServer({ cert: options.tls.cert, key: options.tls.key, ...timeouts }, listener);
  const server: Server = httpsServer ?? createHttpServer(timeouts, listener);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  // After listening, a failing accept (out of file descriptors) is an 'error' event: logged, not a crash.
  server.on("error", (error) => logger.error({ err: error }, "snapshot service listener error"));
  const port = (server.address() as AddressInfo).port;
  const ping = setInterval(() => internals.pingAll(), PING_INTERVAL_MS);
  ping.unref();
  logger.info(
    { host: options.host, port, tls: options.tls !== undefined, audience, livenessTimeoutMs },
    "snapshot service listening",
  );

  let closed: Promise<void> | undefined;
  return {
    port,
    updateTls(tls) {
      if (httpsServer === undefined) throw new TypeError("the snapshot service was started without TLS");
      httpsServer.setSecureContext({ cert: tls.cert, key: tls.key });
      logger.info("snapshot service certificate updated");
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        clearInterval(ping);
        internals.closeAll();
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 2_000).unref();
        logger.info({ port }, "snapshot service stopped");
      });
      return closed;
    },
  };
}
