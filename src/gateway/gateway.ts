// Starts one gateway: metrics → token layer → snapshot source → public listener → admin listener, in that
// order, and stops them in reverse with a bounded drain of in-flight requests.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { describeError } from "../errors/describe.ts";
import { collectDefaultMetrics, Registry } from "prom-client";
import { Agent } from "undici";
import { ConfigError, ListenError, type GatewayConfig } from "../config/gateway-config.ts";
import type { Snapshot } from "../snapshot/snapshot.ts";
import { createTroubleLog } from "../errors/trouble-log.ts";
import { createAuthenticator } from "../tokens/authenticate.ts";
import { systemClock } from "../tokens/clock.ts";
import { loadMinter } from "../tokens/minter.ts";
import { createTokenCacheSet } from "../tokens/token-cache.ts";
import { createAdminServer, MAX_LISTED_PROBLEMS } from "./admin/admin-server.ts";
import { openAuditSink } from "./audit/audit.ts";
import { createFirewall } from "./firewall/firewall.ts";
import { UpstreamLoad } from "./forward/upstream-load.ts";
import { NewTokenLimiter } from "./pipeline/new-tokens.ts";
import { FormBudget } from "./pipeline/form-budget.ts";
import { createGatewayMetrics } from "./metrics.ts";
import {
  createClientErrorListener,
  createConnectListener,
  createRequestListener,
  onConnection,
  type PipelineDeps,
} from "./pipeline/pipeline.ts";
import { createCollector } from "./runtime/memory.ts";
import { buildRuntimeState, RuntimeHolder } from "./runtime/runtime-state.ts";
import type { ControlPlaneSource } from "./sources/control-plane-source.ts";
import type { ConfigProblem, SnapshotSource, SourceUpdate } from "./sources/file-source.ts";
import { productVersion, registerBuildInfo } from "../version.ts";

export interface RunningGateway {
  readonly port: number;
  readonly adminPort: number;
  readonly snapshot: () => Snapshot | undefined;
  /** Stops accepting, drains in-flight requests up to the grace period, then closes everything. */
  close(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export async function startGateway(config: GatewayConfig, logger: Logger): Promise<RunningGateway> {
  // Metrics first, so every later stage can register its own.
  const registry = new Registry();
  // Node's process metrics under their standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes…),
  // which the usual dashboards and alerts expect: each process has its own /metrics, so nothing clashes.
  collectDefaultMetrics({ register: registry });
  registerBuildInfo(registry, "phantomgate_build_info");
  const metrics = createGatewayMetrics(registry);
  // The audit target first: one that cannot be opened stops the start before anything else is running.
  // Its troubles are counted every time and logged at most once a second (a full disk fails every batch).
  let lastAuditLog = 0;
  const logAuditTrouble = (fields: Record<string, unknown>, message: string): void => {
    const now = Date.now();
    if (now - lastAuditLog < 1_000) return;
    lastAuditLog = now;
    logger.error({ ...fields, target: config.auditLog }, message);
  };
  const audit = await openAuditSink(config.auditLog, {
    onError: (error) => {
      const code = error.code ?? "unknown";
      metrics.auditErrors.labels(code).inc();
      logAuditTrouble(
        { code },
        code === "EPIPE"
          ? "audit target closed: audit lines are lost until the gateway restarts"
          : "audit lines could not be written",
      );
    },
    onDrop: (lines) => {
      metrics.auditDropped.inc(lines);
      logAuditTrouble({}, "audit target is not keeping up: audit lines dropped");
    },
  }).catch((error: unknown) => {
    throw new ConfigError(`--audit-log (PHANTOMGATE_AUDIT_LOG): ${(error as Error).message}`);
  });

  // Token layer: each authorization server gets its own keep-alive pool from the authenticator, with that
  // AuthServer's connect timeout (a shared pool could only have one); upstream APIs share another.
  const upstreamDispatcher = new Agent({ keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000 });
  const minter = await loadMinter({
    issuer: config.mintIssuer,
    keyFile: config.mintKeyFile,
    clock: systemClock,
  }).catch((error: unknown) => {
    throw new ConfigError(`--mint-key-file (PHANTOMGATE_MINT_KEY_FILE): ${describeError(error)}`);
  });
  // One token cache partition per auth server, bounded by its `cache.maxEntries`.
  const caches = createTokenCacheSet({
    clock: systemClock,
    registry,
    maxBytes: config.tokenCacheMaxBytes,
  });
  const authenticator = createAuthenticator({
    authServers: [],
    clock: systemClock,
    caches,
    minter,
    registry,
    maxPendingAsCalls: config.maxPendingAsCalls,
    logger,
  });

  // Snapshot source: file mode (a directory of manifests) or control-plane mode (the operator's stream, with the
  // last-known-good snapshot on disk). Each good snapshot is swapped in whole.
  const runtime = new RuntimeHolder();
  const collector = createCollector();
  let fileProblems: readonly ConfigProblem[] = [];
  const applyUpdate = (update: SourceUpdate): void => {
    // A configuration that had problems and has none now says so once: fixing a broken file that leaves the
    // revision as it was swaps nothing in, and would otherwise log nothing.
    const cleared = fileProblems.length > 0 && update.problems.length === 0;
    fileProblems = update.problems;
    metrics.configProblems.set(update.problems.length);
    if (update.fileFailures > 0) metrics.configErrors.labels("file").inc(update.fileFailures);
    if (update.rejectedObjects > 0) metrics.configErrors.labels("object").inc(update.rejectedObjects);
    // One line per problem, up to a point: a hostile or generated file can hold 100,000 bad objects.
    for (const problem of update.problems.slice(0, MAX_LISTED_PROBLEMS)) {
      logger.warn({ problem }, "configuration problem");
    }
    if (update.problems.length > MAX_LISTED_PROBLEMS) {
      logger.warn(
        { total: update.problems.length, logged: MAX_LISTED_PROBLEMS },
        "more configuration problems not logged (count in /readyz and phantomgate_config_problems)",
      );
    }
    if (update.snapshot === undefined) {
      const serving = runtime.current?.snapshot.revision;
      if (serving === undefined) {
        logger.error("configuration not applied and no earlier one to serve: not ready (see /readyz)");
      } else {
        logger.error({ revision: serving }, "configuration not applied; keeping the last good snapshot");
      }
      return;
    }
    const previous = runtime.current?.snapshot.revision;
    if (previous !== update.snapshot.revision) {
      // Built first: a snapshot that cannot be served throws here, before the auth servers change, so the
      // previous revision keeps serving whole (the control-plane source NACKs it).
      const next = buildRuntimeState(update.snapshot);
      authenticator.updateAuthServers(update.snapshot.authServers);
      runtime.install(next);
      metrics.snapshotSwaps.inc();
      metrics.snapshotInfo.reset();
      metrics.snapshotInfo.labels(update.snapshot.revision).set(1);
      logger.info(
        { revision: update.snapshot.revision, routes: update.snapshot.routes.length, previous },
        "snapshot swapped in",
      );
      collector.afterSwap(update.snapshot.routes.length);
    }
    if (cleared) logger.info({ revision: update.snapshot.revision }, "configuration problems cleared");
  };
  let source: SnapshotSource;
  let controlPlane: ControlPlaneSource | undefined;
  // Each mode loads only its own source: file mode brings the YAML loader and compile, control-plane mode the
  // stream client, and neither needs the other's modules in memory.
  if (config.controlPlane !== undefined) {
    const { startControlPlaneSource } = await import("./sources/control-plane-source.ts");
    controlPlane = await startControlPlaneSource(
      {
        url: config.controlPlane,
        tokenFile: config.controlPlaneTokenFile,
        caFile: config.controlPlaneCaFile,
        gatewayName: config.gatewayName,
        stateDir: config.stateDir,
        registry,
      },
      {
        // The operator compiled it already: no problems to report, only a swap.
        apply: (snapshot) => applyUpdate({ snapshot, problems: [], fileFailures: 0, rejectedObjects: 0 }),
        revoke: (fingerprints) =>
          fingerprints.reduce((dropped, f) => dropped + caches.evictFingerprint(f), 0),
        forgetTokens: () => caches.clear(),
      },
      logger,
    );
    source = controlPlane;
  } else {
    const { startFileSource } = await import("./sources/file-source.ts");
    source = await startFileSource(config.configDir ?? "", applyUpdate, logger);
  }
  const problems = (): readonly ConfigProblem[] => controlPlane?.problems() ?? fileProblems;

  // Public listener.
  const pipelineDeps: PipelineDeps = {
    runtime,
    firewall: createFirewall({ maxUrlBytes: config.maxUrlBytes, maxHeaderBytes: config.maxHeaderBytes }),
    authenticator,
    dispatcher: upstreamDispatcher,
    metrics,
    audit,
    logger,
    trustForwarded: config.trustForwarded,
    clientSendTimeoutMs: config.clientSendTimeoutMs,
    minBodyRate: config.minBodyRate,
    formBudget: new FormBudget(config.maxFormBufferBytes),
    upstreamTroubles: createTroubleLog(logger),
    upstreamLoad: new UpstreamLoad(config.maxUpstreamRequests),
    newTokens: new NewTokenLimiter(config.maxNewTokensPerClient),
  };
  const listeners = createRequestListener(pipelineDeps);
  const server = createServer(
    {
      // Node's own limit (request line and headers together) sits above ours, so the firewall answers with a
      // problem+json 414 or 431 first.
      maxHeaderSize: config.maxHeaderBytes * 2 + config.maxUrlBytes,
      requestTimeout: 300_000,
      headersTimeout: 30_000,
      keepAliveTimeout: 65_000,
      // The firewall refuses a missing Host itself, with a problem+json body and an audit line.
      requireHostHeader: false,
    },
    listeners.request,
  );
  // A flood of connections would take every file descriptor, the admin port's and the AS pools' too (probes
  // fail, the pod is restarted): the public port holds at most --max-connections, and drops more on arrival.
  server.maxConnections = config.maxConnections;
  const connectionTroubles = createTroubleLog(logger);
  server.on("drop", () => {
    metrics.connectionsDropped.inc();
    connectionTroubles.failed(
      "max-connections",
      { maxConnections: config.maxConnections },
      "connection dropped on arrival: --max-connections reached",
    );
  });
  server.on("checkContinue", listeners.checkContinue);
  // Other expectations reach the pipeline, whose firewall answers 417 (node would answer an empty one).
  server.on("checkExpectation", listeners.request);
  server.on("clientError", createClientErrorListener(pipelineDeps));
  server.on("connect", createConnectListener(pipelineDeps));
  server.on("connection", onConnection);

  // Admin listener.
  let draining = false;
  const admin = createAdminServer({
    snapshot: () => runtime.current?.snapshot,
    problems,
    draining: () => draining,
    ...(controlPlane === undefined ? {} : { controlPlane: () => controlPlane.status() }),
    jwks: () => minter.jwks(),
    registry,
  });
  // Shutdown in two halves around the public listener's drain; a failed start uses them too.
  const stopSources = (): void => {
    source.close();
    collector.close();
  };
  const stopTheRest = async (): Promise<void> => {
    await admin.close().catch(() => undefined);
    await audit.flush();
    await upstreamDispatcher.close();
    authenticator.close();
  };
  let port: number;
  let adminPort: number;
  try {
    port = await listen(server, config.port, config.host).catch((error: unknown) => {
      throw new ListenError(`${config.host}:${config.port}`, "--host, --port", describeError(error));
    });
    await admin.listen({ port: config.adminPort, host: config.adminHost }).catch((error: unknown) => {
      throw new ListenError(
        `${config.adminHost}:${config.adminPort}`,
        "--admin-host, --admin-port",
        describeError(error),
      );
    });
    adminPort = (admin.server.address() as AddressInfo).port;
  } catch (error) {
    // A port in use (or not allowed): stop what already runs (the snapshot source's watcher or stream, the
    // public listener), or the process would stay alive half-started after reporting the failure.
    stopSources();
    server.close();
    await stopTheRest();
    throw error;
  }
  // After listening, a failing accept (out of file descriptors) is an 'error' event: logged, not a crash.
  server.on("error", (error) => logger.error({ err: error }, "public listener error"));
  logger.info(
    {
      version: productVersion(),
      port,
      adminPort,
      host: config.host,
      configDir: config.configDir ?? null,
      controlPlane: config.controlPlane ?? null,
    },
    "gateway listening",
  );

  return {
    port,
    adminPort,
    snapshot: () => runtime.current?.snapshot,
    async close() {
      draining = true;
      stopSources();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Keep-alive connections become idle as their last response ends; close them as they do.
      server.closeIdleConnections();
      const sweeper = setInterval(() => server.closeIdleConnections(), 50);
      const deadline = setTimeout(() => server.closeAllConnections(), config.shutdownGraceMs);
      await closed;
      clearInterval(sweeper);
      clearTimeout(deadline);
      await stopTheRest();
      logger.info("gateway stopped");
    },
  };
}
