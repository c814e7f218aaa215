// The status stage against an in-memory store and a recording API client (a stand-in for the timing of watch
// events, which a real server cannot be made to hold back; test/k8s/operator.test.ts covers the real one).
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { compile } from "../../src/compile/compile.ts";
import type { FleetView } from "../../src/operator/distribute/distributor.ts";
import type { KubeClient, KubeRequest, KubeStream } from "../../src/operator/kube/kube-client.ts";
import { createManualTimers } from "../../src/operator/kube/timers.ts";
import { ObjectStore } from "../../src/operator/source/object-store.ts";
import { startStatusWriter, type StatusWriter } from "../../src/operator/status/status-writer.ts";

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
      reconciler: {
        current: () => ({ result, specVersion: store.specVersion, compiledAtMs: 0 }),
        onCompiled: () => () => undefined,
      },
      fleet: { view: () => view, onChange: () => () => undefined },
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
});
