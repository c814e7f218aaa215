// The gateway's control-plane flags: exactly one source, defaults from the pod environment, validation.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { gatewayCommand } from "../../src/cli/commands/gateway.ts";
import { ConfigError, describeGatewayOptions, loadGatewayConfig } from "../../src/config/gateway-config.ts";

describe("gateway control-plane settings", () => {
  it("takes --control-plane instead of --config, with defaults for the token, name and state dir", () => {
    const config = loadGatewayConfig(["--control-plane", "https://operator.phantomgate.svc:8443"], {});
    expect(config.configDir).toBeUndefined();
    expect(config.controlPlane).toBe("https://operator.phantomgate.svc:8443");
    expect(config.controlPlaneTokenFile).toBe("/var/run/secrets/phantomgate/token");
    expect(config.controlPlaneCaFile).toBeUndefined();
    expect(config.stateDir).toBe("/var/lib/phantomgate");
    expect(config.gatewayName).toBe(hostname());
  });

  it("reads every setting from the environment, the gateway name from POD_NAME", () => {
    const config = loadGatewayConfig([], {
      PHANTOMGATE_CONTROL_PLANE: "http://127.0.0.1:7000",
      PHANTOMGATE_CONTROL_PLANE_TOKEN_FILE: "/tmp/token",
      PHANTOMGATE_CONTROL_PLANE_CA_FILE: "/tmp/ca.pem",
      PHANTOMGATE_STATE_DIR: "/tmp/state",
      POD_NAME: "phantomgate-gateway-7d9f-abcde",
    });
    expect(config).toMatchObject({
      controlPlane: "http://127.0.0.1:7000",
      controlPlaneTokenFile: "/tmp/token",
      controlPlaneCaFile: "/tmp/ca.pem",
      stateDir: "/tmp/state",
      gatewayName: "phantomgate-gateway-7d9f-abcde",
    });
    expect(
      loadGatewayConfig(["--gateway-name", "gw-1"], { PHANTOMGATE_CONTROL_PLANE: "http://x", POD_NAME: "p" })
        .gatewayName,
    ).toBe("gw-1");
  });

  it("wants exactly one of --config and --control-plane", () => {
    expect(() => loadGatewayConfig([], {})).toThrow(/exactly one of --config DIR .* or --control-plane URL/);
    expect(() => loadGatewayConfig(["--config", "/tmp", "--control-plane", "http://x"], {})).toThrow(
      ConfigError,
    );
    expect(loadGatewayConfig(["--config", "/tmp/manifests"], {}).configDir).toBe("/tmp/manifests");
  });

  it("stops at start, naming the flag, when --config is missing or not a directory, or --audit-log cannot be opened", async () => {
    const dir = mkdtempSync(join(tmpdir(), "phantomgate-config-"));
    const file = join(dir, "routes.yaml");
    writeFileSync(file, "");
    const run = async (
      configDir: string,
      extra: readonly string[] = [],
    ): Promise<{ code: number; stderr: string }> => {
      let stderr = "";
      const sink = (append: (text: string) => void) =>
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            append(chunk.toString());
            callback();
          },
        });
      const io = { stdout: sink(() => undefined), stderr: sink((text) => (stderr += text)), env: {} };
      const argv = [
        "--config",
        configDir,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--admin-port",
        "0",
        ...extra,
      ];
      return { code: await gatewayCommand.run(argv, io), stderr };
    };
    try {
      expect(await run(join(dir, "missing"))).toEqual({
        code: 2,
        stderr: expect.stringContaining(
          `--config (PHANTOMGATE_CONFIG): cannot read ${join(dir, "missing")}: ENOENT`,
        ) as unknown,
      });
      expect(await run(file)).toEqual({
        code: 2,
        stderr: expect.stringContaining(
          `--config (PHANTOMGATE_CONFIG): ${file} is not a directory`,
        ) as unknown,
      });
      // An audit log that cannot be opened stops the start the same way, before any listener is up.
      expect(await run(dir, ["--audit-log", dir])).toEqual({
        code: 2,
        stderr: expect.stringContaining(
          `--audit-log (PHANTOMGATE_AUDIT_LOG): cannot open the audit log ${dir}: EISDIR`,
        ) as unknown,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects a control plane that is not an http(s) URL and a gateway name that is not DNS-like", () => {
    expect(() => loadGatewayConfig(["--control-plane", "ftp://x"], {})).toThrow(
      /--control-plane \(PHANTOMGATE_CONTROL_PLANE\): must be an http\(s\) URL/,
    );
    expect(() => loadGatewayConfig(["--control-plane", "http://x", "--gateway-name", "a b"], {})).toThrow(
      /--gateway-name/,
    );
  });

  it("treats an empty or blank environment variable as unset, never as port 0", () => {
    const config = loadGatewayConfig(["--config", "/tmp"], {
      PHANTOMGATE_PORT: "",
      PHANTOMGATE_ADMIN_PORT: " ",
      PHANTOMGATE_SHUTDOWN_GRACE_MS: "",
      PHANTOMGATE_TRUST_FORWARDED: "",
      POD_NAME: " ",
    });
    expect(config).toMatchObject({
      port: 8080,
      adminPort: 9901,
      shutdownGraceMs: 10_000,
      trustForwarded: false,
      gatewayName: hostname(),
    });
  });

  it("rejects an empty flag value and a number that is not a whole number, naming flag and variable", () => {
    expect(() => loadGatewayConfig(["--config", "/tmp", "--port", " "], {})).toThrow(
      /--port \(PHANTOMGATE_PORT\): is empty; give a whole number/,
    );
    expect(() => loadGatewayConfig(["--config", "/tmp", "--admin-port", ""], {})).toThrow(
      /--admin-port \(PHANTOMGATE_ADMIN_PORT\): is empty/,
    );
    for (const text of ["abc", "1e3", "0x10", "1.5"]) {
      expect(() => loadGatewayConfig(["--config", "/tmp"], { PHANTOMGATE_SHUTDOWN_GRACE_MS: text })).toThrow(
        `--shutdown-grace-ms (PHANTOMGATE_SHUTDOWN_GRACE_MS): must be a whole number, got "${text}"`,
      );
    }
    expect(loadGatewayConfig(["--config", "/tmp", "--port", " 0 "], {}).port).toBe(0);
    // A longer grace than a timer can wait would end the drain after 1 ms.
    expect(() => loadGatewayConfig(["--config", "/tmp", "--shutdown-grace-ms", "3000000000"], {})).toThrow(
      /--shutdown-grace-ms \(PHANTOMGATE_SHUTDOWN_GRACE_MS\): must be at most 2147483647/,
    );
  });

  it("refuses operator-mode flags on the command line of a file-mode gateway (they would be ignored)", () => {
    expect(() =>
      loadGatewayConfig(["--config", "/tmp", "--state-dir", "/x", "--control-plane-ca-file", "/ca.pem"], {}),
    ).toThrow(
      "--control-plane-ca-file, --state-dir: only used with --control-plane URL (operator mode), not with --config DIR",
    );
    // From the environment (a shared container spec) they are only defaults, as in operator mode.
    expect(loadGatewayConfig(["--config", "/tmp"], { PHANTOMGATE_STATE_DIR: "/x" }).stateDir).toBe("/x");
    expect(
      loadGatewayConfig(
        ["--control-plane", "https://op:8443", "--state-dir", "/x", "--gateway-name", "gw"],
        {},
      ),
    ).toMatchObject({ stateDir: "/x", gatewayName: "gw" });
  });

  it("reads PHANTOMGATE_TRUST_FORWARDED as true/false, 1/0, yes/no or on/off and rejects anything else", () => {
    const trust = (value: string) =>
      loadGatewayConfig(["--config", "/tmp"], { PHANTOMGATE_TRUST_FORWARDED: value }).trustForwarded;
    for (const value of ["true", "TRUE", "1", "yes", "On"]) expect(trust(value), value).toBe(true);
    for (const value of ["false", "0", "No", "off"]) expect(trust(value), value).toBe(false);
    expect(() => trust("enabled")).toThrow(
      /--trust-forwarded \(PHANTOMGATE_TRUST_FORWARDED\): must be true\/false, 1\/0, yes\/no or on\/off \(any case\), got "enabled"/,
    );
    expect(loadGatewayConfig(["--config", "/tmp", "--trust-forwarded"], {}).trustForwarded).toBe(true);
    // The flag's negative form wins over the variable, as flags do.
    expect(
      loadGatewayConfig(["--config", "/tmp", "--no-trust-forwarded"], { PHANTOMGATE_TRUST_FORWARDED: "true" })
        .trustForwarded,
    ).toBe(false);
  });

  it("documents the new flags in --help", () => {
    const help = describeGatewayOptions();
    for (const flag of [
      "--control-plane VALUE",
      "--control-plane-token-file",
      "--control-plane-ca-file",
      "--gateway-name",
      "--state-dir",
    ]) {
      expect(help).toContain(flag);
    }
    expect(help).toContain("Log level: fatal, error, warn, info, debug, trace or silent.");
    expect(help).toContain(
      "env PHANTOMGATE_TRUST_FORWARDED (true/false, 1/0, yes/no or on/off), default false",
    );
  });
});
