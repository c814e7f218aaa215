// Gateway settings: the one place that reads flags and PHANTOMGATE_* environment variables, validates them
// once with zod and hands out a frozen object. Flags win over environment variables, which win over defaults.
import { hostname } from "node:os";
import { z } from "zod";
import {
  camelCase,
  envSetting,
  readSettings,
  switchSetting,
  switchValues,
  timerMs,
  wholeNumber,
  type SettingSpec,
} from "./settings.ts";

interface OptionSpec extends SettingSpec {
  readonly env: string;
  readonly description: string;
}

/** Every gateway flag, its environment variable and its default, used for parsing and for `--help`. */
export const gatewayOptionSpecs: readonly OptionSpec[] = [
  {
    flag: "config",
    env: "PHANTOMGATE_CONFIG",
    type: "string",
    description:
      "Directory of manifests (*.yaml, *.yml, *.json; file mode); watched for changes. Give this or --control-plane.",
    defaultText: "(none)",
  },
  {
    flag: "control-plane",
    env: "PHANTOMGATE_CONTROL_PLANE",
    type: "string",
    description:
      "URL of the operator's snapshot service (control-plane mode); the gateway streams snapshots and revocations from it. Give this or --config.",
    defaultText: "(none)",
  },
  {
    flag: "control-plane-token-file",
    env: "PHANTOMGATE_CONTROL_PLANE_TOKEN_FILE",
    type: "string",
    description:
      "Projected ServiceAccount token (audience phantomgate) presented to the control plane; re-read on every connect.",
    defaultText: "/var/run/secrets/phantomgate/token",
  },
  {
    flag: "control-plane-ca-file",
    env: "PHANTOMGATE_CONTROL_PLANE_CA_FILE",
    type: "string",
    description: "PEM CA bundle to trust for an https control plane (default: the system CAs).",
    defaultText: "(system CAs)",
  },
  {
    flag: "gateway-name",
    env: "PHANTOMGATE_GATEWAY_NAME",
    type: "string",
    description: "Name this gateway reports to the control plane (ACKs, fleet status).",
    defaultText: "(env POD_NAME, else the hostname)",
  },
  {
    flag: "state-dir",
    env: "PHANTOMGATE_STATE_DIR",
    type: "string",
    description:
      "Directory for the last-known-good snapshot (control-plane mode); must be writable. Mount an emptyDir here in a pod.",
    defaultText: "/var/lib/phantomgate",
  },
  {
    flag: "host",
    env: "PHANTOMGATE_HOST",
    type: "string",
    description: "Address the public listener binds.",
    defaultText: "0.0.0.0",
  },
  {
    flag: "port",
    env: "PHANTOMGATE_PORT",
    type: "string",
    description: "Public listener port (0 = any free port).",
    defaultText: "8080",
  },
  {
    flag: "admin-host",
    env: "PHANTOMGATE_ADMIN_HOST",
    type: "string",
    description: "Address the admin listener binds.",
    defaultText: "127.0.0.1",
  },
  {
    flag: "admin-port",
    env: "PHANTOMGATE_ADMIN_PORT",
    type: "string",
    description: "Admin port: /healthz /readyz /metrics /routes /.well-known/jwks.json.",
    defaultText: "9901",
  },
  {
    flag: "max-url-bytes",
    env: "PHANTOMGATE_MAX_URL_BYTES",
    type: "string",
    description: "Longest request URL accepted (414 beyond).",
    defaultText: "8192",
  },
  {
    flag: "max-header-bytes",
    env: "PHANTOMGATE_MAX_HEADER_BYTES",
    type: "string",
    description: "Largest request header block accepted (431 beyond).",
    defaultText: "16384",
  },
  {
    flag: "max-form-buffer-bytes",
    env: "PHANTOMGATE_MAX_FORM_BUFFER_BYTES",
    type: "string",
    description:
      "Bytes of form-urlencoded bodies all requests together may hold while they are checked (503 beyond).",
    defaultText: "67108864",
  },
  {
    flag: "max-pending-as-calls",
    env: "PHANTOMGATE_MAX_PENDING_AS_CALLS",
    type: "string",
    description:
      "Calls to one authorization server that may be waiting or under way at once (503 at once beyond).",
    defaultText: "64",
  },
  {
    flag: "max-new-tokens-per-client",
    env: "PHANTOMGATE_MAX_NEW_TOKENS_PER_CLIENT",
    type: "string",
    description:
      "Uncached tokens of one client (an IPv4 address or an IPv6 /48) checked at the authorization server at once (429 at once beyond; 0: no bound).",
    defaultText: "16",
  },
  {
    flag: "min-body-rate",
    env: "PHANTOMGATE_MIN_BODY_RATE",
    type: "string",
    description:
      "Bytes per second a streamed request body must average once the route's timeout has passed since it started (408 beyond; 0: no minimum).",
    defaultText: "1024",
  },
  {
    flag: "max-upstream-requests",
    env: "PHANTOMGATE_MAX_UPSTREAM_REQUESTS",
    type: "string",
    description:
      "Requests in flight to one upstream origin at once (503 at once beyond), like Envoy's circuit breakers.",
    defaultText: "1024",
  },
  {
    flag: "token-cache-max-bytes",
    env: "PHANTOMGATE_TOKEN_CACHE_MAX_BYTES",
    type: "string",
    description:
      "Estimated bytes the token caches of all auth servers may hold together (refusals, then least recently used tokens go first).",
    defaultText: "268435456",
  },
  {
    flag: "max-connections",
    env: "PHANTOMGATE_MAX_CONNECTIONS",
    type: "string",
    description:
      "Client connections the public port holds at once; more are closed on arrival (the admin port keeps answering).",
    defaultText: "10000",
  },
  {
    flag: "client-send-timeout-ms",
    env: "PHANTOMGATE_CLIENT_SEND_TIMEOUT_MS",
    type: "string",
    description:
      "How long a client may leave its response untaken (its connection full) before it is cut, like nginx's send_timeout.",
    defaultText: "60000",
  },
  {
    flag: "shutdown-grace-ms",
    env: "PHANTOMGATE_SHUTDOWN_GRACE_MS",
    type: "string",
    description: "How long in-flight requests may drain on SIGTERM.",
    defaultText: "10000",
  },
  {
    flag: "audit-log",
    env: "PHANTOMGATE_AUDIT_LOG",
    type: "string",
    description:
      "Where audit lines go: 'stdout', 'off' or a file path in a directory that exists (a new file gets mode 0640).",
    defaultText: "stdout",
  },
  {
    flag: "log-level",
    env: "PHANTOMGATE_LOG_LEVEL",
    type: "string",
    description: "Log level: fatal, error, warn, info, debug, trace or silent.",
    defaultText: "info",
  },
  {
    flag: "mint-issuer",
    env: "PHANTOMGATE_MINT_ISSUER",
    type: "string",
    description: "`iss` of JWTs the gateway mints (mint mode).",
    defaultText: "urn:phantomgate:gateway",
  },
  {
    flag: "mint-key-file",
    env: "PHANTOMGATE_MINT_KEY_FILE",
    type: "string",
    description: "Private JWK (JSON) or PKCS#8 PEM for minting; an ephemeral ES256 key when absent.",
    defaultText: "(ephemeral)",
  },
  {
    flag: "trust-forwarded",
    env: "PHANTOMGATE_TRUST_FORWARDED",
    type: "boolean",
    description:
      "Append to incoming X-Forwarded-For/Forwarded instead of replacing them (behind a trusted load balancer); --no-trust-forwarded overrides the variable.",
    defaultText: "false",
  },
];

const port = wholeNumber.pipe(z.number().min(0).max(65535));

const gatewayConfigSchema = z
  .object({
    configDir: z.string().min(1).optional(),
    controlPlane: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }).optional(),
    controlPlaneTokenFile: z.string().min(1),
    controlPlaneCaFile: z.string().min(1).optional(),
    gatewayName: z
      .string()
      .min(1)
      .max(253)
      .regex(
        /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/,
        "must be a DNS-style name (letters, digits, . _ -)",
      ),
    stateDir: z.string().min(1),
    host: z.string().min(1),
    port,
    adminHost: z.string().min(1),
    adminPort: port,
    maxUrlBytes: wholeNumber.pipe(
      z
        .number()
        .min(1)
        .max(1024 * 1024),
    ),
    maxHeaderBytes: wholeNumber.pipe(
      z
        .number()
        .min(1)
        .max(1024 * 1024),
    ),
    maxFormBufferBytes: wholeNumber.pipe(z.number().min(1).max(Number.MAX_SAFE_INTEGER)),
    maxPendingAsCalls: wholeNumber.pipe(z.number().min(1).max(1_000_000)),
    maxNewTokensPerClient: wholeNumber.pipe(z.number().min(0).max(1_000_000)),
    minBodyRate: wholeNumber.pipe(z.number().min(0).max(1_000_000_000)),
    shutdownGraceMs: timerMs,
    clientSendTimeoutMs: timerMs,
    maxConnections: wholeNumber.pipe(z.number().min(1).max(10_000_000)),
    maxUpstreamRequests: wholeNumber.pipe(z.number().min(1).max(10_000_000)),
    tokenCacheMaxBytes: wholeNumber.pipe(
      z
        .number()
        .min(1024 * 1024)
        .max(Number.MAX_SAFE_INTEGER),
    ),
    auditLog: z.string().min(1),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    mintIssuer: z.string().min(1),
    mintKeyFile: z.string().min(1).optional(),
    trustForwarded: switchSetting,
  })
  .strict()
  .refine((c) => (c.configDir === undefined) !== (c.controlPlane === undefined), {
    path: ["configDir"],
    error: "give exactly one of --config DIR (file mode) or --control-plane URL (operator mode)",
  });

export type GatewayConfig = Readonly<z.infer<typeof gatewayConfigSchema>>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** A listener could not be opened (a port in use, not allowed); the message names the flags that choose it. */
export class ListenError extends ConfigError {
  readonly address: string;
  readonly detail: string;

  constructor(address: string, flags: string, detail: string) {
    super(`cannot listen on ${address} (${flags}): ${detail}`);
    this.address = address;
    this.detail = detail;
  }
}

/** Flags that only operator mode (--control-plane) reads. */
const operatorModeFlags = ["control-plane-token-file", "control-plane-ca-file", "gateway-name", "state-dir"];

/** The config key of a flag: `--config` fills `configDir`, the others their camel-case name. */
function keyOf(flag: string): string {
  return flag === "config" ? "configDir" : camelCase(flag);
}

/** Parses argv + env into a validated, frozen GatewayConfig; throws ConfigError with every problem listed. */
export function loadGatewayConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): GatewayConfig {
  let settings: Map<string, string | boolean>;
  const given = new Set<string>();
  try {
    settings = readSettings(argv, env, gatewayOptionSpecs, given);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  // Flags of operator mode given on the command line of a file-mode gateway would be ignored: say so instead.
  const unused = operatorModeFlags.filter((flag) => given.has(flag));
  if (settings.has("config") && !settings.has("control-plane") && unused.length > 0) {
    throw new ConfigError(
      `${unused.map((flag) => `--${flag}`).join(", ")}: only used with --control-plane URL (operator mode), not with --config DIR`,
    );
  }
  const raw: Record<string, unknown> = {};
  for (const [flag, value] of settings) raw[keyOf(flag)] = value;
  raw.gatewayName ??= envSetting(env, ["POD_NAME"]) ?? hostname();
  const result = gatewayConfigSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? "");
      const spec = gatewayOptionSpecs.find((s) => keyOf(s.flag) === key);
      const name = spec === undefined ? key : `--${spec.flag} (${spec.env})`;
      return `${name}: ${issue.message}`;
    });
    throw new ConfigError(`invalid gateway settings:\n  ${lines.join("\n  ")}`);
  }
  return Object.freeze(result.data);
}

/**
 * The flags table for `phantomgate gateway --help`. The README's table is written by hand;
 * test/unit/gateway-config-doc.test.ts keeps it in step with these specs.
 */
export function describeGatewayOptions(): string {
  return gatewayOptionSpecs
    .map(
      (s) =>
        `  --${s.flag}${s.type === "string" ? " VALUE" : ""}\n      ${s.description}\n      env ${s.env}${s.type === "boolean" ? ` (${switchValues})` : ""}, default ${s.defaultText}`,
    )
    .join("\n");
}
