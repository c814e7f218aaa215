// The status stage against an in-memory store and a recording API client (a stand-in for the timing of watch
// events, which a real server cannot be made to hold back; test/k8s/operator.test.ts covers the real one).
import pino from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { compile } from "../../src/compile/compile.ts";
import type { FleetView } from "../../src/operator/distribute/distributor.ts";
import {
  KubeApiError,
  type KubeClient,
  type KubeRequest,
  type KubeStream,
} from "../../src/operator/kube/kube-client.ts";
import { createManualTimers } from "../../src/operator/kube/timers.ts";
import { createOperatorMetrics } from "../../src/operator/metrics.ts";
import { ObjectStore } from "../../src/operator/source/object-store.ts";
import { computeStatus } from "../../src/operator/status/conditions.ts";
import {
  startStatusWriter,
  statusPatch,
  type StatusWriter,
} from "../../src/operator/status/status-writer.ts";
import { fixedFleet, fixedReconciler, noEvents } from "../helpers/status-writer.ts";

class RecordingClient implements KubeClient {
  readonly server = "https://recording";
  readonly patches: KubeRequest[] = [];
  request<T>(call: KubeRequest): Promise<T> {
    this.patches.push(call);
    return Promise.resolve({ status: { fleet: {} } } as T);
  }
  stream(): Promise<KubeStream> {
    return Promise.reject(new Error("no watches here"));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const badRoute = {
  apiVersion: "phantomgate.dev/v1alpha1",
  kind: "ApiRoute",
  metadata: { name: "typo", namespace: "default", uid: "u-1", generation: 1, resourceVersion: "7" },
  spec: {
    authServerRef: { name: "missing" },
    rules: [
      {
        matches: [{ path: { value: "/x" } }],
        authentication: { mode: "phantom" },
        backendRefs: [{ url: "http://backend" }],
      },
    ],
  },
};

let writer: StatusWriter | undefined;
afterEach(async () => {
  await writer?.close();
  writer = undefined;
});

describe("status writer", () => {
  it("records one Warning per change of Accepted, also when it writes again before its first write came back", async () => {
    const store = new ObjectStore();
    store.upsert({
      kind: "ApiRoute",
      namespace: "default",
      name: "typo",
      uid: "u-1",
      generation: 1,
      resourceVersion: "7",
      object: badRoute,
      status: undefined,
    });
    const result = compile({ objects: store.sourceObjects() });
    expect(result.perObjectResults[0]?.accepted).toBe(false);
    let view: FleetView = { revision: "r1", gateways: [], connected: 0, programmed: 0 };
    const client = new RecordingClient();
    const events: string[] = [];
    writer = startStatusWriter({
      client,
      store,
      reconciler: fixedReconciler(store, result),
      fleet: fixedFleet(() => view),
      isLeader: () => true,
      recorder: {
        record: (_subject, event) => {
          events.push(`${event.type} ${event.reason}`);
          return Promise.resolve();
        },
      },
      logger: pino({ level: "silent" }),
      timers: createManualTimers(),
    });
    writer.trigger();
    await writer.flush();
    expect(client.patches).toHaveLength(1);
    expect(events).toEqual(["Warning UnknownAuthServer"]);

    // The fleet changes before the watch brings the first write back: the store still shows no status.
    view = {
      revision: "r1",
      gateways: [
        { name: "gw", connected: true, revision: "r1", status: "ACK", reason: undefined, lastSeenMs: 0 },
      ],
      connected: 1,
      programmed: 1,
    };
    writer.trigger();
    await writer.flush();
    expect(client.patches).toHaveLength(2);
    expect(events).toEqual(["Warning UnknownAuthServer"]);
  });

  it("makes a JSON Patch that tests the uid first and replaces only its own fields of an existing status", () => {
    const desired = computeStatus({
      result: { accepted: true, reason: "Accepted", messages: [], generation: 3 },
      programmed: { counts: { programmed: 0, gateways: 0 }, rejections: [] },
      existing: undefined,
      nowIso: "2026-12-01T00:00:00Z",
    });
    expect(statusPatch("u-1", undefined, desired)).toEqual([
      { op: "test", path: "/metadata/uid", value: "u-1" },
      { op: "add", path: "/status", value: desired },
    ]);
    expect(statusPatch("u-1", { other: "kept" }, desired)).toEqual([
      { op: "test", path: "/metadata/uid", value: "u-1" },
      { op: "add", path: "/status/observedGeneration", value: 3 },
      { op: "add", path: "/status/conditions", value: desired.conditions },
      { op: "add", path: "/status/fleet", value: desired.fleet },
    ]);
    expect(statusPatch(undefined, null, desired)).toEqual([{ op: "add", path: "/status", value: desired }]);
  });

  for (const [uidNow, outcome] of [
    ["u-2", "conflict"],
    [undefined, "conflict"],
    ["u-1", "error"],
  ] as const) {
    it(`counts a refused patch as ${outcome} when the object's uid is now ${uidNow ?? "gone"}`, async () => {
      const store = new ObjectStore();
      store.upsert({
        kind: "ApiRoute",
        namespace: "default",
        name: "typo",
        uid: "u-1",
        generation: 1,
        resourceVersion: "7",
        object: badRoute,
        status: undefined,
      });
      const result = compile({ objects: store.sourceObjects() });
      const calls: string[] = [];
      const client: KubeClient = {
        server: "https://refusing",
        request<T>(call: KubeRequest): Promise<T> {
          calls.push(`${call.method} ${call.path}`);
          if (call.method === "PATCH")
            return Promise.reject(
              new KubeApiError("PG_ERR_KUBE_STATUS", "refused", { statusCode: 422, reason: "Invalid" }),
            );
          if (uidNow === undefined)
            return Promise.reject(
              new KubeApiError("PG_ERR_KUBE_STATUS", "not found", { statusCode: 404, reason: "NotFound" }),
            );
          return Promise.resolve({ metadata: { uid: uidNow } } as T);
        },
        stream: () => Promise.reject(new Error("no watches here")),
        close: () => Promise.resolve(),
      };
      const registry = new Registry();
      const metrics = createOperatorMetrics(registry);
      const warnings: string[] = [];
      const logger = pino(
        { level: "warn" },
        { write: (line: string) => warnings.push((JSON.parse(line) as { msg: string }).msg) },
      );
      writer = startStatusWriter({
        client,
        store,
        reconciler: fixedReconciler(store, result),
        fleet: fixedFleet(),
        isLeader: () => true,
        recorder: noEvents,
        logger,
        metrics,
        timers: createManualTimers(),
      });
      writer.trigger();
      await writer.flush();
      expect(calls).toEqual([
        "PATCH /apis/phantomgate.dev/v1alpha1/namespaces/default/apiroutes/typo/status",
        "GET /apis/phantomgate.dev/v1alpha1/namespaces/default/apiroutes/typo/status",
      ]);
      const counted = await metrics.statusWrites.get();
      expect(counted.values.map((v) => [v.labels.result, v.value])).toEqual([[outcome, 1]]);
      expect(warnings).toEqual(outcome === "error" ? ["status write failed"] : []);
    });
  }
});
