// Operator settings: the one place that reads `phantomgate operator` flags and their environment variables,
// validates them once with zod and hands out a frozen object. Flags win over environment variables, which win
// over defaults.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { z } from "zod";
import {
  camelCase,
  readSettings,
  switchSetting,
  switchValues,
  timerMs,
  wholeNumber,
  type SettingSpec,
} from "../config/settings.ts";

interface OptionSpec extends SettingSpec {
  /** Environment variables, first non-empty one wins. */
  readonly env: readonly string[];
  readonly description: string;
}

/** Every operator flag, its environment variables and its default: used for parsing and for `--help`. */
export const operatorOptionSpecs: readonly OptionSpec[] = [
  {
    flag: "kubeconfig",
    env: ["PHANTOMGATE_KUBECONFIG"],
    type: "string",
    description:
      "Kubeconfig file. Without it: the Pod's ServiceAccount in a cluster, else KUBECONFIG or ~/.kube/config.",
    defaultText: "(in-cluster, else KUBECONFIG or ~/.kube/config)",
  },
  {
    flag: "namespaces",
    env: ["PHANTOMGATE_NAMESPACES"],
    type: "string",
    description: "Comma-separated namespaces to watch; empty watches all namespaces.",
    defaultText: "",
  },
  {
    flag: "listen-host",
    env: ["PHANTOMGATE_LISTEN_HOST"],
    type: "string",
    description: "Address the snapshot, webhook and metrics listeners bind.",
    defaultText: "0.0.0.0",
  },
  {
    flag: "snapshot-port",
    env: ["PHANTOMGATE_SNAPSHOT_PORT"],
    type: "string",
    description: "Port of the snapshot stream the gateways connect to (0 = any free port).",
    defaultText: "8081",
  },
  {
    flag: "snapshot-tls",
    env: ["PHANTOMGATE_SNAPSHOT_TLS"],
    type: "boolean",
    description:
      "Serve the snapshot stream over HTTPS with the certificate in --webhook-secret-name (managed as for the webhook, also with --no-webhook); gateways trust its ca.crt.",
    defaultText: "false",
  },
  {
    flag: "webhook",
    env: ["PHANTOMGATE_WEBHOOK"],
    type: "boolean",
    description: "Serve the validating admission webhook; --no-webhook turns it off.",
    defaultText: "true",
  },
  {
    flag: "webhook-certificate",
    env: ["PHANTOMGATE_WEBHOOK_CERTIFICATE"],
    type: "string",
    description:
      "self: the operator issues and renews the serving certificate in --webhook-secret-name and sets the caBundle; secret: it only reads that Secret (cert-manager issues it, its cainjector sets the caBundle).",
    defaultText: "self",
  },
  {
    flag: "webhook-port",
    env: ["PHANTOMGATE_WEBHOOK_PORT"],
    type: "string",
    description: "Port of the admission webhook (HTTPS).",
    defaultText: "9443",
  },
  {
    flag: "webhook-configuration-name",
    env: ["PHANTOMGATE_WEBHOOK_CONFIGURATION_NAME"],
    type: "string",
    description: "ValidatingWebhookConfiguration whose caBundle the operator keeps current.",
    defaultText: "phantomgate",
  },
  {
    flag: "webhook-service-name",
    env: ["PHANTOMGATE_WEBHOOK_SERVICE_NAME"],
    type: "string",
    description: "Service in front of the webhook: names in the serving certificate.",
    defaultText: "phantomgate-operator",
  },
  {
    flag: "webhook-secret-name",
    env: ["PHANTOMGATE_WEBHOOK_SECRET_NAME"],
    type: "string",
    description:
      "Secret in the operator's namespace holding the webhook's serving certificate (created if missing).",
    defaultText: "phantomgate-webhook-tls",
  },
  {
    flag: "webhook-failure-policy",
    env: ["PHANTOMGATE_WEBHOOK_FAILURE_POLICY"],
    type: "string",
    description:
      "failurePolicy of the webhook configuration, Fail or Ignore: kept on the configuration together with its caBundle (the chart renders the same value).",
    defaultText: "Fail",
  },
  {
    flag: "webhook-url",
    env: ["PHANTOMGATE_WEBHOOK_URL"],
    type: "string",
    description:
      "URL a webhook configuration you create points at (out-of-cluster runs): its host (name or IP) is added to the serving certificate beside the Service names. The operator never writes the URL into a webhook configuration.",
    defaultText: "(none)",
  },
  {
    flag: "metrics-port",
    env: ["PHANTOMGATE_METRICS_PORT"],
    type: "string",
    description: "Port of /metrics, /healthz and /readyz (0 = any free port).",
    defaultText: "9090",
  },
  {
    flag: "pod-namespace",
    env: ["POD_NAMESPACE", "PHANTOMGATE_POD_NAMESPACE"],
    type: "string",
    description: "The operator's namespace: its Lease and webhook Secret live here.",
    defaultText: "(the ServiceAccount's namespace, else default)",
  },
  {
    flag: "identity",
    env: ["POD_NAME", "PHANTOMGATE_IDENTITY"],
    type: "string",
    description: "This replica's name in the Lease and in Events.",
    defaultText: "(the host name)",
  },
  {
    flag: "lease-name",
    env: ["PHANTOMGATE_LEASE_NAME"],
    type: "string",
    description: "Lease (coordination.k8s.io) the replicas elect a leader with.",
    defaultText: "phantomgate-operator",
  },
  {
    flag: "lease-duration-ms",
    env: ["PHANTOMGATE_LEASE_DURATION_MS"],
    type: "string",
    description: "How long the Lease holds after its last renewal; others take over after it.",
    defaultText: "10000",
  },
  {
    flag: "lease-renew-interval-ms",
    env: ["PHANTOMGATE_LEASE_RENEW_INTERVAL_MS"],
    type: "string",
    description: "How often the leader renews the Lease (below a third of the lease duration).",
    defaultText: "2000",
  },
  {
    flag: "gateway-audience",
    env: ["PHANTOMGATE_GATEWAY_AUDIENCE"],
    type: "string",
    description: "Audience the gateways' projected ServiceAccount tokens must carry.",
    defaultText: "phantomgate",
  },
  {
    flag: "gateway-service-accounts",
    env: ["PHANTOMGATE_GATEWAY_SERVICE_ACCOUNTS"],
    type: "string",
    description:
      "Comma-separated namespace:name ServiceAccounts allowed to stream snapshots; empty allows any authenticated one.",
    defaultText: "",
  },
  {
    flag: "stream-liveness-timeout-ms",
    env: ["PHANTOMGATE_STREAM_LIVENESS_TIMEOUT_MS"],
    type: "string",
    description:
      "Close a gateway's snapshot stream once its heartbeats have stopped for this long, so a frozen or vanished gateway stops counting as connected; gateways send one every third of it (0 = no check).",
    defaultText: "30000",
  },
  {
    flag: "debounce-ms",
    env: ["PHANTOMGATE_DEBOUNCE_MS"],
    type: "string",
    description: "Quiet period after a change before compiling.",
    defaultText: "100",
  },
  {
    flag: "debounce-max-ms",
    env: ["PHANTOMGATE_DEBOUNCE_MAX_MS"],
    type: "string",
    description: "Longest a change waits for compile while changes keep coming.",
    defaultText: "1000",
  },
  {
    flag: "relist-interval-ms",
    env: ["PHANTOMGATE_RELIST_INTERVAL_MS"],
    type: "string",
    description: "List every watched resource again this often, whatever the watches say (0 = never).",
    defaultText: "300000",
  },
  {
    flag: "watch-timeout-seconds",
    env: ["PHANTOMGATE_WATCH_TIMEOUT_SECONDS"],
    type: "string",
    description: "Server-side timeout of each watch call; it is then resumed from its resourceVersion.",
    defaultText: "300",
  },
  {
    flag: "watch-stall-ms",
    env: ["PHANTOMGATE_WATCH_STALL_MS"],
    type: "string",
    description: "Restart a watch that delivered no event or bookmark for this long.",
    defaultText: "180000",
  },
  {
    flag: "secret-label-selector",
    env: ["PHANTOMGATE_SECRET_LABEL_SELECTOR"],
    type: "string",
    description:
      "Read only Secrets with these labels (e.g. phantomgate.dev/auth-server=true); empty reads all, keeping only referenced ones.",
    defaultText: "",
  },
  {
    flag: "log-level",
    env: ["PHANTOMGATE_LOG_LEVEL"],
    type: "string",
    description: "Log level: fatal, error, warn, info, debug, trace or silent.",
    defaultText: "info",
  },
];

const port = wholeNumber.pipe(z.number().min(0).max(65535));
const dnsLabel = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "must be a lower-case RFC 1123 label");
const dnsSubdomain = z
  .string()
  .max(253)
  .regex(
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    "must be a lower-case RFC 1123 subdomain",
  );
const commaList = (item: z.ZodType<string, string>) =>
  z
    .string()
    .transform((text) =>
      text
        .split(",")
        .map((part) => part.trim())
        .filter((part) => part !== ""),
    )
    .pipe(z.array(item));

const operatorConfigSchema = z
  .object({
    kubeconfig: z.string().min(1).optional(),
    namespaces: commaList(dnsLabel),
    listenHost: z.string().min(1),
    snapshotPort: port,
    snapshotTls: switchSetting,
    webhook: switchSetting,
    webhookPort: port,
    webhookCertificate: z.enum(["self", "secret"]),
    webhookConfigurationName: dnsSubdomain,
    webhookServiceName: dnsLabel,
    webhookSecretName: dnsSubdomain,
    webhookFailurePolicy: z.enum(["Fail", "Ignore"]),
    webhookUrl: z.url({ protocol: /^https$/, error: "must be an https URL" }).optional(),
    metricsPort: port,
    podNamespace: dnsLabel,
    identity: z.string().min(1).max(128),
    leaseName: dnsSubdomain,
    leaseDurationMs: wholeNumber.pipe(z.number().min(2_000).max(600_000)),
    leaseRenewIntervalMs: wholeNumber.pipe(z.number().min(100).max(60_000)),
    gatewayAudience: z.string().min(1),
    gatewayServiceAccounts: commaList(
      z
        .string()
        .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/, "must be namespace:name"),
    ),
    streamLivenessTimeoutMs: wholeNumber
      .pipe(z.number().min(0).max(600_000))
      .refine((ms) => ms === 0 || ms >= 1_000, "must be 0 (no check) or at least 1000"),
    debounceMs: wholeNumber.pipe(z.number().min(0).max(60_000)),
    debounceMaxMs: wholeNumber.pipe(z.number().min(0).max(600_000)),
    relistIntervalMs: timerMs,
    watchTimeoutSeconds: wholeNumber.pipe(z.number().min(1).max(3_600)),
    watchStallMs: timerMs.pipe(z.number().min(1_000)),
    secretLabelSelector: z.string(),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.leaseRenewIntervalMs * 3 > config.leaseDurationMs) {
      ctx.addIssue({
        code: "custom",
        path: ["leaseRenewIntervalMs"],
        message: "must be at most a third of --lease-duration-ms, or a slow renewal loses the lease",
      });
    }
  });

export type OperatorConfig = Readonly<z.infer<typeof operatorConfigSchema>>;

export class OperatorConfigError extends Error {
  override readonly name = "OperatorConfigError";
}

const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

function readServiceAccountNamespace(): string | undefined {
  try {
    const text = readFileSync(serviceAccountNamespaceFile, "utf8").trim();
    return text === "" ? undefined : text;
  } catch {
    return undefined;
  }
}

/** Parses argv + env into a validated, frozen config; throws OperatorConfigError listing every problem. */
export function loadOperatorConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  defaults: { readonly hostname?: () => string; readonly podNamespace?: () => string | undefined } = {},
): OperatorConfig {
  let settings: Map<string, string | boolean>;
  try {
    settings = readSettings(argv, env, operatorOptionSpecs);
  } catch (error) {
    throw new OperatorConfigError((error as Error).message);
  }
  const raw: Record<string, unknown> = {};
  for (const [flag, value] of settings) raw[camelCase(flag)] = value;
  raw.podNamespace ??= (defaults.podNamespace ?? readServiceAccountNamespace)() ?? "default";
  raw.identity ??= (defaults.hostname ?? hostname)();
  const result = operatorConfigSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? "");
      const spec = operatorOptionSpecs.find((s) => camelCase(s.flag) === key);
      const name = spec === undefined ? key : `--${spec.flag} (${spec.env.join(", ")})`;
      return `${name}: ${issue.message}`;
    });
    throw new OperatorConfigError(`invalid operator settings:\n  ${lines.join("\n  ")}`);
  }
  return Object.freeze(result.data);
}

/** The flags table for `phantomgate operator --help` and docs/operator.md. */
export function describeOperatorOptions(): string {
  return operatorOptionSpecs
    .map(
      (s) =>
        `  --${s.flag}${s.type === "string" ? " VALUE" : ""}\n      ${s.description}\n      env ${s.env.join(" or ")}${s.type === "boolean" ? ` (${switchValues})` : ""}, default ${s.defaultText === "" ? "(empty)" : s.defaultText}`,
    )
    .join("\n");
}
