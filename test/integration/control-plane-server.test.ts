// The distribution server's HTTP surface, in-process over real sockets, with a mock TokenReviewer standing in
// for the Kubernetes API server: who may stream, ACK and revoke, what each refusal looks like, that no raw
// token ever reaches a response or a log line, and how the stream's heartbeats keep the fleet view truthful.
import { connect } from "node:net";
import { PassThrough } from "node:stream";
import { Registry } from "prom-client";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { distributorInternals } from "../../src/operator/distribute/distributor.ts";
import {
  createDistributor,
  startDistributionServer,
  type DistributionServer,
} from "../../src/operator/distribute/index.ts";
import { HEARTBEAT_LINE } from "../../src/operator/distribute/protocol.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import { eventually } from "../helpers/control-plane-gateway.ts";
import { rawRequest } from "../helpers/http.ts";
import { captureLogs } from "../helpers/logs.ts";
import { mockApiServerReviewer } from "../helpers/mock-token-reviewer.ts";

const tokens = {
  gateway: "gw-token-0123456789",
  otherAccount: "other-sa-token-0123456789",
  wrongAudience: "wrong-audience-token-0123456789",
  revoker: "revoker-token-0123456789",
  user: "plain-user-token-0123456789",
  slowGateway: "gw-slow-token-0123456789",
};
const reviewer = mockApiServerReviewer({
  [tokens.gateway]: { username: "system:serviceaccount:pg:gateway" },
  [tokens.otherAccount]: { username: "system:serviceaccount:pg:other" },
  [tokens.wrongAudience]: {
    username: "system:serviceaccount:pg:gateway",
    audience: "https://kubernetes.default.svc",
  },
  [tokens.revoker]: { username: "system:serviceaccount:pg:revoker", mayRevoke: true },
  [tokens.user]: { username: "alice", mayRevoke: false },
  [tokens.slowGateway]: { username: "system:serviceaccount:pg:gateway" },
});
const { logger, text: logText } = captureLogs("debug");
const distributor = createDistributor({ logger });
const registry = new Registry();
let server: DistributionServer;
let base: string;

beforeAll(async () => {
  server = await startDistributionServer({
    host: "127.0.0.1",
    port: 0,
    distributor,
    reviewer,
    audience: "phantomgate",
    allowedServiceAccounts: ["pg:gateway"],
    logger,
    registry,
  });
  base = `http://127.0.0.1:${server.port}`;
});

afterAll(async () => {
  await server.close();
  // Nothing the clients sent as a token may appear in any log line.
  for (const token of Object.values(tokens)) expect(logText()).not.toContain(token);
  expect(logText()).not.toContain("raw-token-to-revoke");
});

async function call(
  method: "GET" | "POST" | "PUT",
  path: string,
  options: { token?: string; body?: unknown; rawAuthorization?: string } = {},
): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (options.rawAuthorization !== undefined) headers.authorization = options.rawAuthorization;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const controller = new AbortController();
  const response = await request(`${base}${path}`, {
    method,
    headers,
    body:
      options.body === undefined
        ? null
        : typeof options.body === "string"
          ? options.body
          : JSON.stringify(options.body),
    signal: controller.signal,
  });
  if (response.headers["content-type"] === "application/x-ndjson") {
    controller.abort();
    await response.body.dump().catch(() => undefined);
    return { status: response.statusCode, headers: response.headers, text: "" };
  }
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

const code = (text: string): unknown => (JSON.parse(text) as { code?: unknown }).code;

describe("authentication (401)", () => {
  it("refuses a call without a token, with a Bearer challenge", async () => {
    for (const [method, path] of [
      ["GET", "/v1/stream?gateway=gw-1"],
      ["POST", "/v1/acks"],
      ["POST", "/v1/revocations"],
    ] as const) {
      const response = await call(method, path, { body: method === "POST" ? {} : undefined });
      expect(response.status).toBe(401);
      expect(response.headers["www-authenticate"]).toBe('Bearer realm="phantomgate-operator"');
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect(code(response.text)).toBe("PG_ERR_DIST_TOKEN_MISSING");
    }
    expect(
      (await call("GET", "/v1/stream?gateway=gw-1", { rawAuthorization: "Basic Zm9vOmJhcg==" })).status,
    ).toBe(401);
  });

  it("refuses an unknown token and a token for another audience, without echoing them", async () => {
    for (const token of ["random-garbage-string", tokens.wrongAudience]) {
      const response = await call("GET", "/v1/stream?gateway=gw-1", { token });
      expect(response.status).toBe(401);
      expect(response.headers["www-authenticate"]).toContain('error="invalid_token"');
      expect(code(response.text)).toBe("PG_ERR_DIST_TOKEN_INVALID");
      expect(response.text).not.toContain(token);
    }
  });

  it("answers 503 with Retry-After when the API server cannot review", async () => {
    reviewer.setDown(true);
    try {
      const response = await call("GET", "/v1/stream?gateway=gw-1", { token: "never-cached-token" });
      expect(response.status).toBe(503);
      expect(response.headers["retry-after"]).toBe("5");
      expect(code(response.text)).toBe("PG_ERR_DIST_UNAVAILABLE");
    } finally {
      reviewer.setDown(false);
    }
  });
});

describe("authorization (403)", () => {
  it("lets only allowed ServiceAccounts stream and ACK", async () => {
    for (const token of [tokens.otherAccount, tokens.user]) {
      expect((await call("GET", "/v1/stream?gateway=gw-1", { token })).status).toBe(403);
      const ack = await call("POST", "/v1/acks", {
        token,
        body: { gateway: "gw-1", revision: "r", status: "ACK" },
      });
      expect(ack.status).toBe(403);
      expect(code(ack.text)).toBe("PG_ERR_DIST_FORBIDDEN");
    }
    expect((await call("GET", "/v1/stream?gateway=gw-1", { token: tokens.gateway })).status).toBe(200);
  });

  it("needs RBAC create on revocations.phantomgate.dev to revoke", async () => {
    for (const token of [tokens.user, tokens.gateway]) {
      const response = await call("POST", "/v1/revocations", {
        token,
        body: { tokens: ["raw-token-to-revoke"] },
      });
      expect(response.status).toBe(403);
      expect(JSON.parse(response.text)).toMatchObject({ code: "PG_ERR_DIST_FORBIDDEN", status: 403 });
    }
  });
});

describe("requests", () => {
  it("validates the stream query", async () => {
    expect((await call("GET", "/v1/stream", { token: tokens.gateway })).status).toBe(400);
    expect((await call("GET", "/v1/stream?gateway=bad%20name", { token: tokens.gateway })).status).toBe(400);
    expect(
      (await call("GET", `/v1/stream?gateway=gw-1&revision=${"x".repeat(200)}`, { token: tokens.gateway }))
        .status,
    ).toBe(400);
  });

  it("records an ACK (204) and rejects malformed ones (400)", async () => {
    const ok = await call("POST", "/v1/acks", {
      token: tokens.gateway,
      body: { gateway: "gw-ack", revision: "0123456789abcdef", status: "NACK", reason: "bad route" },
    });
    expect(ok.status).toBe(204);
    expect(distributor.fleet().gateways.find((g) => g.name === "gw-ack")).toMatchObject({
      status: "NACK",
      reason: "bad route",
    });
    const bad = await call("POST", "/v1/acks", {
      token: tokens.gateway,
      body: { gateway: "gw-ack", status: "OK" },
    });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text)).toMatchObject({ code: "PG_ERR_DIST_BAD_REQUEST" });
    expect((await call("POST", "/v1/acks", { token: tokens.gateway, body: "{not json" })).status).toBe(400);
  });

  it("takes fingerprints and raw tokens (hashed at once) and answers 202 with the counts", async () => {
    const response = await call("POST", "/v1/revocations", {
      token: tokens.revoker,
      body: {
        tokens: ["raw-token-to-revoke", "raw-token-to-revoke"],
        fingerprints: [fingerprintToken("another")],
      },
    });
    expect(response.status).toBe(202);
    expect(JSON.parse(response.text)).toEqual({ revoked: 2, gateways: 0 });
    expect(await registry.getSingleMetricAsString("phantomgate_operator_revocations_total")).toContain(
      "phantomgate_operator_revocations_total 2",
    );
    const empty = await call("POST", "/v1/revocations", { token: tokens.revoker, body: {} });
    expect(empty.status).toBe(400);
    expect(empty.text).toContain("give at least one of fingerprints or tokens");
  });

  it("answers 202 only once the relay recorded the fingerprints for the other replicas, else 503", async () => {
    const internals = distributorInternals(distributor);
    const handed: string[][] = [];
    let outcome = true;
    internals.setRecorder({
      record(fingerprints) {
        handed.push([...fingerprints]);
        return Promise.resolve(outcome);
      },
    });
    try {
      const body = { tokens: ["raw-token-to-revoke"] };
      const recorded = await call("POST", "/v1/revocations", { token: tokens.revoker, body });
      expect(recorded.status).toBe(202);
      outcome = false;
      const lost = await call("POST", "/v1/revocations", { token: tokens.revoker, body });
      expect(lost.status).toBe(503);
      expect(lost.headers["retry-after"]).toBe("5");
      expect(JSON.parse(lost.text)).toMatchObject({ code: "PG_ERR_DIST_NOT_RECORDED", status: 503 });
      // The relay gets fingerprints, never the token.
      expect(handed).toEqual([
        [fingerprintToken("raw-token-to-revoke")],
        [fingerprintToken("raw-token-to-revoke")],
      ]);
    } finally {
      internals.setRecorder(undefined);
    }
  });

  it("answers 404 and 405 as problem+json, with the methods the endpoint takes in Allow", async () => {
    const missing = await call("GET", "/v1/nothing", { token: tokens.gateway });
    expect(missing.status).toBe(404);
    const wrongMethod = await call("PUT", "/v1/stream", { token: tokens.gateway, body: {} });
    expect(wrongMethod.status).toBe(405);
    expect(code(wrongMethod.text)).toBe("PG_ERR_DIST_METHOD");
    expect(wrongMethod.headers.allow).toBe("GET, POST");
    const getAck = await call("GET", "/v1/acks", { token: tokens.gateway });
    expect(getAck.status).toBe(405);
    expect(getAck.headers.allow).toBe("POST");
  });

  it("answers a request-target that is no URL (//) with 404 and keeps serving", async () => {
    for (const target of ["//", "///", "//%", "//v1/stream"]) {
      const answer = await rawRequest(server.port, [
        `GET ${target} HTTP/1.1`,
        "Host: x",
        "Connection: close",
      ]);
      expect(answer.status, target).toBe(404);
    }
    expect((await call("GET", "/v1/nothing", { token: tokens.gateway })).status).toBe(404);
  });

  it("does not register a stream whose gateway left while its token was being reviewed", async () => {
    reviewer.setDelayMs(300);
    try {
      const socket = connect(server.port, "127.0.0.1");
      socket.on("error", () => undefined);
      socket.write(
        `GET /v1/stream?gateway=gw-gone HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokens.slowGateway}\r\n\r\n`,
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
      socket.destroy();
      await new Promise((resolve) => setTimeout(resolve, 600));
    } finally {
      reviewer.setDelayMs(0);
    }
    expect(distributor.fleet().gateways.find((g) => g.name === "gw-gone")?.connected ?? false).toBe(false);
    expect(distributorInternals(distributor).connectedCount()).toBe(0);
  });

  it("counts calls and connected gateways in its metrics", async () => {
    const text = await registry.metrics();
    expect(text).toMatch(
      /phantomgate_operator_distribution_requests_total\{endpoint="\/v1\/stream",status="401"\} \d+/,
    );
    expect(text).toContain("phantomgate_operator_connected_gateways");
    expect(text).toContain("phantomgate_operator_ack_latency_seconds_bucket");
  });
});

/** A stream opened like a gateway opens it: POST with a request body the test writes heartbeats into. */
interface TestStream {
  readonly status: number;
  readonly headers: Record<string, unknown>;
  /** The request body: the test's heartbeats. */
  readonly heartbeats: PassThrough;
  /** Lines received so far. */
  readonly lines: string[];
  /** Settles when the response ends ("end") or breaks ("error"). */
  readonly done: Promise<"end" | "error">;
  abort(): void;
}

async function openStream(
  streamBase: string,
  gateway: string,
  method: "GET" | "POST" = "POST",
): Promise<TestStream> {
  const controller = new AbortController();
  const heartbeats = new PassThrough();
  heartbeats.on("error", () => undefined);
  heartbeats.write(HEARTBEAT_LINE); // undici sends the request head with the first body chunk
  const response = await request(`${streamBase}/v1/stream?gateway=${gateway}`, {
    method,
    headers: { authorization: `Bearer ${tokens.gateway}`, "content-type": "application/x-ndjson" },
    ...(method === "POST" ? { body: heartbeats } : {}),
    signal: controller.signal,
    bodyTimeout: 0,
  });
  const lines: string[] = [];
  const done = (async (): Promise<"end" | "error"> => {
    try {
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        lines.push(
          ...chunk
            .toString("utf8")
            .split("\n")
            .filter((line) => line !== ""),
        );
      }
      return "end";
    } catch {
      return "error";
    }
  })();
  return {
    status: response.statusCode,
    headers: response.headers,
    heartbeats,
    lines,
    done,
    abort() {
      controller.abort();
      heartbeats.destroy();
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("stream liveness: the gateway's heartbeats in the request body", () => {
  const LIVENESS_MS = 600;
  const BODY_TIMEOUT_MS = 300;
  const fleet = createDistributor({ logger });
  let liveServer: DistributionServer;
  let liveBase: string;
  const opened: TestStream[] = [];
  const connected = (name: string): boolean | undefined =>
    fleet.fleet().gateways.find((g) => g.name === name)?.connected;

  beforeAll(async () => {
    liveServer = await startDistributionServer({
      host: "127.0.0.1",
      port: 0,
      distributor: fleet,
      reviewer,
      audience: "phantomgate",
      allowedServiceAccounts: ["pg:gateway"],
      logger,
      registry: new Registry(),
      streamLivenessTimeoutMs: LIVENESS_MS,
      requestBodyTimeoutMs: BODY_TIMEOUT_MS,
    });
    liveBase = `http://127.0.0.1:${liveServer.port}`;
  });

  afterAll(async () => {
    for (const stream of opened) stream.abort();
    await liveServer.close();
  });

  async function open(gateway: string, method: "GET" | "POST" = "POST"): Promise<TestStream> {
    const stream = await openStream(liveBase, gateway, method);
    opened.push(stream);
    return stream;
  }

  it("tells the gateway the heartbeat interval (a third of the liveness timeout) on POST and GET streams", async () => {
    for (const method of ["POST", "GET"] as const) {
      const stream = await open(`gw-header-${method.toLowerCase()}`, method);
      expect(stream.status).toBe(200);
      expect(stream.headers["content-type"]).toBe("application/x-ndjson");
      expect(stream.headers["x-phantomgate-heartbeat-ms"]).toBe("200");
      stream.abort();
    }
    // The default server (30 s liveness timeout) asks for 10 s.
    const defaults = await openStream(base, "gw-header-default");
    expect(defaults.headers["x-phantomgate-heartbeat-ms"]).toBe("10000");
    defaults.abort();
  });

  it("keeps a heartbeating POST stream connected well past the liveness timeout and the body deadline", async () => {
    const stream = await open("gw-beating");
    const timer = setInterval(() => stream.heartbeats.write(HEARTBEAT_LINE), LIVENESS_MS / 4);
    try {
      await eventually(() => connected("gw-beating") === true, 2_000, "connected");
      // Five liveness timeouts, ten body deadlines.
      for (let i = 0; i < 10; i++) {
        await sleep(LIVENESS_MS / 2);
        expect(connected("gw-beating")).toBe(true);
      }
      const settled = await Promise.race([stream.done, sleep(0).then(() => "open")]);
      expect(settled).toBe("open");
    } finally {
      clearInterval(timer);
    }
    stream.heartbeats.end(); // a client ending its body ends the stream
    expect(await stream.done).toBe("end");
    await eventually(() => connected("gw-beating") === false, 2_000, "disconnected after the body ended");
  });

  it("closes a POST stream whose heartbeats stop (connection left open) within about the timeout", async () => {
    let changes = 0;
    const unsubscribe = fleet.onFleetChange(() => (changes += 1));
    try {
      const stream = await open("gw-frozen");
      await eventually(() => connected("gw-frozen") === true, 2_000, "connected");
      const silentFrom = Date.now();
      const before = changes;
      // No more heartbeats; the socket stays open (as with a frozen process or a vanished node).
      await eventually(() => connected("gw-frozen") === false, 3 * LIVENESS_MS, "disconnected");
      const tookMs = Date.now() - silentFrom;
      expect(tookMs).toBeGreaterThanOrEqual(LIVENESS_MS - 100);
      expect(tookMs).toBeLessThan(LIVENESS_MS + 1_000);
      expect(changes).toBeGreaterThan(before); // the fleet listeners (status) heard of it
      expect(fleet.fleet().gateways.find((g) => g.name === "gw-frozen")).toMatchObject({ connected: false });
      expect(await stream.done).toBe("error");
      expect(logText()).toMatch(
        /"gateway":"gw-frozen".*"silentMs":600.*"msg":"no heartbeat from the gateway for 600 ms; closing its stream"/,
      );
    } finally {
      unsubscribe();
    }
  });

  it("still serves GET streams (older gateways), without a liveness check, and says so once", async () => {
    const stream = await open("gw-legacy", "GET");
    expect(stream.status).toBe(200);
    await eventually(() => connected("gw-legacy") === true, 2_000, "connected");
    await sleep(3 * LIVENESS_MS);
    expect(connected("gw-legacy")).toBe(true);
    stream.abort();
    await eventually(() => connected("gw-legacy") === false, 2_000, "disconnected");
    const again = await open("gw-legacy", "GET");
    await eventually(() => connected("gw-legacy") === true, 2_000, "connected again");
    again.abort();
    const notes = logText()
      .split("\n")
      .filter((line) => line.includes('"gateway":"gw-legacy"') && line.includes("streams with GET"));
    expect(notes).toHaveLength(1);
  });

  it("answers 408 to an ACK body that does not arrive within the body deadline, and closes the connection", async () => {
    const socket = connect(liveServer.port, "127.0.0.1");
    let answer = "";
    socket.on("data", (chunk: Buffer) => (answer += chunk.toString("utf8")));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    const startedAt = Date.now();
    socket.write(
      "POST /v1/acks HTTP/1.1\r\nhost: operator\r\n" +
        `authorization: Bearer ${tokens.gateway}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n` +
        '{"gateway":"gw-slow",', // …and the rest never comes
    );
    await closed;
    const tookMs = Date.now() - startedAt;
    expect(tookMs).toBeGreaterThanOrEqual(BODY_TIMEOUT_MS - 50);
    expect(tookMs).toBeLessThan(BODY_TIMEOUT_MS + 2_000);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toMatch(/\r\nconnection: close\r\n/i);
    expect(answer).toContain('"code":"PG_ERR_DIST_BODY_TIMEOUT"');
  });
});
