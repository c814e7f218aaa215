// Owns the webhook's serving certificate when no one else issues it: a self-signed CA and serving certificate
// kept in a Secret (shared by every operator replica), renewed before expiry, and the caBundle of the
// ValidatingWebhookConfiguration kept pointing at that CA.
import { X509Certificate } from "node:crypto";
import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  V1ObjectMeta,
  V1Secret,
  type KubeConfig,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  certificateNotAfter,
  findCertificateProblem,
  findIssuer,
  issueServingCertificate,
  type WebhookCertificate,
} from "./certificate.ts";
import {
  certificateSecretKeys,
  describeError,
  readCertificateSecret,
  readSecret,
  type CertificateSource,
} from "./certificate-secret.ts";
import { ensureCaBundle } from "./webhook-configuration.ts";

const dayMs = 24 * 60 * 60 * 1000;

export interface CertificateManagerOptions {
  readonly kubeConfig: KubeConfig;
  /** Namespace of the Secret (the operator's own). */
  readonly namespace: string;
  readonly secretName: string;
  /**
   * The ValidatingWebhookConfiguration whose caBundle is kept current (it may be created later); absent when
   * the webhook is off and the certificate serves the snapshot stream only.
   */
  readonly webhookConfigurationName?: string | undefined;
  /** The failurePolicy the configuration's judging webhook must have; kept with the caBundle when given. */
  readonly failurePolicy?: "Fail" | "Ignore";
  /** The Service's names: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`. */
  readonly dnsNames: readonly string[];
  /** For an API server that calls the webhook by URL at an IP (tests: 127.0.0.1). */
  readonly ipAddresses?: readonly string[];
  /** Default 365. */
  readonly validityDays?: number;
  /** Renew when less than this is left. Default 30; must be below validityDays. */
  readonly renewBeforeDays?: number;
  readonly logger: Logger;
  /** Called with the new certificate after a rotation (the caBundle already trusts it). */
  readonly onRotate?: (tls: { cert: string; key: string }) => void;
  /**
   * How often the Secret and the caBundle are checked: renewal, a certificate another replica issued, a
   * configuration re-created with an empty caBundle. Default 60 s.
   */
  readonly resyncIntervalMs?: number;
  /**
   * After patching the caBundle, how long to wait before serving a new certificate, so that the API server
   * has seen the new bundle first. Default 2 s. (The bundle also keeps the previous CA, so old connections
   * and replicas that switch later stay trusted.)
   */
  readonly caBundlePropagationMs?: number;
  /** The clock renewal decisions use. Default `() => new Date()`. */
  readonly now?: () => Date;
  /** The openssl binary. Default `openssl` on PATH. */
  readonly openssl?: string;
}

/** The managed certificate. */
export interface CertificateManager extends CertificateSource {
  /** Issues a new certificate now, whatever the old one's expiry (it stays trusted through the bundle). */
  rotate(): Promise<void>;
}

/**
 * Starts managing the serving certificate and resolves once one is usable. Every replica runs one: the
 * Secret is the single source of truth (writes carry its resourceVersion, so two replicas renewing at once
 * end up with one certificate) and any replica may set the caBundle to the Secret's `ca.crt`.
 *
 * Needs: get/create/update on the Secret; get/patch on the ValidatingWebhookConfiguration.
 */
export async function startCertificateManager(
  options: CertificateManagerOptions,
): Promise<CertificateManager> {
  const { namespace, secretName, logger } = options;
  const validityDays = options.validityDays ?? 365;
  const renewBeforeDays = options.renewBeforeDays ?? 30;
  if (!(renewBeforeDays > 0 && renewBeforeDays < validityDays)) {
    throw new Error(
      `renewBeforeDays (${renewBeforeDays}) must be above 0 and below validityDays (${validityDays})`,
    );
  }
  const now = options.now ?? (() => new Date());
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const admission = options.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  const needs = { dnsNames: options.dnsNames, ipAddresses: options.ipAddresses ?? [] };
  const secretId = `${namespace}/${secretName}`;

  let current: WebhookCertificate | undefined;
  let closed = false;

  const issue = async (previous: WebhookCertificate | undefined): Promise<WebhookCertificate> => {
    const issued = await issueServingCertificate({
      ...needs,
      validityDays,
      ...(options.openssl === undefined ? {} : { openssl: options.openssl }),
    });
    // The CA of the certificate being replaced stays trusted until it expires: replicas and keep-alive
    // connections still present the old certificate for a while.
    const previousCa = previous === undefined ? undefined : issuerOf(previous);
    const keepPrevious = previousCa !== undefined && previousCa.validToDate.getTime() > now().getTime();
    return {
      cert: issued.cert,
      key: issued.key,
      caBundle: issued.ca + (keepPrevious ? previousCa.toString() : ""),
    };
  };

  const write = async (stored: V1Secret | undefined, certificate: WebhookCertificate): Promise<void> => {
    const previous = stored?.metadata;
    const metadata = Object.assign(new V1ObjectMeta(), {
      name: secretName,
      namespace,
      labels: { ...previous?.labels, "app.kubernetes.io/managed-by": "phantomgate" },
      annotations: {
        ...previous?.annotations,
        "phantomgate.dev/certificate-not-after": certificateNotAfter(certificate.cert).toISOString(),
      },
      ...(previous?.resourceVersion === undefined ? {} : { resourceVersion: previous.resourceVersion }),
    });
    const body = Object.assign(new V1Secret(), {
      apiVersion: "v1",
      kind: "Secret",
      metadata,
      type: stored?.type ?? "kubernetes.io/tls",
      data: {
        [certificateSecretKeys.cert]: Buffer.from(certificate.cert).toString("base64"),
        [certificateSecretKeys.key]: Buffer.from(certificate.key).toString("base64"),
        [certificateSecretKeys.caBundle]: Buffer.from(certificate.caBundle).toString("base64"),
      },
    });
    if (stored === undefined) await core.createNamespacedSecret({ namespace, body });
    else await core.replaceNamespacedSecret({ namespace, name: secretName, body });
  };

  const sync = async (force: boolean): Promise<void> => {
    const stored = await readSecret(core, namespace, secretName);
    const read =
      stored === undefined ? { problem: "the Secret does not exist" } : readCertificateSecret(stored);
    const found = "problem" in read ? undefined : read;
    const validUntil = new Date(now().getTime() + renewBeforeDays * dayMs);
    const problem = "problem" in read ? read.problem : findCertificateProblem(read, { ...needs, validUntil });

    let chosen: WebhookCertificate;
    if (found !== undefined && problem === undefined && !force) {
      chosen = found;
    } else {
      const fresh = await issue(found ?? current);
      try {
        await write(stored, fresh);
        chosen = fresh;
        logger.info(
          {
            secret: secretId,
            reason: force ? "rotation requested" : problem,
            notAfter: certificateNotAfter(fresh.cert),
          },
          "issued a new webhook serving certificate",
        );
      } catch (error) {
        // Another replica wrote first (create: AlreadyExists, replace: Conflict): use what it wrote.
        if (!(error instanceof ApiException && error.code === 409)) throw error;
        const theirs = await readSecret(core, namespace, secretName);
        const adopted = theirs === undefined ? undefined : readCertificateSecret(theirs);
        if (adopted === undefined || "problem" in adopted) {
          throw new Error(`Secret ${secretId} changed while renewing and is not usable`, { cause: error });
        }
        chosen = adopted;
      }
    }

    const configurationName = options.webhookConfigurationName;
    const bundle =
      configurationName === undefined
        ? undefined
        : await ensureCaBundle(admission, configurationName, chosen.caBundle, options.failurePolicy);
    if (bundle === "patched") {
      logger.info({ webhookConfiguration: configurationName }, "webhook caBundle updated");
    } else if (bundle === "missing") {
      logger.debug({ webhookConfiguration: configurationName }, "webhook configuration not found yet");
    }
    if (current === undefined) {
      current = chosen;
      return;
    }
    if (sameCertificate(current, chosen)) return;
    if (bundle === "patched") await sleep(options.caBundlePropagationMs ?? 2_000);
    if (closed) return;
    current = chosen;
    logger.info(
      { secret: secretId, notAfter: certificateNotAfter(chosen.cert) },
      "webhook serving certificate rotated",
    );
    options.onRotate?.({ cert: chosen.cert, key: chosen.key });
  };

  // One sync at a time: the timer and rotate() must not interleave their read-issue-write steps.
  let queue: Promise<void> = Promise.resolve();
  const enqueue = (force: boolean): Promise<void> => {
    const run = queue.then(() => sync(force));
    queue = run.catch(() => undefined);
    return run;
  };

  await enqueue(false);
  const timer = setInterval(() => {
    enqueue(false).catch((error: unknown) =>
      logger.warn(
        { secret: secretId, error: describeError(error) },
        "webhook certificate check failed; will retry",
      ),
    );
  }, options.resyncIntervalMs ?? 60_000);
  timer.unref();

  return {
    current: () => {
      if (current === undefined) throw new Error("no webhook certificate yet");
      return current;
    },
    rotate: () => enqueue(true),
    close: () => {
      closed = true;
      clearInterval(timer);
    },
  };
}

function issuerOf(certificate: WebhookCertificate): X509Certificate | undefined {
  try {
    return findIssuer(new X509Certificate(certificate.cert), certificate.caBundle);
  } catch {
    return undefined;
  }
}

function sameCertificate(a: WebhookCertificate, b: WebhookCertificate): boolean {
  return a.cert === b.cert && a.key === b.key && a.caBundle === b.caBundle;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
