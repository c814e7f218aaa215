// The ValidatingWebhookConfiguration: what the API server sends to the webhook, and keeping its caBundle current.
import {
  ApiException,
  PatchStrategy,
  setHeaderOptions,
  type AdmissionregistrationV1Api,
} from "@kubernetes/client-node";
import { apiVersion as phantomgateApiVersion } from "../../resources/common.ts";
import { phantomgateGroup } from "./review-admission.ts";

/** Resource names (CRD plurals) the webhook judges. */
export const webhookResources = {
  ApiRoute: "apiroutes",
  ScopePolicy: "scopepolicies",
  AuthServer: "authservers",
} as const;

/** Name of the webhook that judges creates and updates (kubectl prints it in a denial). */
export const validatingWebhookName = "validate.phantomgate.dev";
/** Name of the webhook that only warns about deletions. */
export const deletionWebhookName = "deletions.phantomgate.dev";

export interface ValidatingWebhookConfigurationOptions {
  readonly name: string;
  /**
   * What the API server does when the webhook cannot be reached for a create or update: `Fail` rejects the
   * request, `Ignore` lets it in unjudged (compile then isolates it with Accepted=False if it is bad).
   */
  readonly failurePolicy: "Fail" | "Ignore";
  /** In a cluster: the webhook's Service. Exactly one of service and url. */
  readonly service?: { namespace: string; name: string; port: number; path: string };
  /** Outside a cluster (tests): `https://127.0.0.1:<port>/validate`. */
  readonly url?: string;
  /** PEM of the CAs that sign the serving certificate; "" until known (the certificate manager patches it). */
  readonly caBundle: string;
  /** Judge only objects in these namespaces (the ones the operator watches); default all. */
  readonly namespaces?: readonly string[];
  /** Seconds the API server waits for an answer (1–30). Default 10. */
  readonly timeoutSeconds?: number;
}

/**
 * Builds the ValidatingWebhookConfiguration with two webhooks:
 * - `validate.phantomgate.dev`: CREATE and UPDATE of ApiRoutes, ScopePolicies and AuthServers, with the given
 *   failurePolicy. Status writes are a subresource and never reach it; neither do Secrets.
 * - `deletions.phantomgate.dev`: DELETE of ScopePolicies and AuthServers, always `Ignore`: it only adds
 *   warnings naming the routes a deletion breaks, so it must never block cleanup (e.g. with the operator gone).
 */
export function buildValidatingWebhookConfiguration(options: ValidatingWebhookConfigurationOptions): object {
  if ((options.service === undefined) === (options.url === undefined)) {
    throw new Error("buildValidatingWebhookConfiguration: set exactly one of service and url");
  }
  const timeoutSeconds = options.timeoutSeconds ?? 10;
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1 || timeoutSeconds > 30) {
    throw new Error(`timeoutSeconds must be 1–30, got ${timeoutSeconds}`);
  }
  const clientConfig = {
    ...(options.service === undefined ? { url: options.url } : { service: { ...options.service } }),
    ...(options.caBundle === "" ? {} : { caBundle: encodeCaBundle(options.caBundle) }),
  };
  const version = phantomgateApiVersion.split("/")[1] ?? "v1alpha1";
  const namespaceSelector =
    options.namespaces === undefined
      ? {}
      : {
          matchExpressions: [
            { key: "kubernetes.io/metadata.name", operator: "In", values: [...options.namespaces] },
          ],
        };
  const common = {
    clientConfig,
    admissionReviewVersions: ["v1"],
    sideEffects: "None",
    matchPolicy: "Equivalent",
    timeoutSeconds,
    namespaceSelector,
  };
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: {
      name: options.name,
      labels: { "app.kubernetes.io/name": "phantomgate", "app.kubernetes.io/component": "admission-webhook" },
    },
    webhooks: [
      {
        name: validatingWebhookName,
        ...common,
        failurePolicy: options.failurePolicy,
        rules: [
          {
            apiGroups: [phantomgateGroup],
            apiVersions: [version],
            operations: ["CREATE", "UPDATE"],
            resources: Object.values(webhookResources),
            scope: "Namespaced",
          },
        ],
      },
      {
        name: deletionWebhookName,
        ...common,
        failurePolicy: "Ignore",
        rules: [
          {
            apiGroups: [phantomgateGroup],
            apiVersions: [version],
            operations: ["DELETE"],
            resources: [webhookResources.ScopePolicy, webhookResources.AuthServer],
            scope: "Namespaced",
          },
        ],
      },
    ],
  };
}

/** `clientConfig.caBundle` is base64 of the PEM bundle. */
export function encodeCaBundle(pem: string): string {
  return Buffer.from(pem, "utf8").toString("base64");
}

/**
 * Sets the caBundle of every webhook in the configuration `name` to `caBundlePem`. `missing` when the
 * configuration does not exist (yet: it is installed by the chart or a test).
 */
export async function ensureCaBundle(
  api: AdmissionregistrationV1Api,
  name: string,
  caBundlePem: string,
  /** When given, the judging webhooks' failurePolicy is kept at this value too (the deletion one stays Ignore). */
  failurePolicy?: "Fail" | "Ignore",
): Promise<"patched" | "unchanged" | "missing"> {
  const desired = encodeCaBundle(caBundlePem);
  for (let attempt = 1; ; attempt++) {
    let configuration;
    try {
      configuration = await api.readValidatingWebhookConfiguration({ name });
    } catch (error) {
      if (error instanceof ApiException && error.code === 404) return "missing";
      throw error;
    }
    const webhooks = configuration.webhooks ?? [];
    const policyFor = (webhookName: string): "Fail" | "Ignore" | undefined =>
      failurePolicy === undefined
        ? undefined
        : webhookName === deletionWebhookName
          ? "Ignore"
          : failurePolicy;
    const policyDrifted = (webhook: { name: string; failurePolicy?: string }): boolean => {
      const wanted = policyFor(webhook.name);
      return wanted !== undefined && webhook.failurePolicy !== wanted;
    };
    if (webhooks.every((webhook) => webhook.clientConfig.caBundle === desired && !policyDrifted(webhook))) {
      return "unchanged";
    }
    // A JSON patch touches only caBundle (no round trip through the client's models, which could drop fields
    // newer than the client), and the test on resourceVersion makes a concurrent change fail instead of lose.
    const patch = [
      { op: "test", path: "/metadata/resourceVersion", value: configuration.metadata?.resourceVersion },
      ...webhooks.map((_webhook, index) => ({
        op: "add",
        path: `/webhooks/${index}/clientConfig/caBundle`,
        value: desired,
      })),
      ...webhooks.flatMap((webhook, index) => {
        const wanted = policyFor(webhook.name);
        return wanted === undefined
          ? []
          : [{ op: "add", path: `/webhooks/${index}/failurePolicy`, value: wanted }];
      }),
    ];
    try {
      await api.patchValidatingWebhookConfiguration(
        { name, body: patch },
        setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
      );
      return "patched";
    } catch (error) {
      // A failed test op is 422 in some versions and 409 in others: both mean "read again".
      const raced = error instanceof ApiException && (error.code === 409 || error.code === 422);
      if (!raced || attempt >= 5) throw error;
    }
  }
}
