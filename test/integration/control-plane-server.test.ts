// The distribution server's HTTP surface, in-process over real sockets, with a mock TokenReviewer standing in
// for the Kubernetes API server: who may stream, ACK and revoke, what each refusal looks like, and that no
// raw token ever reaches a response or a log line.
import { Writable } from "node:stream";
import pino from "pino";
import { Registry } from "prom-client";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { distributorInternals } from "../../src/operator/distribute/distributor.ts";
import {
  createDistributor,
  startDistributionServer,
  type DistributionServer,
} from "../../src/operator/distribute/index.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import { mockApiServerReviewer } from "../helpers/mock-token-reviewer.ts";

const tokens = {
  gateway: "gw-token-0123456789",
  otherAccount: "other-sa-token-0123456789",
  wrongAudience: "wrong-audience-token-0123456789",
  revoker: "revoker-token-0123456789",
  user: "plain-user-token-0123456789",
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
});
let logText = "";
const logger = pino(
  { level: "debug" },
  new Writable({
    write(chunk: Buffer, _encoding, done) {
      logText += chunk.toString("utf8");
      done();
    },
  }),
);
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
  for (const token of Object.values(tokens)) expect(logText).not.toContain(token);
  expect(logText).not.toContain("raw-token-to-revoke");
});

async function call(
  method: "GET" | "POST",
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

  it("answers 404 and 405 as problem+json", async () => {
    const missing = await call("GET", "/v1/nothing", { token: tokens.gateway });
    expect(missing.status).toBe(404);
    const wrongMethod = await call("POST", "/v1/stream", { token: tokens.gateway, body: {} });
    expect(wrongMethod.status).toBe(405);
    expect(code(wrongMethod.text)).toBe("PG_ERR_DIST_METHOD");
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
