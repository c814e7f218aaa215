// Starts one operator replica: source → reconcile → status → distribute → webhook, in that order, then the
// metrics listener; stops them in reverse, handing the leader Lease back. Every replica watches, compiles and
// serves snapshots and admission reviews; only the Lease holder writes status and Events.
import { isIP } from "node:net";
import type { Logger } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { createDistributor, startDistributionServer, type DistributionServer } from "./distribute/index.ts";
import { startRevocationRelay } from "./distribute/revocation-relay.ts";
import type { OperatorConfig } from "./config.ts";
import { createKubeClient } from "./kube/kube-client.ts";
import { loadKubeConfig } from "./kube/kube-config.ts";
import { createKubeTokenReviewer } from "./kube/reviews.ts";
import { startLeaderElection } from "./leader/lease-elector.ts";
import { createOperatorMetrics, startMetricsServer } from "./metrics.ts";
import { startReconciler } from "./reconcile/reconciler.ts";
import { startSource } from "./source/source.ts";
import { createEventRecorder } from "./status/events.ts";
import { startFleetExchange } from "./status/fleet-reports.ts";
import { startStatusWriter } from "./status/status-writer.ts";
import { productVersion, registerBuildInfo } from "../version.ts";
import {
  loadCertificateFromSecret,
  startCertificateManager,
  startWebhookServer,
  type CertificateSource,
  type WebhookServer,
} from "./webhook/index.ts";

export interface RunningOperator {
  readonly snapshotPort: number;
  /** Undefined when the webhook is off. */
  readonly webhookPort: number | undefined;
  readonly metricsPort: number;
  isLeader(): boolean;
  /** Stops every stage in reverse order and releases the Lease if held. */
  close(): Promise<void>;
}

/** The names the webhook's serving certificate must carry. */
function certificateNames(config: OperatorConfig): { dnsNames: string[]; ipAddresses: string[] } {
  const service = config.webhookServiceName;
  const namespace = config.podNamespace;
  const dnsNames = [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
  ];
  const ipAddresses: string[] = [];
  if (config.webhookUrl !== undefined) {
    const host = new URL(config.webhookUrl).hostname.replace(/^\[|\]$/g, "");
    if (isIP(host) === 0) dnsNames.push(host);
    else ipAddresses.push(host);
  }
  return { dnsNames, ipAddresses };
}

export async function startOperator(config: OperatorConfig, logger: Logger): Promise<RunningOperator> {
  // Metrics and credentials first: every stage registers its metrics and talks to the API server.
  const registry = new Registry();
  // Node's process metrics under their standard names, as the gateway's: the operator has its own /metrics.
  collectDefaultMetrics({ register: registry });
  registerBuildInfo(registry, "phantomgate_operator_build_info");
  const metrics = createOperatorMetrics(registry);
  const credentials = loadKubeConfig(config.kubeconfig);
  const client = createKubeClient(credentials.kubeConfig, {
    userAgent: `phantomgate-operator/${config.identity}`,
  });
  logger.info(
    {
      version: productVersion(),
      server: credentials.server,
      credentials: credentials.source,
      namespaces: config.namespaces.length === 0 ? "all" : config.namespaces,
      identity: config.identity,
    },
    "operator starting",
  );
  const stops: (() => Promise<void> | void)[] = [() => client.close()];
  /** Set first on shutdown: not ready, and no more status writes (the gateways are about to be let go). */
  let draining = false;
  const stopAll = async (): Promise<void> => {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (error) {
        logger.warn({ err: error }, "shutdown step failed");
      }
    }
    stops.length = 0;
  };

  try {
    // Source: list+watch ApiRoute, ScopePolicy, AuthServer and referenced Secrets into the object store.
    const source = startSource({
      client,
      namespaces: config.namespaces,
      relistIntervalMs: config.relistIntervalMs,
      stallTimeoutMs: config.watchStallMs,
      watchTimeoutSeconds: config.watchTimeoutSeconds,
      secretLabelSelector: config.secretLabelSelector,
      logger: logger.child({ stage: "source" }),
      metrics,
    });
    stops.push(() => source.stop());

    // Reconcile: debounced compile of the store; each new revision goes to the distributor.
    const distributor = createDistributor({ logger: logger.child({ stage: "distribute" }) });
    const reconciler = startReconciler({
      source,
      publish: (snapshot) => distributor.publish(snapshot),
      secretLabelSelector: config.secretLabelSelector,
      debounceMs: config.debounceMs,
      maxWaitMs: config.debounceMaxMs,
      logger: logger.child({ stage: "reconcile" }),
      metrics,
    });
    stops.push(() => reconciler.close());

    // Status: a Lease elects the one replica that writes status and Events; every replica reports its fleet.
    // Set below: the elector's callback needs the writer and the writer the elector.
    const statusWriterRef: { current?: { trigger(): void } } = {};
    const leader = startLeaderElection({
      client,
      namespace: config.podNamespace,
      name: config.leaseName,
      identity: config.identity,
      leaseDurationMs: config.leaseDurationMs,
      renewIntervalMs: config.leaseRenewIntervalMs,
      logger: logger.child({ stage: "leader" }),
      onStartedLeading: () => {
        metrics.leader.set(1);
        metrics.leaderTransitions.inc();
        statusWriterRef.current?.trigger();
      },
      onStoppedLeading: () => metrics.leader.set(0),
    });
    stops.push(() => leader.stop());
    const fleet = startFleetExchange({
      client,
      namespace: config.podNamespace,
      leaseName: config.leaseName,
      identity: config.identity,
      distributor,
      heartbeatMs: Math.max(1_000, Math.floor(config.leaseDurationMs / 2)),
      isLeader: () => leader.isLeader(),
      relistIntervalMs: config.relistIntervalMs,
      stallTimeoutMs: config.watchStallMs,
      logger: logger.child({ stage: "status" }),
    });
    stops.push(() => fleet.stop());
    const writer = startStatusWriter({
      client,
      store: source.store,
      reconciler,
      fleet,
      // A stopping leader closes its gateways' streams before it hands the Lease over: what its view shows then
      // is the shutdown, not the fleet.
      isLeader: () => !draining && leader.isLeader(),
      recorder: createEventRecorder({
        client,
        identity: config.identity,
        logger: logger.child({ stage: "status" }),
        metrics,
      }),
      logger: logger.child({ stage: "status" }),
      metrics,
    });
    statusWriterRef.current = writer;
    stops.push(() => writer.close());

    // The serving certificate of the webhook, and of the snapshot service when it serves TLS.
    let certificates: CertificateSource | undefined;
    // Set once the snapshot service runs, so a rotated certificate reaches it without a restart.
    let rotateSnapshotTls: ((tls: { cert: string; key: string }) => void) | undefined;
    const onRotate = (tls: { cert: string; key: string }): void => rotateSnapshotTls?.(tls);
    if (config.webhook || config.snapshotTls) {
      const certLogger = logger.child({ stage: "webhook" });
      certificates =
        config.webhookCertificate === "self"
          ? await startCertificateManager({
              kubeConfig: credentials.kubeConfig,
              namespace: config.podNamespace,
              secretName: config.webhookSecretName,
              // Without the webhook there is no configuration whose caBundle to keep.
              ...(config.webhook
                ? {
                    webhookConfigurationName: config.webhookConfigurationName,
                    failurePolicy: config.webhookFailurePolicy,
                  }
                : {}),
              ...certificateNames(config),
              logger: certLogger,
              onRotate,
            })
          : await loadCertificateFromSecret({
              kubeConfig: credentials.kubeConfig,
              namespace: config.podNamespace,
              secretName: config.webhookSecretName,
              logger: certLogger,
              onRotate,
            });
      const held = certificates;
      stops.push(() => held.close());
    }

    // Revocation relay: what this replica revokes reaches the gateways of every replica (ADR 0005). Started
    // before the snapshot service and stopped after it, so no accepted revocation goes unrecorded.
    const relay = startRevocationRelay({
      client,
      namespace: config.podNamespace,
      leaseName: config.leaseName,
      identity: config.identity,
      distributor,
      isLeader: () => leader.isLeader(),
      relistIntervalMs: config.relistIntervalMs,
      stallTimeoutMs: config.watchStallMs,
      logger: logger.child({ stage: "distribute" }),
      registry,
    });
    stops.push(() => relay.stop());

    // Distribute: the snapshot stream the gateways subscribe to (TokenReview-authenticated), ACK tracking.
    const reviewer = createKubeTokenReviewer(credentials.kubeConfig, {
      revocationNamespace: config.podNamespace,
    });
    const snapshotTls = config.snapshotTls && certificates !== undefined ? certificates.current() : undefined;
    const distribution: DistributionServer = await startDistributionServer({
      host: config.listenHost,
      port: config.snapshotPort,
      distributor,
      reviewer,
      audience: config.gatewayAudience,
      ...(config.gatewayServiceAccounts.length === 0
        ? {}
        : { allowedServiceAccounts: config.gatewayServiceAccounts }),
      logger: logger.child({ stage: "distribute" }),
      registry,
      streamLivenessTimeoutMs: config.streamLivenessTimeoutMs,
      ...(snapshotTls === undefined ? {} : { tls: { cert: snapshotTls.cert, key: snapshotTls.key } }),
    });
    stops.push(() => distribution.close());
    if (snapshotTls !== undefined) rotateSnapshotTls = (tls) => distribution.updateTls(tls);

    // Webhook: validating admission over TLS, judging against the same store compile reads.
    let webhook: WebhookServer | undefined;
    if (config.webhook && certificates !== undefined) {
      const held = certificates;
      webhook = await startWebhookServer({
        host: config.listenHost,
        port: config.webhookPort,
        tls: () => held.current(),
        world: () => source.world(),
        logger: logger.child({ stage: "webhook" }),
        registry,
      });
      const started = webhook;
      stops.push(() => started.close());
      logger.info(
        { webhookConfiguration: config.webhookConfigurationName, failurePolicy: config.webhookFailurePolicy },
        "admission webhook serving",
      );
    }

    // Metrics, liveness and readiness (ready once the first snapshot is compiled).
    const metricsServer = await startMetricsServer({
      host: config.listenHost,
      port: config.metricsPort,
      registry,
      health: () => {
        const compiled = reconciler.current();
        const synced = source.isSynced();
        return {
          ready: !draining && synced && compiled !== undefined,
          synced,
          revision: compiled?.result.snapshot.revision ?? null,
          leader: leader.isLeader(),
          holder: leader.holder() ?? null,
          draining,
        };
      },
    });
    stops.push(() => metricsServer.close());
    stops.push(() => {
      draining = true;
    });
    logger.info(
      {
        snapshotPort: distribution.port,
        webhookPort: webhook?.port ?? null,
        metricsPort: metricsServer.port,
      },
      "operator started",
    );

    return {
      snapshotPort: distribution.port,
      webhookPort: webhook?.port,
      metricsPort: metricsServer.port,
      isLeader: () => leader.isLeader(),
      close: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
