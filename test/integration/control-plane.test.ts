// Control-plane mode end to end without Kubernetes: real gateway processes stream from a real distribution
// server (a mock TokenReviewer stands in for the API server's TokenReview/SubjectAccessReview), in front of the
// real demo authorization server and echo API. Publish → swap → ACK → fleet view; NACK; revocation fan-out;
// operator down → keep serving; restart while down → last-known-good; operator back → converge.
import { statSync } from "node:fs";
import type { Server } from "node:http";
import { join } from "node:path";
import pino from "pino";
import { Registry } from "prom-client";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import { LAST_KNOWN_GOOD_FILE } from "../../src/gateway/state/last-known-good.ts";
import {
  createDistributor,
  startDistributionServer,
  type DistributionServer,
  type Distributor,
} from "../../src/operator/distribute/index.ts";
import type { Snapshot } from "../../src/snapshot/snapshot.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import {
  compileSnapshot,
  controlPlaneGatewaySpec,
  eventually,
  readyz,
  startControlPlaneGateway,
  type ControlPlaneGateway,
} from "../helpers/control-plane-gateway.ts";
import { getToken } from "../helpers/http.ts";
import { allManifests, type TestManifestOptions } from "../helpers/manifests.ts";
import { mockApiServerReviewer } from "../helpers/mock-token-reviewer.ts";

const GATEWAY_TOKEN = "projected-sa-token-of-the-gateways";
const REVOKER_TOKEN = "token-of-the-authorization-servers-revocation-hook";
const reviewer = mockApiServerReviewer({
  [GATEWAY_TOKEN]: { username: "system:serviceaccount:phantomgate:gateway" },
  [REVOKER_TOKEN]: { username: "system:serviceaccount:auth:revocation-hook", mayRevoke: true },
});
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

let as: DemoAuthServer;
let echo: { server: Server; port: number };
let manifests: TestManifestOptions;
let distributor: Distributor;
let registry: Registry;
let server: DistributionServer | undefined;
let port = 0;
let gateways: ControlPlaneGateway[] = [];
let snapshotA: Snapshot;
let snapshotB: Snapshot;
let snapshotC: Snapshot;

async function startServer(): Promise<void> {
  distributor = createDistributor({ logger });
  registry = new Registry();
  server = await startDistributionServer({
    host: "127.0.0.1",
    port,
    distributor,
    reviewer,
    audience: "phantomgate",
    allowedServiceAccounts: ["phantomgate:gateway"],
    logger,
    registry,
  });
  port = server.port;
}

async function callEcho(gateway: ControlPlaneGateway, token: string, path = "/echo/hello"): Promise<number> {
  const response = await request(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  await response.body.dump();
  return response.statusCode;
}

async function everyGatewayServes(revision: string): Promise<boolean> {
  const states = await Promise.all(gateways.map(readyz));
  return states.every((s) => s.status === 200 && s.body.revision === revision);
}

beforeAll(async () => {
  as = await startDemoAuthServer({ port: 0 });
  echo = await startEchoApi(0);
  manifests = { issuer: as.issuer, echoOrigin: `http://127.0.0.1:${echo.port}` };
  snapshotA = compileSnapshot(allManifests(manifests));
  snapshotB = compileSnapshot(allManifests({ ...manifests, maxBodyBytes: 1024 * 1024 }));
  snapshotC = compileSnapshot(allManifests({ ...manifests, requestTimeoutMs: 7_000 }));
  await startServer();
  const url = `http://127.0.0.1:${port}`;
  gateways = await Promise.all(
    ["gw-1", "gw-2", "gw-3"].map((name) =>
      startControlPlaneGateway(controlPlaneGatewaySpec(name, url, GATEWAY_TOKEN)),
    ),
  );
}, 60_000);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await server?.close();
  echo.server.close();
  await as.close();
  // The gateways' logs never carry a token they presented or were asked to revoke.
  for (const gateway of gateways) {
    expect(gateway.output()).not.toContain(GATEWAY_TOKEN);
  }
});

describe("control-plane mode with three gateway processes", () => {
  it("starts not ready without a snapshot, connected to the control plane", async () => {
    await eventually(() => distributor.fleet().connected === 3, 10_000, "three gateways connected");
    for (const gateway of gateways) {
      const { status, body, cacheControl } = await readyz(gateway);
      expect(status).toBe(503);
      expect(cacheControl).toBe("no-store");
      expect(body.controlPlane).toMatchObject({ state: "connected", revision: null });
      expect(body.controlPlane?.summary).toMatch(/^connected to .*; no snapshot yet$/);
    }
    expect(distributor.fleet()).toMatchObject({ revision: undefined, connected: 3, programmed: 0 });
  });

  it("publish → every gateway swaps the snapshot in, persists it and ACKs; the fleet view says so", async () => {
    distributor.publish(snapshotA);
    await eventually(() => distributor.fleet().programmed === 3, 10_000, "three ACKs");
    expect(await everyGatewayServes(snapshotA.revision)).toBe(true);
    const view = distributor.fleet();
    expect(view.gateways.map((g) => [g.name, g.connected, g.status, g.revision])).toEqual([
      ["gw-1", true, "ACK", snapshotA.revision],
      ["gw-2", true, "ACK", snapshotA.revision],
      ["gw-3", true, "ACK", snapshotA.revision],
    ]);
    const token = await getToken(as.tokenEndpoint, "read_invoice");
    for (const gateway of gateways) expect(await callEcho(gateway, token)).toBe(200);
    const file = join(gateways[0]!.spec.stateDir, LAST_KNOWN_GOOD_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const latency = await registry.getSingleMetricAsString("phantomgate_operator_ack_latency_seconds");
    expect(latency).toContain("phantomgate_operator_ack_latency_seconds_count 3");
  });

  it("converges on a new revision", async () => {
    distributor.publish(snapshotB);
    await eventually(
      () => distributor.fleet().programmed === 3 && distributor.fleet().revision === snapshotB.revision,
      10_000,
      "B programmed",
    );
    await eventually(() => everyGatewayServes(snapshotB.revision), 5_000, "B served");
  });

  it("NACKs an invalid snapshot with the reason and keeps serving the previous one", async () => {
    const invalid = {
      ...snapshotB,
      revision: "ffffffffffffffff",
      routes: snapshotB.routes.map((r, i) => (i === 0 ? { ...r, path: { type: "Regex", value: "/.*" } } : r)),
    } as unknown as Snapshot;
    distributor.publish(invalid);
    await eventually(
      () => distributor.fleet().gateways.every((g) => g.status === "NACK"),
      10_000,
      "three NACKs",
    );
    const view = distributor.fleet();
    expect(view).toMatchObject({ revision: "ffffffffffffffff", connected: 3, programmed: 0 });
    for (const gateway of view.gateways) {
      expect(gateway.revision).toBe(snapshotB.revision);
      expect(gateway.reason).toMatch(/^invalid snapshot: routes\.0\.path\.type/);
    }
    for (const gateway of gateways) {
      const { status, body } = await readyz(gateway);
      expect(status).toBe(200);
      expect(body.revision).toBe(snapshotB.revision);
      expect(body.problems[0]?.message).toMatch(/^snapshot ffffffffffffffff rejected: invalid snapshot/);
    }
    const token = await getToken(as.tokenEndpoint, "read_invoice");
    for (const gateway of gateways) expect(await callEcho(gateway, token)).toBe(200);
    // Back to the good revision: the gateways serve it already, nothing is resent, all count as programmed.
    distributor.publish(snapshotB);
    expect(distributor.fleet().programmed).toBe(3);
  });

  it("a revocation (by token or by fingerprint) evicts the cached token in every gateway", async () => {
    const byToken = await getToken(as.tokenEndpoint, "read_invoice");
    const byFingerprint = await getToken(as.tokenEndpoint, "read_invoice");
    for (const gateway of gateways) {
      expect(await callEcho(gateway, byToken)).toBe(200);
      expect(await callEcho(gateway, byFingerprint)).toBe(200);
    }
    // The authorization server revokes them; the gateways still hold the cached facts.
    for (const token of [byToken, byFingerprint]) {
      const response = await fetch(as.revocationEndpoint, {
        method: "POST",
        headers: {
          authorization: `Basic ${Buffer.from("gateway:gateway-secret").toString("base64")}`,
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ token }),
      });
      expect(response.status).toBe(200);
    }
    for (const gateway of gateways) expect(await callEcho(gateway, byToken)).toBe(200);

    // The revocation hook tells the operator; the operator tells every gateway.
    const response = await request(`http://127.0.0.1:${port}/v1/revocations`, {
      method: "POST",
      headers: { authorization: `Bearer ${REVOKER_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ tokens: [byToken], fingerprints: [fingerprintToken(byFingerprint)] }),
    });
    expect(response.statusCode).toBe(202);
    expect(await response.body.json()).toEqual({ revoked: 2, gateways: 3 });
    await eventually(
      async () => (await Promise.all(gateways.map((g) => callEcho(g, byToken)))).every((s) => s === 401),
      5_000,
      "revoked token refused everywhere",
    );
    for (const gateway of gateways) expect(await callEcho(gateway, byFingerprint)).toBe(401);
    for (const gateway of gateways) {
      // Counted as revocations (two tokens, each with its facts and the JWT made for the upstream), not as the
      // cache running out of room.
      const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
      expect(metrics).toMatch(/^phantomgate_token_cache_evictions_total\{reason="revoked"\} 4$/m);
      expect(metrics).toMatch(/^phantomgate_token_cache_evictions_total\{reason="capacity"\} 0$/m);
      expect(gateway.output()).not.toContain(byToken);
      expect(gateway.output()).not.toContain(byFingerprint);
    }
  });

  it("operator down → the gateways keep serving and say so in /readyz", async () => {
    await server?.close();
    server = undefined;
    await eventually(
      async () =>
        (await Promise.all(gateways.map(readyz))).every((r) => r.body.controlPlane?.state !== "connected"),
      10_000,
      "gateways notice",
    );
    const token = await getToken(as.tokenEndpoint, "read_invoice");
    for (const gateway of gateways) {
      const { status, body } = await readyz(gateway);
      expect(status).toBe(200);
      expect(body.revision).toBe(snapshotB.revision);
      expect(body.controlPlane?.summary).toMatch(
        /^not connected \((disconnected|connecting)\) since .*; serving revision [0-9a-f]{16} since/,
      );
      expect(await callEcho(gateway, token)).toBe(200);
    }
  });

  it("a gateway restarted while the operator is down serves its last-known-good snapshot", async () => {
    const restarted = gateways[2]!;
    expect(await restarted.stop()).toBe(0);
    gateways[2] = await startControlPlaneGateway(restarted.spec);
    const { status, body } = await readyz(gateways[2]);
    expect(status).toBe(200);
    expect(body.revision).toBe(snapshotB.revision);
    expect(body.controlPlane).toMatchObject({ servingFrom: "last-known-good", revision: snapshotB.revision });
    expect(body.controlPlane?.summary).toMatch(/serving last-known-good revision [0-9a-f]{16} since/);
    const token = await getToken(as.tokenEndpoint, "read_invoice");
    expect(await callEcho(gateways[2], token)).toBe(200);
  });

  it("operator back → the gateways reconnect and converge on its revision", async () => {
    await startServer();
    distributor.publish(snapshotC);
    // Reconnects are spread by full jitter up to 10 s.
    await eventually(() => distributor.fleet().programmed === 3, 30_000, "three gateways programmed on C");
    await eventually(() => everyGatewayServes(snapshotC.revision), 5_000, "C served");
    for (const gateway of gateways) {
      const { body } = await readyz(gateway);
      expect(body.controlPlane).toMatchObject({
        state: "connected",
        servingFrom: "control-plane",
        revision: snapshotC.revision,
      });
    }
    const token = await getToken(as.tokenEndpoint, "read_invoice");
    for (const gateway of gateways) expect(await callEcho(gateway, token)).toBe(200);
  }, 45_000);
});

describe("control-plane mode start-up errors", () => {
  it("exits 1 naming the state dir when it cannot be written", async () => {
    const spec = controlPlaneGatewaySpec("gw-broken", "http://127.0.0.1:9", GATEWAY_TOKEN);
    const blocked = { ...spec, stateDir: join(spec.tokenFile, "state") }; // under a regular file
    await expect(startControlPlaneGateway(blocked)).rejects.toThrow(
      /exited with 1[\s\S]*state directory .* is not writable/,
    );
  });

  it("exits 2 when given both --config and --control-plane", async () => {
    const spec = controlPlaneGatewaySpec("gw-both", "http://127.0.0.1:9", GATEWAY_TOKEN);
    await expect(
      startControlPlaneGateway({ ...spec, extraArgs: ["--config", spec.stateDir] }),
    ).rejects.toThrow(
      /exited with 2[\s\S]*give exactly one of --config DIR \(file mode\) or --control-plane URL/,
    );
  });
});
