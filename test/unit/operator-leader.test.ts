// Lease election on manual time against an in-memory Lease API that keeps resourceVersions like the API
// server (a stand-in: partitions and exact timing cannot be had from a real server; test/k8s/operator.test.ts
// kills a real leader). The property that matters: two replicas never lead at once.
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { KubeApiError, type KubeClient, type KubeRequest } from "../../src/operator/kube/kube-client.ts";
import { createManualTimers, type ManualTimers } from "../../src/operator/kube/timers.ts";
import { startLeaderElection, type LeaderElector } from "../../src/operator/leader/lease-elector.ts";

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion: string };
  spec: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

/** One Lease, with optimistic concurrency on resourceVersion. */
class LeaseApi {
  lease: Lease | undefined;
  #version = 0;
  clientFor(isPartitioned: () => boolean, isHung: () => boolean = () => false): KubeClient {
    return {
      server: "https://leases",
      request: <T>(call: KubeRequest): Promise<T> => {
        // A request that gets no answer at all (the client's own timeout aside).
        if (isHung()) {
          return new Promise<T>((_resolve, reject) =>
            call.signal?.addEventListener("abort", () => reject(new Error("aborted"))),
          );
        }
        if (isPartitioned()) return Promise.reject(new KubeApiError("PG_ERR_KUBE_NETWORK", "ETIMEDOUT"));
        return Promise.resolve(this.#handle(call) as T);
      },
      stream: () => Promise.reject(new Error("not used")),
      close: () => Promise.resolve(),
    };
  }
  #handle(call: KubeRequest): unknown {
    const status = (statusCode: number) =>
      new KubeApiError("PG_ERR_KUBE_STATUS", `HTTP ${statusCode}`, { statusCode });
    const body = structuredClone(call.body) as Lease | undefined;
    switch (call.method) {
      case "GET":
        if (this.lease === undefined) throw status(404);
        return structuredClone(this.lease);
      case "POST":
        if (this.lease !== undefined || body === undefined) throw status(409);
        this.lease = { ...body, metadata: { ...body.metadata, resourceVersion: String(++this.#version) } };
        return structuredClone(this.lease);
      case "PUT":
        if (this.lease === undefined || body === undefined) throw status(404);
        if (body.metadata.resourceVersion !== this.lease.metadata.resourceVersion) throw status(409);
        this.lease = { ...body, metadata: { ...body.metadata, resourceVersion: String(++this.#version) } };
        return structuredClone(this.lease);
      default:
        throw status(405);
    }
  }
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

const logger = pino({ level: "silent" });
const electors: LeaderElector[] = [];
afterEach(async () => {
  for (const elector of electors.splice(0)) await elector.stop();
});

function elect(
  api: LeaseApi,
  timers: ManualTimers,
  identity: string,
  partitioned: () => boolean = () => false,
  hung: () => boolean = () => false,
): LeaderElector {
  const elector = startLeaderElection({
    client: api.clientFor(partitioned, hung),
    namespace: "pg",
    name: "phantomgate-operator",
    identity,
    leaseDurationMs: 10_000,
    renewIntervalMs: 2_000,
    logger,
    clock: timers,
    timers,
    random: () => 0.5,
  });
  electors.push(elector);
  return elector;
}

/** Advances time in small steps, checking that never both lead. */
async function run(
  timers: ManualTimers,
  ms: number,
  replicas: LeaderElector[],
  onStep?: () => void,
): Promise<void> {
  for (let elapsed = 0; elapsed < ms; elapsed += 100) {
    timers.advance(100);
    await settle();
    expect(replicas.filter((replica) => replica.isLeader()).length).toBeLessThanOrEqual(1);
    onStep?.();
  }
}

describe("lease election", () => {
  it("elects exactly one of two replicas, which keeps renewing", async () => {
    const api = new LeaseApi();
    const timers = createManualTimers();
    const a = elect(api, timers, "a");
    await settle();
    const b = elect(api, timers, "b");
    await run(timers, 30_000, [a, b]);
    expect(a.isLeader()).toBe(true);
    expect(b.isLeader()).toBe(false);
    expect(b.holder()).toBe("a");
    expect(api.lease?.spec).toMatchObject({
      holderIdentity: "a",
      leaseDurationSeconds: 10,
      leaseTransitions: 0,
    });
  });

  /**
   * a leads, then `fault` cuts it off from the Lease API; returns when a stopped leading and b started, within 20 s
   * of the cut (never both at once).
   */
  async function handover(fault: "partitioned" | "hung") {
    const api = new LeaseApi();
    const timers = createManualTimers();
    let cut = false;
    const a =
      fault === "partitioned"
        ? elect(api, timers, "a", () => cut)
        : elect(api, timers, "a", undefined, () => cut);
    await settle();
    const b = elect(api, timers, "b");
    await run(timers, 5_000, [a, b]);
    expect(a.isLeader()).toBe(true);
    const cutAt = timers.now();
    cut = true;
    let aStoppedAt: number | undefined;
    let bStartedAt: number | undefined;
    await run(timers, 20_000, [a, b], () => {
      if (!a.isLeader()) aStoppedAt ??= timers.now();
      if (b.isLeader()) bStartedAt ??= timers.now();
    });
    if (aStoppedAt === undefined || bStartedAt === undefined) throw new Error("no handover");
    expect(aStoppedAt).toBeLessThan(bStartedAt);
    const heal = (): void => {
      cut = false;
    };
    return { api, timers, a, b, cutAt, aStoppedAt, bStartedAt, heal };
  }

  it("a partitioned leader steps down before the other takes over, which happens within the lease duration", async () => {
    const { api, timers, a, b, cutAt, bStartedAt, heal } = await handover("partitioned");
    // a renewed at most 2 s before the cut; b waits 10 s from the last change it saw, plus one retry (2.2 s).
    expect(bStartedAt - cutAt).toBeLessThanOrEqual(10_000 + 2_200 + 100);
    expect(api.lease?.spec).toMatchObject({ holderIdentity: "b", leaseTransitions: 1 });
    // Healed, a sees b holding it and stays a follower.
    heal();
    await run(timers, 10_000, [a, b]);
    expect(a.isLeader()).toBe(false);
    expect(a.holder()).toBe("b");
  });

  it("a leader whose renewal hangs stops leading at its renew deadline, before the other takes over", async () => {
    const { cutAt, aStoppedAt } = await handover("hung");
    // a's last renewal started at most 2 s before the cut; its deadline is two thirds of the lease duration.
    expect(aStoppedAt - cutAt).toBeLessThanOrEqual(6_667 + 100);
  });

  it("stop() hands the Lease back, so the other replica leads within one retry period", async () => {
    const api = new LeaseApi();
    const timers = createManualTimers();
    const a = elect(api, timers, "a");
    await settle();
    const b = elect(api, timers, "b");
    await run(timers, 3_000, [a, b]);
    expect(a.isLeader()).toBe(true);
    await a.stop();
    expect(api.lease?.spec.holderIdentity).toBe("");
    const stoppedAt = timers.now();
    let bStartedAt: number | undefined;
    await run(timers, 5_000, [a, b], () => {
      if (b.isLeader()) bStartedAt ??= timers.now();
    });
    expect(bStartedAt).toBeDefined();
    expect((bStartedAt ?? Infinity) - stoppedAt).toBeLessThanOrEqual(2_200 + 100);
  });
});
