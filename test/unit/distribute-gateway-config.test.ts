// The gateway's control-plane flags: exactly one source, defaults from the pod environment, validation.
import { hostname } from "node:os";
import { describe, expect, it } from "vitest";
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

  it("rejects a control plane that is not an http(s) URL and a gateway name that is not DNS-like", () => {
    expect(() => loadGatewayConfig(["--control-plane", "ftp://x"], {})).toThrow(
      /--control-plane \(PHANTOMGATE_CONTROL_PLANE\): must be an http\(s\) URL/,
    );
    expect(() => loadGatewayConfig(["--control-plane", "http://x", "--gateway-name", "a b"], {})).toThrow(
      /--gateway-name/,
    );
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
  });
});
