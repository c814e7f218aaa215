// The webhook's serving certificate as a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt — the keys
// cert-manager writes too), and following such a Secret when someone else issues it.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { ApiException, CoreV1Api, type KubeConfig, type V1Secret } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { WebhookCertificate } from "./certificate.ts";

/** Keys of the Secret's data. */
export const certificateSecretKeys = { cert: "tls.crt", key: "tls.key", caBundle: "ca.crt" } as const;

/** The current certificate, kept up to date while open. */
export interface CertificateSource {
  /** The certificate in use now; pass `() => source.current()` as the webhook server's `tls`. */
  current(): WebhookCertificate;
  /** Stops following changes. */
  close(): void;
}

/** The certificate in a Secret, or why there is none. */
export function readCertificateSecret(secret: V1Secret): WebhookCertificate | { problem: string } {
  const decode = (key: string): string | undefined => {
    const value = secret.data?.[key];
    return value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");
  };
  const cert = decode(certificateSecretKeys.cert);
  const key = decode(certificateSecretKeys.key);
  if (cert === undefined || cert === "" || key === undefined || key === "") {
    return { problem: `the Secret has no ${certificateSecretKeys.cert} and ${certificateSecretKeys.key}` };
  }
  return { cert, key, caBundle: decode(certificateSecretKeys.caBundle) ?? "" };
}

/** Reads a Secret; undefined when it does not exist. */
export async function readSecret(
  api: CoreV1Api,
  namespace: string,
  name: string,
): Promise<V1Secret | undefined> {
  try {
    return await api.readNamespacedSecret({ namespace, name });
  } catch (error) {
    if (error instanceof ApiException && error.code === 404) return undefined;
    throw error;
  }
}

export interface LoadCertificateFromSecretOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  readonly secretName: string;
  readonly logger: Logger;
  /** Called with the new certificate when the Secret changes (the issuer renewed it). */
  readonly onRotate?: (tls: { cert: string; key: string }) => void;
  /** How often the Secret is read again. Default 60 s. */
  readonly resyncIntervalMs?: number;
  /** How long to wait for a usable certificate to appear at start. Default 120 s. */
  readonly waitTimeoutMs?: number;
}

/**
 * Takes the serving certificate from a Secret that something else issues and renews (cert-manager: its
 * cainjector then sets the webhook's caBundle, so this never patches it). Waits for the Secret at start and
 * follows it afterwards; a Secret that turns unusable is logged and the last good certificate kept.
 */
export async function loadCertificateFromSecret(
  options: LoadCertificateFromSecretOptions,
): Promise<CertificateSource> {
  const { namespace, secretName, logger } = options;
  const api = options.kubeConfig.makeApiClient(CoreV1Api);
  const read = async (): Promise<WebhookCertificate | { problem: string }> => {
    const secret = await readSecret(api, namespace, secretName);
    if (secret === undefined) return { problem: "the Secret does not exist" };
    const certificate = readCertificateSecret(secret);
    if ("problem" in certificate) return certificate;
    return certificateMatchesKey(certificate) ? certificate : { problem: "tls.key does not match tls.crt" };
  };

  const deadline = Date.now() + (options.waitTimeoutMs ?? 120_000);
  let current: WebhookCertificate | undefined;
  for (;;) {
    const found = await read().catch((error: unknown) => ({ problem: describeError(error) }));
    if (!("problem" in found)) {
      current = found;
      break;
    }
    if (Date.now() >= deadline) {
      throw new Error(`no usable serving certificate in Secret ${namespace}/${secretName}: ${found.problem}`);
    }
    logger.info(
      { secret: `${namespace}/${secretName}`, problem: found.problem },
      "waiting for the webhook certificate",
    );
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }

  let adopted = current;
  const timer = setInterval(() => {
    read()
      .then((found) => {
        if ("problem" in found) {
          logger.warn(
            { secret: `${namespace}/${secretName}`, problem: found.problem },
            "webhook certificate Secret is unusable; keeping the current certificate",
          );
          return;
        }
        if (found.cert === adopted.cert && found.key === adopted.key && found.caBundle === adopted.caBundle)
          return;
        adopted = found;
        logger.info({ secret: `${namespace}/${secretName}` }, "webhook certificate changed in its Secret");
        options.onRotate?.({ cert: found.cert, key: found.key });
      })
      .catch((error: unknown) =>
        logger.warn({ err: error }, "reading the webhook certificate Secret failed"),
      );
  }, options.resyncIntervalMs ?? 60_000);
  timer.unref();
  return { current: () => adopted, close: () => clearInterval(timer) };
}

function certificateMatchesKey(certificate: WebhookCertificate): boolean {
  try {
    return new X509Certificate(certificate.cert).checkPrivateKey(createPrivateKey(certificate.key));
  } catch {
    return false;
  }
}

/** An error's message; for an API error the Status message only (never a response body that could be data). */
export function describeError(error: unknown): string {
  if (error instanceof ApiException) {
    const body: unknown = error.body;
    let message: unknown;
    try {
      message = (typeof body === "string" ? (JSON.parse(body) as { message?: unknown }) : undefined)?.message;
    } catch {
      message = undefined;
    }
    return `Kubernetes API answered ${error.code}${typeof message === "string" ? `: ${message}` : ""}`;
  }
  return error instanceof Error ? error.message : String(error);
}
