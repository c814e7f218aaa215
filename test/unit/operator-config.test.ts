// `phantomgate operator` settings: defaults, environment, validation, --help, and docs/operator.md in step.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { loadOperatorConfig, OperatorConfigError, operatorOptionSpecs } from "../../src/operator/config.ts";

const defaults = { hostname: () => "host-1", podNamespace: () => undefined };
const doc = readFileSync(new URL("../../docs/operator.md", import.meta.url), "utf8");

describe("operator config", () => {
  it("has the documented defaults", () => {
    const config = loadOperatorConfig([], {}, defaults);
    expect(config).toMatchObject({
      namespaces: [],
      listenHost: "0.0.0.0",
      snapshotPort: 8081,
      snapshotTls: false,
      webhook: true,
      webhookPort: 9443,
      webhookCertificate: "self",
      webhookFailurePolicy: "Fail",
      metricsPort: 9090,
      podNamespace: "default",
      identity: "host-1",
      leaseName: "phantomgate-operator",
      leaseDurationMs: 10_000,
      leaseRenewIntervalMs: 2_000,
      gatewayAudience: "phantomgate",
      gatewayServiceAccounts: [],
      streamLivenessTimeoutMs: 30_000,
      debounceMs: 100,
      debounceMaxMs: 1_000,
      relistIntervalMs: 300_000,
      watchTimeoutSeconds: 300,
      watchStallMs: 180_000,
      logLevel: "info",
    });
    expect(config.kubeconfig).toBeUndefined();
    expect(config.webhookUrl).toBeUndefined();
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("reads the Pod's downward-API variables and PHANTOMGATE_*; flags win", () => {
    const env = {
      POD_NAME: "op-7d9f",
      POD_NAMESPACE: "phantomgate",
      PHANTOMGATE_NAMESPACES: "a, b,,c",
      PHANTOMGATE_DEBOUNCE_MS: "50",
    };
    const config = loadOperatorConfig(["--debounce-ms", "25", "--no-webhook"], env, defaults);
    expect(config).toMatchObject({
      identity: "op-7d9f",
      podNamespace: "phantomgate",
      namespaces: ["a", "b", "c"],
      debounceMs: 25,
      webhook: false,
    });
  });

  it("parses gateway ServiceAccounts and the webhook URL", () => {
    const config = loadOperatorConfig(
      [
        "--gateway-service-accounts",
        "pg:gw,other:edge-gw",
        "--webhook-url",
        "https://127.0.0.1:9443/validate",
      ],
      {},
      defaults,
    );
    expect(config.gatewayServiceAccounts).toEqual(["pg:gw", "other:edge-gw"]);
    expect(config.webhookUrl).toBe("https://127.0.0.1:9443/validate");
  });

  it("lists every problem, naming flag and environment variable", () => {
    let error: unknown;
    try {
      loadOperatorConfig(
        ["--snapshot-port", "70000", "--namespaces", "Bad_NS", "--webhook-failure-policy", "Maybe"],
        {},
        defaults,
      );
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(OperatorConfigError);
    const message = (error as Error).message;
    expect(message).toContain("--snapshot-port (PHANTOMGATE_SNAPSHOT_PORT)");
    expect(message).toContain("--namespaces (PHANTOMGATE_NAMESPACES)");
    expect(message).toContain("--webhook-failure-policy");
    expect(() => loadOperatorConfig(["--lease-renew-interval-ms", "5000"], {}, defaults)).toThrow(
      /--lease-renew-interval-ms .*a third of --lease-duration-ms/,
    );
    expect(() => loadOperatorConfig(["--stream-liveness-timeout-ms", "500"], {}, defaults)).toThrow(
      /--stream-liveness-timeout-ms .*0 \(no check\) or at least 1000/,
    );
    expect(
      loadOperatorConfig([], { PHANTOMGATE_STREAM_LIVENESS_TIMEOUT_MS: "0" }, defaults)
        .streamLivenessTimeoutMs,
    ).toBe(0);
    expect(() => loadOperatorConfig(["--no-such-flag"], {}, defaults)).toThrow(OperatorConfigError);
    expect(() => loadOperatorConfig(["--webhook-url", "http://x/validate"], {}, defaults)).toThrow(/https/);
  });

  it("treats an empty or blank environment variable as unset, like the gateway", () => {
    const config = loadOperatorConfig(
      [],
      {
        PHANTOMGATE_SNAPSHOT_PORT: " ",
        PHANTOMGATE_WEBHOOK: "",
        PHANTOMGATE_DEBOUNCE_MS: "\t",
        POD_NAME: " ",
        PHANTOMGATE_IDENTITY: "op-2",
      },
      defaults,
    );
    expect(config).toMatchObject({ snapshotPort: 8081, webhook: true, debounceMs: 100, identity: "op-2" });
  });

  it("rejects an empty flag value and a number that is not a whole number, never reading it as 0", () => {
    expect(() => loadOperatorConfig(["--snapshot-port", ""], {}, defaults)).toThrow(
      /--snapshot-port \(PHANTOMGATE_SNAPSHOT_PORT\): is empty; give a whole number/,
    );
    expect(() => loadOperatorConfig([], { PHANTOMGATE_RELIST_INTERVAL_MS: "5m" }, defaults)).toThrow(
      '--relist-interval-ms (PHANTOMGATE_RELIST_INTERVAL_MS): must be a whole number, got "5m"',
    );
    // Beyond what a timer can wait, a timer fires at once: a relist or watchdog in a tight loop.
    for (const flag of ["--relist-interval-ms", "--watch-stall-ms"]) {
      expect(() => loadOperatorConfig([flag, "2147483648"], {}, defaults)).toThrow(
        /must be at most 2147483647/,
      );
      expect(loadOperatorConfig([flag, "2147483647"], {}, defaults)).toBeDefined();
    }
  });

  it("reads switches as true/false, 1/0, yes/no or on/off and rejects anything else", () => {
    const webhook = (value: string) =>
      loadOperatorConfig([], { PHANTOMGATE_WEBHOOK: value }, defaults).webhook;
    for (const value of ["true", "1", "YES", "on"]) expect(webhook(value), value).toBe(true);
    for (const value of ["False", "0", "no", "OFF"]) expect(webhook(value), value).toBe(false);
    expect(() => webhook("enabled")).toThrow(
      /--webhook \(PHANTOMGATE_WEBHOOK\): must be true\/false, 1\/0, yes\/no or on\/off \(any case\), got "enabled"/,
    );
    expect(loadOperatorConfig([], { PHANTOMGATE_SNAPSHOT_TLS: "yes" }, defaults).snapshotTls).toBe(true);
    expect(loadOperatorConfig(["--no-webhook"], { PHANTOMGATE_WEBHOOK: "true" }, defaults).webhook).toBe(
      false,
    );
  });

  it("--help and docs/operator.md say what --webhook-url does; --help lists every log level", async () => {
    let out = "";
    const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true }, env: {} };
    expect(await main(["operator", "--help"], io as never)).toBe(0);
    const help = out.replace(/\s+/g, " ");
    expect(help).not.toContain("calls the webhook at");
    expect(help).toContain("operator never writes the URL into a webhook configuration");
    expect(doc).toMatch(/^\| `--webhook-url` .*operator never writes the URL into a webhook configuration/m);
    expect(help).toContain("Log level: fatal, error, warn, info, debug, trace or silent.");
    expect(help).toContain("env PHANTOMGATE_WEBHOOK (true/false, 1/0, yes/no or on/off), default true");
  });

  it("--help lists every flag and its environment variables", async () => {
    let out = "";
    const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true }, env: {} };
    expect(await main(["operator", "--help"], io as never)).toBe(0);
    for (const spec of operatorOptionSpecs) {
      expect(out).toContain(`--${spec.flag}`);
      for (const env of spec.env) expect(out).toContain(env);
    }
  });

  it("docs/operator.md documents every flag with its environment variables", () => {
    for (const spec of operatorOptionSpecs) {
      const row = doc.split("\n").find((line) => new RegExp(`^\\|\\s*\`--${spec.flag}\``).test(line));
      expect(row, `--${spec.flag}`).toBeDefined();
      for (const env of spec.env) expect(row).toContain(env);
    }
  });
});
