// The gateway's control-plane source in-process, over real sockets: against the real distribution server (with
// a mock TokenReviewer standing in for the API server) and against bare servers that misbehave on purpose
// (stalled streams, dropped streams, refusals) to pin reconnects, the stall watchdog, token re-reading and the
// heartbeats the gateway sends in the stream's request body.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { Registry } from "prom-client";
import { request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import {
  startControlPlaneSource,
  type ControlPlaneSource,
} from "../../src/gateway/sources/control-plane-source.ts";
import { loadLastKnownGood } from "../../src/gateway/state/last-known-good.ts";
import { REVOCATION_REPLAY_MS, STREAM_PATH } from "../../src/operator/distribute/protocol.ts";
import { createManualClock, type Clock } from "../../src/tokens/clock.ts";
import { distributorInternals } from "../../src/operator/distribute/distributor.ts";
import {
  createDistributor,
  startDistributionServer,
  type DistributionServer,
} from "../../src/operator/distribute/index.ts";
import type { Snapshot } from "../../src/snapshot/snapshot.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import { compileSnapshot, eventually } from "../helpers/control-plane-gateway.ts";
import { allManifests } from "../helpers/manifests.ts";
import { mockApiServerReviewer } from "../helpers/mock-token-reviewer.ts";

const logger = pino({ level: "silent" });
const snapshotA = compileSnapshot(
  allManifests({ issuer: "http://127.0.0.1:9000", echoOrigin: "http://127.0.0.1:9101" }),
);
const snapshotB = compileSnapshot(
  allManifests({ issuer: "http://127.0.0.1:9000", echoOrigin: "http://127.0.0.1:9102" }),
);
const GATEWAY_TOKEN = "gateway-token-1";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tokenFile(token: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "phantomgate-token-")), "token");
  writeFileSync(file, token);
  return file;
}

function stateDir(): string {
  return join(mkdtempSync(join(tmpdir(), "phantomgate-state-")), "state");
}

interface Recorder {
  applied: Snapshot[];
  revoked: string[][];
  /** Calls of forgetTokens. */
  forgotten: number;
}

async function startSource(
  url: string,
  options: {
    token?: string;
    tokenFile?: string;
    stateDir?: string;
    stallTimeoutMs?: number;
    caFile?: string;
    name?: string;
    ackRefreshMs?: number;
    random?: () => number;
    clock?: Clock;
    backoff?: { baseMs: number; capMs: number };
    saveSnapshot?: (snapshot: Snapshot) => Promise<void>;
    saveWaitMs?: number;
  } = {},
): Promise<{ source: ControlPlaneSource; seen: Recorder; stateDir: string }> {
  const seen: Recorder = { applied: [], revoked: [], forgotten: 0 };
  const dir = options.stateDir ?? stateDir();
  const source = await startControlPlaneSource(
    {
      url,
      tokenFile: options.tokenFile ?? tokenFile(options.token ?? GATEWAY_TOKEN),
      gatewayName: options.name ?? "gw-test",
      stateDir: dir,
      registry: new Registry(),
      backoff: options.backoff ?? { baseMs: 20, capMs: 50 },
      ...(options.stallTimeoutMs === undefined ? {} : { stallTimeoutMs: options.stallTimeoutMs }),
      ...(options.caFile === undefined ? {} : { caFile: options.caFile }),
      ...(options.ackRefreshMs === undefined ? {} : { ackRefreshMs: options.ackRefreshMs }),
      ...(options.random === undefined ? {} : { random: options.random }),
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      ...(options.saveSnapshot === undefined ? {} : { saveSnapshot: options.saveSnapshot }),
      ...(options.saveWaitMs === undefined ? {} : { saveWaitMs: options.saveWaitMs }),
    },
    {
      apply(snapshot) {
        if (snapshot.routes.length === 0) throw new Error("refusing an empty snapshot (test rule)");
        seen.applied.push(snapshot);
      },
      revoke(fingerprints) {
        seen.revoked.push([...fingerprints]);
        return fingerprints.length;
      },
      forgetTokens() {
        seen.forgotten += 1;
      },
    },
    logger,
  );
  cleanups.push(() => source.close());
  return { source, seen, stateDir: dir };
}

async function startRealServer(
  tls?: { cert: string; key: string },
  streamLivenessTimeoutMs?: number,
): Promise<{
  server: DistributionServer;
  url: string;
  distributor: ReturnType<typeof createDistributor>;
  reviewer: ReturnType<typeof mockApiServerReviewer>;
}> {
  const distributor = createDistributor();
  const reviewer = mockApiServerReviewer({
    [GATEWAY_TOKEN]: { username: "system:serviceaccount:pg:gateway" },
  });
  const server = await startDistributionServer({
    host: "127.0.0.1",
    port: 0,
    distributor,
    reviewer,
    audience: "phantomgate",
    allowedServiceAccounts: ["pg:gateway"],
    logger,
    registry: new Registry(),
    ...(tls === undefined ? {} : { tls }),
    ...(streamLivenessTimeoutMs === undefined ? {} : { streamLivenessTimeoutMs }),
  });
  cleanups.push(() => server.close());
  const scheme = tls === undefined ? "http" : "https";
  return { server, url: `${scheme}://127.0.0.1:${server.port}`, distributor, reviewer };
}

/** A self-signed certificate for 127.0.0.1 (its own CA), written as PEM files. */
function selfSignedCertificate(): { cert: string; key: string; certFile: string } {
  const dir = mkdtempSync(join(tmpdir(), "phantomgate-tls-"));
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=phantomgate-operator",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    { stdio: "ignore" },
  );
  return { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8"), certFile };
}

/** A bare HTTP server whose stream handler the test writes. */
async function startBareServer(
  onStream: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; server: Server }> {
  return listenForTest(
    createServer((req, res) => {
      if (req.url?.startsWith("/v1/stream") === true) onStream(req, res);
      else res.writeHead(204).end();
    }),
  );
}

/** Listens on a free port of 127.0.0.1 until the test ends. */
async function listenForTest(server: Server): Promise<{ url: string; server: Server }> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/**
 * Two operator replicas behind one Service, as the chart runs them: a front server passes the stream to A and
 * every ACK to B, answering the first `refusals` ACKs itself with 503 (B's TokenReview failing, say).
 */
async function twoReplicas(refusals: number): Promise<{
  a: Awaited<ReturnType<typeof startRealServer>>;
  b: Awaited<ReturnType<typeof startRealServer>>;
  acks: { status: number; revision: string }[];
  url: string;
}> {
  const a = await startRealServer();
  const b = await startRealServer();
  a.distributor.publish(snapshotA);
  b.distributor.publish(snapshotA);
  const acks: { status: number; revision: string }[] = [];
  const front = createServer((req, res) => {
    if (req.url?.startsWith(STREAM_PATH) === true) {
      // The stream is a POST whose body carries the gateway's heartbeats: passed through both ways.
      const headers = Object.fromEntries(
        Object.entries(req.headers).filter(
          ([name]) => !["connection", "transfer-encoding", "keep-alive", "host"].includes(name),
        ),
      ) as Record<string, string>;
      const method = req.method === "POST" ? "POST" : "GET";
      void request(`${a.url}${req.url}`, {
        method,
        headers,
        ...(method === "POST" ? { body: req } : {}),
        bodyTimeout: 0,
      }).then(
        (upstream) => {
          res.writeHead(upstream.statusCode, upstream.headers as Record<string, string>);
          upstream.body.pipe(res);
          res.on("close", () => upstream.body.destroy());
        },
        () => res.destroy(),
      );
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const revision = String((JSON.parse(body.toString()) as { revision?: unknown }).revision);
      if (acks.length < refusals) {
        acks.push({ status: 503, revision });
        res.writeHead(503).end();
        return;
      }
      const headers = {
        authorization: req.headers.authorization ?? "",
        "content-type": req.headers["content-type"] ?? "",
      };
      void request(`${b.url}${req.url ?? ""}`, { method: "POST", headers, body }).then(
        async (answer) => {
          await answer.body.dump();
          acks.push({ status: answer.statusCode, revision });
          res.writeHead(answer.statusCode).end();
        },
        () => res.destroy(),
      );
    });
  });
  const { url } = await listenForTest(front);
  return { a, b, acks, url };
}

describe("control-plane source against the distribution server", () => {
  it("applies a snapshot, persists it as last-known-good and ACKs it", async () => {
    const { url, distributor } = await startRealServer();
    const { source, seen, stateDir: dir } = await startSource(url);
    expect(source.status()).toMatchObject({ revision: null, servingFrom: null });
    await eventually(() => distributor.fleet().connected === 1, 5_000, "gateway connected");
    distributor.publish(snapshotA);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "gateway programmed");
    expect(seen.applied.map((s) => s.revision)).toEqual([snapshotA.revision]);
    expect((await loadLastKnownGood(dir, logger))?.snapshot).toEqual(snapshotA);
    expect(source.status()).toMatchObject({
      state: "connected",
      revision: snapshotA.revision,
      servingFrom: "control-plane",
    });
    expect(source.status().summary).toMatch(
      /^connected to http:\/\/127\.0\.0\.1:\d+ since .*; serving revision [0-9a-f]{16} since/,
    );
  });

  it("an ACK that reaches another replica is retried until that replica takes it", async () => {
    const { a, b, acks, url } = await twoReplicas(6);
    const { seen } = await startSource(url, { ackRefreshMs: 600_000, random: () => 0 });
    // A holds the stream and sent the snapshot; the ACK can only be counted through B (the leader merges both).
    await eventually(() => seen.applied.length === 1, 5_000, "snapshot applied");
    expect(a.distributor.fleet().connected).toBe(1);
    // B records the ACK a moment before the front server has read B's answer and noted its status.
    await eventually(
      () =>
        b.distributor.fleet().gateways.some((g) => g.name === "gw-test" && g.status === "ACK") &&
        acks.length === 7,
      5_000,
      "B holds the ACK after six refusals",
    );
    expect(acks.map((ack) => ack.status)).toEqual([503, 503, 503, 503, 503, 503, 204]);
  });

  it("a connected gateway sends its latest ACK again, so a replica without its stream keeps it", async () => {
    const { b, acks, url } = await twoReplicas(0);
    await startSource(url, { ackRefreshMs: 300 });
    await eventually(() => acks.length >= 3, 5_000, "the ACK sent twice more");
    expect(acks.every((ack) => ack.status === 204 && ack.revision === snapshotA.revision)).toBe(true);
    expect(b.distributor.fleet().gateways.find((g) => g.name === "gw-test")?.status).toBe("ACK");
  });

  it("NACKs an invalid snapshot with the reason, keeps serving, and recovers with the next good one", async () => {
    const { url, distributor } = await startRealServer();
    const { source, seen } = await startSource(url);
    distributor.publish(snapshotA);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "programmed A");
    distributor.publish({
      ...snapshotA,
      revision: "badbadbadbadbad0",
      routes: [{ id: "x" }],
    } as unknown as Snapshot);
    await eventually(() => distributor.fleet().gateways[0]?.status === "NACK", 5_000, "NACK recorded");
    expect(distributor.fleet().gateways[0]).toMatchObject({ revision: snapshotA.revision, connected: true });
    expect(distributor.fleet().gateways[0]?.reason).toMatch(/^invalid snapshot: routes\.0\./);
    expect(source.problems()[0]?.message).toMatch(/^snapshot badbadbadbadbad0 rejected: invalid snapshot/);
    expect(source.status().revision).toBe(snapshotA.revision);

    // Valid by the schema, refused by the runtime (here: the test's apply rule): NACKed with that message.
    distributor.publish({ ...snapshotA, revision: "0000000000000001", routes: [] });
    await eventually(
      () =>
        distributor.fleet().gateways[0]?.reason ===
        "snapshot could not be served: refusing an empty snapshot (test rule)",
      5_000,
      "runtime NACK",
    );
    distributor.publish(snapshotB);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "programmed B");
    expect(source.problems()).toEqual([]);
    expect(seen.applied.map((s) => s.revision)).toEqual([snapshotA.revision, snapshotB.revision]);
  });

  it("evicts revoked fingerprints and drops malformed ones", async () => {
    const { url, distributor } = await startRealServer();
    const { seen } = await startSource(url);
    await eventually(() => distributor.fleet().connected === 1, 5_000, "connected");
    expect(distributor.revoke([fingerprintToken("a"), "not-a-fingerprint"])).toBe(1);
    await eventually(() => seen.revoked.length === 1, 5_000, "revocation received");
    expect(seen.revoked).toEqual([[fingerprintToken("a")]]);
  });

  it("drops its cached token facts when the operator says it missed revocations, counted in the reset metric", async () => {
    const { url, distributor } = await startRealServer();
    const registry = new Registry();
    const seen: Recorder = { applied: [], revoked: [], forgotten: 0 };
    const source = await startControlPlaneSource(
      {
        url,
        tokenFile: tokenFile(GATEWAY_TOKEN),
        gatewayName: "gw-forget",
        stateDir: stateDir(),
        registry,
        backoff: { baseMs: 20, capMs: 50 },
      },
      {
        apply: (snapshot) => void seen.applied.push(snapshot),
        revoke: (fingerprints) => fingerprints.length,
        forgetTokens: () => void (seen.forgotten += 1),
      },
      logger,
    );
    cleanups.push(() => source.close());
    await eventually(() => distributor.fleet().connected === 1, 5_000, "connected");
    expect(seen.forgotten).toBe(0);
    expect(distributorInternals(distributor).revocationsMissed()).toBe(1);
    await eventually(() => seen.forgotten === 1, 5_000, "token caches dropped");
    const metrics = await registry.getSingleMetricAsString(
      "phantomgate_control_plane_token_cache_resets_total",
    );
    expect(metrics).toMatch(/^phantomgate_control_plane_token_cache_resets_total 1$/m);
  });

  it("serves its last-known-good snapshot at once, and reports it with the connect so nothing is resent", async () => {
    const { url, distributor, server } = await startRealServer();
    const first = await startSource(url);
    distributor.publish(snapshotA);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "programmed");
    first.source.close();
    await eventually(() => distributor.fleet().connected === 0, 5_000, "disconnected");

    const again = await startSource(url, { stateDir: first.stateDir });
    // Applied from disk before any connection.
    expect(again.seen.applied.map((s) => s.revision)).toEqual([snapshotA.revision]);
    expect(again.source.status()).toMatchObject({
      revision: snapshotA.revision,
      servingFrom: "last-known-good",
    });
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "programmed again");
    // The operator vouches for the revision without sending it again.
    await eventually(
      () => again.source.status().servingFrom === "control-plane",
      5_000,
      "served from the control plane",
    );
    expect(again.source.status()).toMatchObject({ revision: snapshotA.revision, state: "connected" });
    expect(again.seen.applied).toHaveLength(1);
    expect(server.port).toBeGreaterThan(0);
  });

  it("keeps its stream alive with heartbeats: connected across many liveness timeouts", async () => {
    const { url, distributor } = await startRealServer(undefined, 600);
    const { source } = await startSource(url);
    await eventually(() => distributor.fleet().connected === 1, 5_000, "gateway connected");
    let changes = 0;
    const unsubscribe = distributor.onFleetChange(() => (changes += 1));
    cleanups.push(unsubscribe);
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // four liveness timeouts, no snapshot, no ping
    expect(distributor.fleet().connected).toBe(1);
    expect(changes).toBe(0); // not one disconnect/reconnect
    expect(source.status().state).toBe("connected");
  });

  it("a hung state directory holds back no snapshot: each is ACKed after the wait, with the reason", async () => {
    const { url, distributor } = await startRealServer();
    let saves = 0;
    const { seen } = await startSource(url, {
      saveWaitMs: 300,
      // The first copy is written; the disk then stops answering.
      saveSnapshot: () => (++saves === 1 ? Promise.resolve() : new Promise<never>(() => undefined)),
    });
    await eventually(() => distributor.fleet().connected === 1, 5_000, "gateway connected");
    distributor.publish(snapshotA);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "A programmed");
    distributor.publish(snapshotB);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "B programmed");
    const third = compileSnapshot(
      allManifests({ issuer: "http://127.0.0.1:9000", echoOrigin: "http://127.0.0.1:9103" }),
    );
    distributor.publish(third);
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "the third programmed");
    expect(seen.applied.map((s) => s.revision)).toEqual([
      snapshotA.revision,
      snapshotB.revision,
      third.revision,
    ]);
    expect(distributor.fleet().gateways[0]?.reason).toBe(
      "serving, but the last-known-good copy is not written after 0.3 s (a slow or hung state directory)",
    );
    // One hung write; the third's copy waits behind it rather than racing it.
    expect(saves).toBe(2);
  });

  it("keeps retrying a refused stream (401) with the reason in its status", async () => {
    const { url, reviewer } = await startRealServer();
    const { source } = await startSource(url, { token: "not-a-known-token" });
    await eventually(() => reviewer.reviewed.length >= 3, 5_000, "three attempts");
    expect(["disconnected", "connecting"]).toContain(source.status().state);
    expect(source.status().lastError).toBe("HTTP 401 PG_ERR_DIST_TOKEN_INVALID");
  });
});

describe("control-plane source start-up", () => {
  it("refuses to start on a state dir it cannot write, or a CA file it cannot read", async () => {
    const parent = mkdtempSync(join(tmpdir(), "phantomgate-state-"));
    writeFileSync(join(parent, "file"), "");
    await expect(
      startSource("http://127.0.0.1:9", { stateDir: join(parent, "file", "state") }),
    ).rejects.toThrow(/state directory .* is not writable \(ENOTDIR\)/);
    await expect(startSource("https://127.0.0.1:9", { caFile: join(parent, "missing.pem") })).rejects.toThrow(
      /control-plane CA file .*missing\.pem cannot be read \(ENOENT/,
    );
  });
});

describe("control-plane source over TLS", () => {
  it("trusts the snapshot service through --control-plane-ca-file, and a rotated certificate after updateTls", async () => {
    const first = selfSignedCertificate();
    const { url, distributor, server } = await startRealServer(first);
    distributor.publish(snapshotA);
    const trusting = await startSource(url, { caFile: first.certFile, name: "gw-tls-1" });
    await eventually(() => distributor.fleet().programmed === 1, 5_000, "programmed over TLS");
    expect(trusting.source.status().state).toBe("connected");

    // Without the CA the certificate is not trusted and the stream never opens.
    const untrusting = await startSource(url, { name: "gw-tls-2" });
    await eventually(() => untrusting.source.status().lastError !== null, 5_000, "TLS failure reported");
    expect(untrusting.source.status().lastError).toMatch(/SELF_SIGNED|self-signed|unable to verify/i);

    const second = selfSignedCertificate();
    server.updateTls(second);
    const rotated = await startSource(url, { caFile: second.certFile, name: "gw-tls-3" });
    await eventually(
      () => rotated.source.status().state === "connected",
      5_000,
      "connected with the new certificate",
    );
  });

  it("refuses updateTls on a plain-HTTP server", async () => {
    const { server } = await startRealServer();
    expect(() => server.updateTls({ cert: "", key: "" })).toThrow(TypeError);
  });
});

describe("control-plane source against misbehaving servers", () => {
  it("reconnects when the stream says nothing for the stall timeout", async () => {
    let connections = 0;
    const { url } = await startBareServer((_req, res) => {
      connections += 1;
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      res.flushHeaders(); // …and then silence
    });
    const { source } = await startSource(url, { stallTimeoutMs: 300 });
    await eventually(() => connections >= 3, 5_000, "three connections");
    expect(source.status().lastError).toMatch(/nothing received for 300 ms/);
  });

  it("is not fooled by pings: a pinging stream stays up", async () => {
    let connections = 0;
    const { url } = await startBareServer((_req, res) => {
      connections += 1;
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      const timer = setInterval(() => res.write('{"type":"ping"}\n'), 100);
      res.on("close", () => clearInterval(timer));
    });
    const { source } = await startSource(url, { stallTimeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 1_200));
    expect(connections).toBe(1);
    expect(source.status().state).toBe("connected");
  });

  it("drops its cached token facts on a reconnect after longer than the operator replays revocations", async () => {
    const clock = createManualClock(Date.now());
    let down = false;
    let stream: ServerResponse | undefined;
    const { url } = await startBareServer((_req, res) => {
      if (down) {
        res.writeHead(503).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      const timer = setInterval(() => res.write('{"type":"ping"}\n'), 50);
      res.on("close", () => clearInterval(timer));
      stream = res;
    });
    const { source, seen } = await startSource(url, { clock });
    const outage = async (minutes: number): Promise<void> => {
      await eventually(() => source.status().state === "connected", 5_000, "connected");
      down = true;
      stream?.destroy();
      await eventually(() => source.status().state !== "connected", 5_000, "stream lost");
      clock.advance(minutes * 60_000);
      down = false;
      await eventually(() => source.status().state === "connected", 5_000, "reconnected");
    };
    await outage(5);
    expect(seen.forgotten).toBe(0);
    await outage(REVOCATION_REPLAY_MS / 60_000);
    expect(seen.forgotten).toBe(1);
    await outage(1);
    expect(seen.forgotten).toBe(1);
  });

  it("reads the token file again on every connect (the kubelet rotates it)", async () => {
    const seenTokens: string[] = [];
    const { url } = await startBareServer((req, res) => {
      seenTokens.push(req.headers.authorization ?? "");
      res.writeHead(200, { "content-type": "application/x-ndjson" }).end('{"type":"ping"}\n'); // ends at once
    });
    const file = tokenFile("token-v1");
    await startSource(url, { tokenFile: file });
    await eventually(() => seenTokens.length >= 2, 5_000, "two connects");
    writeFileSync(file, "token-v2\n");
    await eventually(() => seenTokens.includes("Bearer token-v2"), 5_000, "rotated token used");
    expect(seenTokens[0]).toBe("Bearer token-v1");
  });

  it("keeps backing off from a stream that ends right after its first line (two gateways under one name)", async () => {
    const connects: number[] = [];
    const { url } = await startBareServer((_req, res) => {
      connects.push(Date.now());
      res.writeHead(200, { "content-type": "application/x-ndjson" }).end('{"type":"ping"}\n');
    });
    // Delays at the top of each backoff step: 200, 400, 800, 1600 ms… Were every short stream healthy, every
    // delay would be the first step's 200 ms: ten connects in two seconds.
    await startSource(url, { backoff: { baseMs: 200, capMs: 10_000 }, random: () => 0.999 });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(connects.length).toBeGreaterThanOrEqual(3);
    expect(connects.length).toBeLessThanOrEqual(5);
  });

  it("is not connected to a URL that answers 200 with something else than a snapshot stream", async () => {
    const { url } = await startBareServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" }).end('{"type":"ping"}\n<html></html>');
    });
    const { source } = await startSource(url);
    await eventually(() => source.status().lastError !== null, 5_000, "a refusal");
    expect(source.status().lastError).toBe("HTTP 200 but not a snapshot stream (content-type text/html)");
    expect(source.status().state).not.toBe("connected");
  });

  it("drops its cached token facts when a revocation cannot be read", async () => {
    const { url } = await startBareServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      res.write(`${JSON.stringify({ type: "revoke", fingerprints: [fingerprintToken("t-1"), 42] })}\n`);
      res.write(`${JSON.stringify({ type: "revoke", fingerprints: [fingerprintToken("t-2"), "short"] })}\n`);
      res.write(`${JSON.stringify({ type: "snapshot", snapshot: snapshotA })}\n`);
    });
    const { seen } = await startSource(url);
    await eventually(() => seen.applied.length === 1, 5_000, "snapshot applied");
    // The first message as a whole, the second for its one bad fingerprint (its good one is still evicted).
    expect(seen.forgotten).toBe(2);
    expect(seen.revoked).toEqual([[fingerprintToken("t-2")]]);
  });

  it("drops its cached token facts on a first connect later than the replay window after start", async () => {
    const clock = createManualClock(Date.now());
    let up = false;
    const { url } = await startBareServer((_req, res) => {
      if (!up) {
        res.writeHead(503).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      const timer = setInterval(() => res.write('{"type":"ping"}\n'), 50);
      res.on("close", () => clearInterval(timer));
    });
    // Serving its last-known-good snapshot (or nothing) and caching token facts while the operator is down.
    const { source, seen } = await startSource(url, { clock });
    clock.advance(REVOCATION_REPLAY_MS);
    up = true;
    await eventually(() => source.status().state === "connected", 5_000, "connected");
    expect(seen.forgotten).toBe(1);
  });

  it("reads no more than a few KiB of a refusal's body (one that never ends is no reason to wait)", async () => {
    const { url } = await startBareServer((_req, res) => {
      res.writeHead(500, { "content-type": "text/plain" });
      const timer = setInterval(() => res.write("x".repeat(64 * 1024)), 5);
      res.on("close", () => clearInterval(timer));
    });
    const { source } = await startSource(url);
    await eventually(() => source.status().lastError === "HTTP 500", 5_000, "the refusal recorded");
  });

  it("retries an ACK the operator answers with 429 or 408, until it is taken", async () => {
    const answers = [429, 408, 204];
    const acks: number[] = [];
    const { url } = await listenForTest(
      createServer((req, res) => {
        if (req.url?.startsWith(STREAM_PATH) === true) {
          res.writeHead(200, { "content-type": "application/x-ndjson" });
          res.write(`${JSON.stringify({ type: "snapshot", snapshot: snapshotA })}\n`);
          const timer = setInterval(() => res.write('{"type":"ping"}\n'), 50);
          res.on("close", () => clearInterval(timer));
          return;
        }
        req.resume();
        req.on("end", () => {
          const status = answers[acks.length] ?? 204;
          acks.push(status);
          res.writeHead(status).end();
        });
      }),
    );
    await startSource(url, { ackRefreshMs: 600_000, random: () => 0 });
    await eventually(() => acks.length === 3, 10_000, "the ACK taken on its third try");
    expect(acks).toEqual([429, 408, 204]);
  });

  it("ignores unknown message types and lines that are not JSON", async () => {
    const { url } = await startBareServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      res.write('not json\n{"type":"future-thing","x":1}\n');
      res.write(`${JSON.stringify({ type: "snapshot", snapshot: snapshotA })}\n`);
    });
    const { seen, source } = await startSource(url);
    await eventually(() => seen.applied.length === 1, 5_000, "snapshot applied");
    expect(source.status().state).toBe("connected");
  });
});

describe("control-plane source heartbeats", () => {
  interface Opened {
    readonly method: string | undefined;
    readonly contentType: string | undefined;
    /** Heartbeat lines received, with when. */
    readonly beats: { line: string; atMs: number }[];
    ended: boolean;
  }

  /** A bare stream server that records every request body line by line; `respond` answers the request. */
  async function startRecordingServer(
    respond: (req: IncomingMessage, res: ServerResponse, opened: Opened) => void,
  ): Promise<{ url: string; opened: Opened[] }> {
    const opened: Opened[] = [];
    const { url } = await startBareServer((req, res) => {
      const entry: Opened = {
        method: req.method,
        contentType: req.headers["content-type"],
        beats: [],
        ended: false,
      };
      opened.push(entry);
      let pending = "";
      req.on("data", (chunk: Buffer) => {
        pending += chunk.toString("utf8");
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) entry.beats.push({ line, atMs: Date.now() });
      });
      // The connection, not the request: a request detached from a response that already ended emits no close.
      req.socket.on("close", () => (entry.ended = true));
      respond(req, res, entry);
    });
    return { url, opened };
  }

  const pinging = (res: ServerResponse, headers: Record<string, string> = {}): void => {
    res.writeHead(200, { "content-type": "application/x-ndjson", ...headers });
    res.write('{"type":"ping"}\n');
    const timer = setInterval(() => res.write('{"type":"ping"}\n'), 100);
    res.on("close", () => clearInterval(timer));
  };

  it("opens the stream with POST and sends heartbeats at the interval the server's header asks for", async () => {
    const { url, opened } = await startRecordingServer((_req, res) =>
      pinging(res, { "x-phantomgate-heartbeat-ms": "150" }),
    );
    const { source } = await startSource(url, { stallTimeoutMs: 5_000 });
    await eventually(() => source.status().state === "connected", 5_000, "connected");
    await eventually(() => (opened[0]?.beats.length ?? 0) >= 10, 5_000, "ten heartbeats");
    const stream = opened[0]!;
    expect(opened).toHaveLength(1);
    expect(stream.method).toBe("POST");
    expect(stream.contentType).toBe("application/x-ndjson");
    for (const beat of stream.beats) expect(JSON.parse(beat.line)).toEqual({ type: "heartbeat" });
    // After the first two (one with the request head, one when the answer arrived) they come every 150 ms.
    const gaps = stream.beats.slice(2, 10).map((beat, i) => beat.atMs - stream.beats[i + 1]!.atMs);
    const mean = gaps.reduce((sum, gap) => sum + gap, 0) / gaps.length;
    expect(mean).toBeGreaterThan(100);
    expect(mean).toBeLessThan(300);
  });

  it("sends them every 10 s when the server names no interval, and within 100 ms…60 s whatever it names", async () => {
    const { url, opened } = await startRecordingServer((_req, res) => pinging(res));
    await startSource(url, { stallTimeoutMs: 5_000 });
    await eventually(() => (opened[0]?.beats.length ?? 0) >= 2, 5_000, "the first heartbeats");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(opened[0]?.beats).toHaveLength(2); // the next one is due after 10 s

    const tiny = await startRecordingServer((_req, res) =>
      pinging(res, { "x-phantomgate-heartbeat-ms": "1" }),
    );
    await startSource(tiny.url, { stallTimeoutMs: 5_000, name: "gw-tiny" });
    await eventually(() => (tiny.opened[0]?.beats.length ?? 0) >= 2, 5_000, "the first heartbeats");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // Clamped to 100 ms: about ten more, not a thousand.
    expect(tiny.opened[0]!.beats.length).toBeGreaterThan(5);
    expect(tiny.opened[0]!.beats.length).toBeLessThan(20);
  });

  it("streams with GET when the operator (an older release) answers POST with 405", async () => {
    const { url, opened } = await startRecordingServer((req, res) => {
      if (req.method === "POST") {
        res.writeHead(405, { allow: "GET", "content-type": "application/problem+json" });
        res.end('{"code":"PG_ERR_DIST_METHOD"}');
        return;
      }
      pinging(res);
    });
    const { source } = await startSource(url, { stallTimeoutMs: 5_000 });
    await eventually(() => source.status().state === "connected", 5_000, "connected");
    expect(opened.map((o) => o.method)).toEqual(["POST", "GET"]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(source.status().state).toBe("connected");
    expect(opened).toHaveLength(2);
  });

  it("leaves no heartbeat behind: each stream's body ends with it, across reconnects and on close()", async () => {
    const { url, opened } = await startRecordingServer((_req, res) => {
      pinging(res, { "x-phantomgate-heartbeat-ms": "100" });
      setTimeout(() => res.end(), 300); // the server ends every stream; the gateway reconnects
    });
    const { source } = await startSource(url, { stallTimeoutMs: 5_000 });
    await eventually(() => opened.length >= 4, 10_000, "four streams");
    source.close();
    await eventually(() => opened.every((o) => o.ended), 5_000, "every request body ended");
    const count = (): number => opened.reduce((sum, o) => sum + o.beats.length, 0);
    const after = count();
    const streams = opened.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(count()).toBe(after);
    expect(opened).toHaveLength(streams);
  });
});
