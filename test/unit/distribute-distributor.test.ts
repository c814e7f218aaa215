// The distributor's bookkeeping, driven through its stream contract with in-memory sinks: what is sent to whom,
// per-gateway ACK/NACK state, fleet counts, revocation fan-out and replay, ACK latency.
import { Registry, Counter, Histogram } from "prom-client";
import { describe, expect, it } from "vitest";
import {
  createDistributor,
  distributorInternals,
  mergeFleetViews,
  type Distributor,
  type FleetView,
} from "../../src/operator/distribute/distributor.ts";
import type { Snapshot } from "../../src/snapshot/snapshot.ts";
import { createManualClock, type ManualClock } from "../../src/tokens/clock.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";

const snap = (revision: string): Snapshot => ({ revision, authServers: [], routes: [] });
const R1 = "1111111111111111";
const R2 = "2222222222222222";
const IDENTITY = "system:serviceaccount:pg:gateway";

interface Sink {
  readonly lines: { type: string; snapshot?: Snapshot; fingerprints?: string[] }[];
  /** What write() was handed, as handed. */
  readonly raw: (string | Buffer)[];
  closed: boolean;
  buffered: number;
  write(line: string | Buffer): number;
  close(): void;
}

function sink(): Sink {
  const s: Sink = {
    lines: [],
    raw: [],
    closed: false,
    buffered: 0,
    write(line) {
      s.raw.push(line);
      s.lines.push(JSON.parse(line.toString()) as Sink["lines"][number]);
      return s.buffered;
    },
    close() {
      s.closed = true;
    },
  };
  return s;
}

function setup(options: { clock?: ManualClock } = {}): {
  distributor: Distributor;
  clock: ManualClock;
  registry: Registry;
  connect: (name: string, revision?: string, identity?: string) => { sink: Sink; detach: () => void };
  ack: (name: string, revision: string, status?: "ACK" | "NACK", reason?: string) => string;
} {
  const clock = options.clock ?? createManualClock();
  const distributor = createDistributor({ clock });
  const internals = distributorInternals(distributor);
  const registry = new Registry();
  internals.bindMetrics({
    ackLatency: new Histogram({ name: "ack", help: "h", buckets: [0.1, 1, 10], registers: [registry] }),
    revocations: new Counter({ name: "rev", help: "h", registers: [registry] }),
  });
  return {
    distributor,
    clock,
    registry,
    connect(name, revision, identity = IDENTITY) {
      const s = sink();
      const detach = internals.attach(name, identity, revision, s);
      return { sink: s, detach };
    },
    ack(name, revision, status = "ACK", reason) {
      return internals.recordAck(
        { gateway: name, revision, status, ...(reason === undefined ? {} : { reason }) },
        IDENTITY,
      );
    },
  };
}

const counts = (view: FleetView): [number, number] => [view.connected, view.programmed];

describe("distributor", () => {
  it("sends the current snapshot to a gateway on another revision, and only a confirmation to one already on it", () => {
    const { distributor, connect } = setup();
    distributor.publish(snap(R1));
    const behind = connect("gw-a", "0000000000000000");
    const fresh = connect("gw-b");
    const current = connect("gw-c", R1);
    expect(behind.sink.lines).toEqual([{ type: "snapshot", snapshot: snap(R1) }]);
    expect(fresh.sink.lines).toEqual([{ type: "snapshot", snapshot: snap(R1) }]);
    expect(current.sink.lines).toEqual([{ type: "current", revision: R1 }]);
    const view = distributor.fleet();
    expect(view.revision).toBe(R1);
    expect(counts(view)).toEqual([3, 1]);
    expect(view.gateways.map((g) => [g.name, g.status, g.revision])).toEqual([
      ["gw-a", "pending", "0000000000000000"],
      ["gw-b", "pending", undefined],
      ["gw-c", "ACK", R1],
    ]);
  });

  it("pushes each new revision to connected gateways once; republishing the same revision is a no-op", () => {
    const { distributor, connect, ack } = setup();
    const a = connect("gw-a");
    distributor.publish(snap(R1));
    distributor.publish(snap(R1));
    expect(a.sink.lines.map((l) => l.snapshot?.revision)).toEqual([R1]);
    ack("gw-a", R1);
    distributor.publish(snap(R2));
    expect(a.sink.lines.map((l) => l.snapshot?.revision)).toEqual([R1, R2]);
    expect(distributor.fleet().gateways[0]).toMatchObject({ status: "pending", revision: R1 });
    ack("gw-a", R2);
    expect(distributor.fleet().gateways[0]).toMatchObject({ status: "ACK", revision: R2 });
  });

  it("tracks a NACK with its reason while the gateway keeps its old revision", () => {
    const { distributor, connect, ack } = setup();
    connect("gw-a", R1);
    distributor.publish(snap(R1));
    distributor.publish(snap(R2));
    ack("gw-a", R2, "NACK", "invalid snapshot: routes.0.path: bad");
    const [gateway] = distributor.fleet().gateways;
    expect(gateway).toMatchObject({
      status: "NACK",
      reason: "invalid snapshot: routes.0.path: bad",
      revision: R1,
    });
    expect(counts(distributor.fleet())).toEqual([1, 0]);
    // Going back to the revision it serves makes it programmed again, without a resend.
    distributor.publish(snap(R1));
    expect(distributor.fleet().gateways[0]).toMatchObject({ status: "ACK", reason: undefined });
  });

  it("marks a disconnected gateway, keeps it in the view for a while, then forgets it", () => {
    const { distributor, connect, ack, clock } = setup();
    distributor.publish(snap(R1));
    const a = connect("gw-a");
    ack("gw-a", R1);
    expect(counts(distributor.fleet())).toEqual([1, 1]);
    clock.advance(1_000);
    a.detach();
    const [gone] = distributor.fleet().gateways;
    expect(gone).toMatchObject({ connected: false, status: "ACK", lastSeenMs: clock.now() });
    expect(counts(distributor.fleet())).toEqual([0, 0]);
    clock.advance(10 * 60_000 + 1);
    expect(distributor.fleet().gateways).toEqual([]);
  });

  it("lets the newest stream of a gateway win and closes the older one", () => {
    const { distributor, connect } = setup();
    const first = connect("gw-a");
    const second = connect("gw-a");
    expect(first.sink.closed).toBe(true);
    first.detach(); // the old stream's close arrives late: it must not disconnect the new one
    expect(distributor.fleet().gateways[0]?.connected).toBe(true);
    distributor.publish(snap(R1));
    expect(first.sink.lines).toEqual([]);
    expect(second.sink.lines).toHaveLength(1);
    second.detach();
    expect(distributor.fleet().gateways[0]?.connected).toBe(false);
  });

  it("refuses an ACK for a gateway that streams under another identity", () => {
    const { connect, ack } = setup();
    connect("gw-a", undefined, "system:serviceaccount:pg:other");
    expect(ack("gw-a", R1)).toBe("identity-mismatch");
  });

  it("fans revocations out to every connected gateway and replays recent ones to gateways that connect later", () => {
    const { distributor, connect, clock, registry } = setup();
    const a = connect("gw-a");
    const b = connect("gw-b");
    const gone = connect("gw-c");
    gone.detach();
    const fingerprints = [fingerprintToken("t1"), fingerprintToken("t2"), fingerprintToken("t1")];
    expect(distributor.revoke(fingerprints)).toBe(2);
    for (const s of [a.sink, b.sink]) {
      expect(s.lines).toEqual([
        { type: "revoke", fingerprints: [fingerprintToken("t1"), fingerprintToken("t2")] },
      ]);
    }
    expect(distributor.revoke([])).toBe(0);
    clock.advance(60_000);
    const late = connect("gw-d");
    expect(late.sink.lines).toEqual([
      { type: "revoke", fingerprints: [fingerprintToken("t1"), fingerprintToken("t2")] },
    ]);
    clock.advance(15 * 60_000);
    expect(connect("gw-e").sink.lines).toEqual([]);
    return registry.getSingleMetricAsString("rev").then((text) => expect(text).toContain("rev 2"));
  });

  it("hands local revocations to the recorder and fans out other replicas' ones without recording them again", async () => {
    const { distributor, connect, clock } = setup();
    const internals = distributorInternals(distributor);
    const recorded: [string[], number][] = [];
    internals.setRecorder({
      record(fingerprints, atMs) {
        recorded.push([[...fingerprints], atMs]);
        return Promise.resolve(true);
      },
    });
    const a = connect("gw-a");
    const [t1, t2, t3] = [fingerprintToken("t1"), fingerprintToken("t2"), fingerprintToken("t3")];
    const local = internals.revokeLocal([t1, t1]);
    expect(local).toMatchObject({ revoked: 1, gateways: 1 });
    expect(await local.recorded).toBe(true);
    expect(recorded).toEqual([[[t1], clock.now()]]);
    // From another replica: t1 is known here already, t2 and t3 are new; nothing goes to the recorder.
    clock.advance(1_000);
    expect(internals.revokeRelayed([t1, t2, t3, t2])).toBe(2);
    expect(internals.revokeRelayed([t2])).toBe(0);
    expect(recorded).toHaveLength(1);
    expect(a.sink.lines).toEqual([
      { type: "revoke", fingerprints: [t1] },
      { type: "revoke", fingerprints: [t2, t3] },
    ]);
    // Replayed like local ones, for the retention counted from when this replica learnt of them.
    clock.advance(15 * 60_000 - 500); // t1 (revoked here 1 s earlier) has expired
    expect(connect("gw-b").sink.lines).toEqual([{ type: "revoke", fingerprints: [t2, t3] }]);
    clock.advance(1_000);
    expect(connect("gw-c").sink.lines).toEqual([]);
    // Without a recorder (a lone replica) a revocation counts as recorded at once.
    internals.setRecorder(undefined);
    expect(await internals.revokeLocal([t1]).recorded).toBe(true);
    expect(recorded).toHaveLength(1);
  });

  it("tells every gateway to drop its cached token facts when revocations were missed, and those connecting within the replay window too", () => {
    const { connect, clock, distributor } = setup();
    const internals = distributorInternals(distributor);
    const a = connect("gw-a");
    const gone = connect("gw-b");
    gone.detach();
    const t1 = fingerprintToken("t1");
    internals.revokeRelayed([t1]);
    expect(internals.revocationsMissed()).toBe(1);
    expect(a.sink.lines).toEqual([{ type: "revoke", fingerprints: [t1] }, { type: "forget-tokens" }]);
    expect(gone.sink.lines).toEqual([]);
    // A gateway connecting later gets the replay and, since the replay is incomplete, the same instruction.
    clock.advance(14 * 60_000);
    expect(connect("gw-b").sink.lines).toEqual([
      { type: "revoke", fingerprints: [t1] },
      { type: "forget-tokens" },
    ]);
    // Once the window has passed, everything missed has expired too.
    clock.advance(60_000);
    expect(connect("gw-c").sink.lines).toEqual([]);
  });

  it("counts the replay as incomplete when more revocations came in than it retains", () => {
    const clock = createManualClock();
    const distributor = createDistributor({ clock, maxRetainedRevocations: 3 });
    const internals = distributorInternals(distributor);
    const connect = (name: string): Sink => {
      const s = sink();
      internals.attach(name, IDENTITY, undefined, s);
      return s;
    };
    const fps = ["a", "b", "c"].map((t) => fingerprintToken(t));
    distributor.revoke(fps);
    expect(connect("gw-a").lines).toEqual([{ type: "revoke", fingerprints: fps }]);
    // A fourth within the window pushes the first out of the replay: a later gateway cannot be told about it.
    clock.advance(1_000);
    const d = fingerprintToken("d");
    distributor.revoke([d]);
    expect(connect("gw-b").lines).toEqual([
      { type: "revoke", fingerprints: [...fps.slice(1), d] },
      { type: "forget-tokens" },
    ]);
    // Expiry alone is not a loss.
    clock.advance(15 * 60_000);
    distributor.revoke([fingerprintToken("e")]);
    expect(connect("gw-c").lines).toEqual([{ type: "revoke", fingerprints: [fingerprintToken("e")] }]);
  });

  it("times ACKs from the moment the revision was sent", async () => {
    const { distributor, connect, ack, clock, registry } = setup();
    connect("gw-a");
    distributor.publish(snap(R1));
    clock.advance(50);
    ack("gw-a", R1);
    clock.advance(5_000);
    connect("gw-b"); // connects late: timed from its own send, not from the publish
    clock.advance(2_000);
    ack("gw-b", R1);
    ack("gw-b", R1); // a duplicate ACK is not timed twice
    const text = await registry.getSingleMetricAsString("ack");
    expect(text).toContain("ack_count 2");
    expect(text).toContain("ack_sum 2.05");
    expect(text).toContain('ack_bucket{le="0.1"} 1');
  });

  it("encodes a snapshot once: every stream queues the same bytes, not a copy of its own", () => {
    const { distributor, connect } = setup();
    const streams = ["gw-a", "gw-b", "gw-c"].map((name) => connect(name).sink);
    distributor.publish(snap(R1));
    const [first, ...others] = streams.map((stream) => stream.raw.at(-1));
    expect(Buffer.isBuffer(first)).toBe(true);
    for (const other of others) expect(other).toBe(first);
    // A gateway connecting later gets the same bytes too.
    expect(connect("gw-d").sink.raw.at(-1)).toBe(first);
  });

  it("drops a stream that falls too far behind", () => {
    const distributor = createDistributor({ maxBufferedBytes: 1_000 });
    const internals = distributorInternals(distributor);
    const slow = sink();
    internals.attach("gw-a", IDENTITY, undefined, slow);
    slow.buffered = 5_000;
    distributor.publish(snap(R1));
    expect(slow.closed).toBe(true);
  });

  it("tells listeners about every change and stops when unsubscribed", () => {
    const { distributor, connect, ack } = setup();
    let calls = 0;
    const off = distributor.onFleetChange(() => {
      calls += 1;
      throw new Error("listener bugs do not break the distributor");
    });
    const a = connect("gw-a");
    distributor.publish(snap(R1));
    ack("gw-a", R1);
    a.detach();
    expect(calls).toBe(4);
    off();
    connect("gw-b");
    expect(calls).toBe(4);
  });

  it("refuses a distributor it did not make", () => {
    const foreign: Distributor = {
      publish() {},
      revoke: () => 0,
      fleet: () => createDistributor().fleet(),
      onFleetChange: () => () => {},
    };
    expect(() => distributorInternals(foreign)).toThrow(TypeError);
  });
});

describe("mergeFleetViews", () => {
  it("merges replicas by gateway name, connected and newest first, and recounts for the revision", () => {
    const replicaA: FleetView = {
      revision: R2,
      connected: 1,
      programmed: 1,
      gateways: [
        { name: "gw-1", connected: true, revision: R2, status: "ACK", reason: undefined, lastSeenMs: 10 },
        {
          name: "gw-2",
          connected: false,
          revision: R1,
          status: "pending",
          reason: undefined,
          lastSeenMs: 50,
        },
      ],
    };
    const replicaB: FleetView = {
      revision: R1, // has not published R2 yet
      connected: 1,
      programmed: 1,
      gateways: [
        { name: "gw-2", connected: true, revision: R1, status: "ACK", reason: undefined, lastSeenMs: 20 },
      ],
    };
    const merged = mergeFleetViews(R2, [replicaA, replicaB]);
    expect(merged.gateways.map((g) => [g.name, g.connected, g.status])).toEqual([
      ["gw-1", true, "ACK"],
      ["gw-2", true, "pending"],
    ]);
    expect(counts(merged)).toEqual([2, 1]);
  });
  it("keeps what a gateway serves when its NACK reached a replica that never had its stream", () => {
    // The streaming replica knows gw-1 serves R1; the other one only heard the NACK of R2, and knows no revision.
    const streaming: FleetView = {
      revision: R2,
      connected: 1,
      programmed: 0,
      gateways: [
        {
          name: "gw-1",
          connected: true,
          revision: R1,
          status: "pending",
          reason: undefined,
          lastSeenMs: 900,
        },
      ],
    };
    const nackOnly: FleetView = {
      revision: R2,
      connected: 0,
      programmed: 0,
      gateways: [
        {
          name: "gw-1",
          connected: false,
          revision: undefined,
          status: "NACK",
          reason: "bad",
          lastSeenMs: 950,
        },
      ],
    };
    for (const views of [
      [streaming, nackOnly],
      [nackOnly, streaming],
    ]) {
      const merged = mergeFleetViews(R2, views);
      // The NACK is reported, and the gateway still counts as serving R1 (objects unchanged since stay programmed).
      expect(merged.gateways.map((g) => [g.name, g.connected, g.status, g.revision, g.reason])).toEqual([
        ["gw-1", true, "NACK", R1, "bad"],
      ]);
    }
  });

  it("counts an ACK that reached another replica than the one the gateway streams from", () => {
    const streaming: FleetView = {
      revision: R2,
      connected: 2,
      programmed: 0,
      gateways: [
        {
          name: "gw-1",
          connected: true,
          revision: R1,
          status: "pending",
          reason: undefined,
          lastSeenMs: 900,
        },
        {
          name: "gw-2",
          connected: true,
          revision: R1,
          status: "pending",
          reason: undefined,
          lastSeenMs: 900,
        },
      ],
    };
    // The other replica only saw the ACK (and a NACK) POSTed through the Service; its clock is behind.
    const acked: FleetView = {
      revision: R2,
      connected: 0,
      programmed: 0,
      gateways: [
        { name: "gw-1", connected: false, revision: R2, status: "ACK", reason: undefined, lastSeenMs: 100 },
        { name: "gw-2", connected: false, revision: R1, status: "NACK", reason: "bad", lastSeenMs: 100 },
      ],
    };
    for (const views of [
      [streaming, acked],
      [acked, streaming],
    ]) {
      const merged = mergeFleetViews(R2, views);
      expect(merged.gateways.map((g) => [g.name, g.connected, g.status, g.revision, g.reason])).toEqual([
        ["gw-1", true, "ACK", R2, undefined],
        ["gw-2", true, "NACK", R1, "bad"],
      ]);
      expect(counts(merged)).toEqual([2, 1]);
    }
    // A disconnected gateway stays disconnected, whatever it ACKed.
    expect(counts(mergeFleetViews(R2, [acked]))).toEqual([0, 0]);
  });
});
