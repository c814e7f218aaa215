// Stream liveness end to end without Kubernetes: real gateway processes stream from a real distribution server
// (a mock TokenReviewer stands in for the API server) with a short liveness timeout. A gateway frozen with
// SIGSTOP sends no more heartbeats and keeps its socket open, exactly like a gateway on a node that died: the
// operator must drop it from the fleet view within the timeout, not when TCP gives up. SIGCONT brings it back.
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  createDistributor,
  startDistributionServer,
  type DistributionServer,
  type Distributor,
} from "../../src/operator/distribute/index.ts";
import type { Snapshot } from "../../src/snapshot/snapshot.ts";
import {
  compileSnapshot,
  controlPlaneGatewaySpec,
  eventually,
  readyz,
  startControlPlaneGateway,
  type ControlPlaneGateway,
} from "../helpers/control-plane-gateway.ts";
import { allManifests } from "../helpers/manifests.ts";
import { captureLogs } from "../helpers/logs.ts";
import { mockApiServerReviewer } from "../helpers/mock-token-reviewer.ts";

const LIVENESS_MS = 1_500;
const GATEWAY_TOKEN = "projected-sa-token-of-the-liveness-gateways";
const reviewer = mockApiServerReviewer({
  [GATEWAY_TOKEN]: { username: "system:serviceaccount:phantomgate:gateway" },
});
const { logger, text: logText } = captureLogs("info");

let distributor: Distributor;
let registry: Registry;
let server: DistributionServer;
let snapshot: Snapshot;
let steady: ControlPlaneGateway;
let frozen: ControlPlaneGateway;
/** Every gateway started, for the clean-up. */
const started: ControlPlaneGateway[] = [];
/** Processes this file stopped with SIGSTOP and has not continued yet. */
const stopped = new Set<number>();

function freeze(gateway: ControlPlaneGateway): void {
  const pid = gateway.child.pid;
  if (pid === undefined) throw new Error("gateway has no pid");
  stopped.add(pid);
  process.kill(pid, "SIGSTOP");
}

function thaw(pid: number): void {
  stopped.delete(pid);
  try {
    process.kill(pid, "SIGCONT");
  } catch {
    // already gone
  }
}

// A failing test, or a worker that dies, must never leave a stopped process behind.
const killStopped = (): void => {
  for (const pid of stopped) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
};
process.once("exit", killStopped);

const stateOf = (name: string) => distributor.fleet().gateways.find((g) => g.name === name);

beforeAll(async () => {
  distributor = createDistributor({ logger });
  registry = new Registry();
  server = await startDistributionServer({
    host: "127.0.0.1",
    port: 0,
    distributor,
    reviewer,
    audience: "phantomgate",
    allowedServiceAccounts: ["phantomgate:gateway"],
    logger,
    registry,
    streamLivenessTimeoutMs: LIVENESS_MS,
  });
  snapshot = compileSnapshot(
    allManifests({ issuer: "http://127.0.0.1:9", echoOrigin: "http://127.0.0.1:9" }),
  );
  distributor.publish(snapshot);
  const url = `http://127.0.0.1:${server.port}`;
  const start = async (name: string): Promise<ControlPlaneGateway> => {
    const gateway = await startControlPlaneGateway(controlPlaneGatewaySpec(name, url, GATEWAY_TOKEN));
    started.push(gateway);
    return gateway;
  };
  [steady, frozen] = await Promise.all([start("gw-steady"), start("gw-frozen")]);
}, 60_000);

afterEach(() => {
  for (const pid of [...stopped]) thaw(pid);
});

afterAll(async () => {
  for (const pid of [...stopped]) thaw(pid);
  await Promise.all(started.map((g) => g.stop()));
  await server.close();
  process.off("exit", killStopped);
  expect(logText()).not.toContain(GATEWAY_TOKEN);
});

describe("stream liveness with real gateway processes", () => {
  it("both gateways connect, ACK and keep their streams across many liveness timeouts", async () => {
    await eventually(() => distributor.fleet().programmed === 2, 15_000, "two gateways programmed");
    let changes = 0;
    const unsubscribe = distributor.onFleetChange(() => (changes += 1));
    try {
      await new Promise((resolve) => setTimeout(resolve, 3 * LIVENESS_MS));
      expect(changes).toBe(0);
      expect(distributor.fleet()).toMatchObject({ connected: 2, programmed: 2 });
    } finally {
      unsubscribe();
    }
    for (const gateway of [steady, frozen]) {
      expect((await readyz(gateway)).body.controlPlane).toMatchObject({ state: "connected" });
    }
  });

  it("a frozen gateway (SIGSTOP) counts as disconnected within the liveness timeout; SIGCONT brings it back", async () => {
    const pid = frozen.child.pid ?? 0;
    try {
      freeze(frozen);
      const frozenAt = Date.now();
      await eventually(
        () => stateOf("gw-frozen")?.connected === false,
        10_000,
        "frozen gateway disconnected",
      );
      const tookMs = Date.now() - frozenAt;
      expect(tookMs).toBeLessThan(LIVENESS_MS + 3_000);
      expect(distributor.fleet()).toMatchObject({ connected: 1, programmed: 1 });
      expect(stateOf("gw-steady")).toMatchObject({ connected: true, status: "ACK" });
      expect(await registry.getSingleMetricAsString("phantomgate_operator_connected_gateways")).toContain(
        "phantomgate_operator_connected_gateways 1",
      );
      expect(logText()).toMatch(/"gateway":"gw-frozen".*"msg":"no heartbeat from the gateway for 1500 ms/);

      thaw(pid);
      await eventually(
        () => stateOf("gw-frozen")?.connected === true && stateOf("gw-frozen")?.status === "ACK",
        15_000,
        "thawed gateway connected and serving the current revision again",
      );
      expect(distributor.fleet()).toMatchObject({ connected: 2, programmed: 2 });
      expect(stateOf("gw-frozen")?.revision).toBe(snapshot.revision);
      const { body } = await readyz(frozen);
      expect(body.controlPlane).toMatchObject({ state: "connected", revision: snapshot.revision });
    } finally {
      thaw(pid);
    }
  }, 45_000);
});
