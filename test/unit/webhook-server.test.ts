// The webhook's HTTPS server on a real socket (port 0) with a real openssl-issued certificate: status codes,
// metrics, the wait for a lagging store, and certificate reload between connections.
import { request } from "node:https";
import { TLSSocket } from "node:tls";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SourceObject } from "../../src/compile/compile.ts";
import { issueServingCertificate } from "../../src/operator/webhook/certificate.ts";
import {
  startWebhookServer,
  webhookPath,
  withinCallTimeout,
  type WebhookServer,
} from "../../src/operator/webhook/server.ts";

const logger = pino({ level: "silent" });
const apiVersion = "phantomgate.dev/v1alpha1";

const policy = {
  apiVersion,
  kind: "ScopePolicy",
  metadata: { name: "billing", namespace: "shop" },
  spec: { domain: "billing", scopes: [{ name: "read_invoice" }] },
};
const route = {
  apiVersion,
  kind: "ApiRoute",
  metadata: { name: "orders", namespace: "shop" },
  spec: {
    scopePolicyRefs: [{ name: "billing" }],
    rules: [
      {
        matches: [{ path: { value: "/orders" } }],
        authentication: { mode: "none" },
        backendRefs: [{ url: "http://orders.internal" }],
      },
    ],
  },
};

function review(object: unknown, uid = "uid-1") {
  return {
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid,
      kind: { group: "phantomgate.dev", version: "v1alpha1", kind: "ApiRoute" },
      operation: "CREATE",
      namespace: "shop",
      object,
    },
  };
}

interface Reply {
  status: number;
  body: string;
  fingerprint: string;
}

function call(
  port: number,
  ca: string,
  options: { method?: string; path?: string; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: options.path ?? `${webhookPath}?timeout=10s`,
        method: options.method ?? "POST",
        ca,
        agent: false,
        headers: { "content-type": "application/json" },
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body,
            fingerprint:
              res.socket instanceof TLSSocket ? res.socket.getPeerCertificate().fingerprint256 : "",
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

let first: { cert: string; key: string; ca: string };
let second: { cert: string; key: string; ca: string };
let served: { cert: string; key: string };
let world: SourceObject[] = [{ object: policy }];
let server: WebhookServer;
const registry = new Registry();

beforeAll(async () => {
  const names = { dnsNames: ["webhook.test.svc"], ipAddresses: ["127.0.0.1"], validityDays: 2 };
  [first, second] = await Promise.all([issueServingCertificate(names), issueServingCertificate(names)]);
  served = first;
  server = await startWebhookServer({
    host: "127.0.0.1",
    port: 0,
    tls: () => served,
    world: () => world,
    logger,
    registry,
    staleWorldGraceMs: 600,
  });
});

afterAll(async () => {
  await server.close();
});

describe("webhook server", () => {
  it("answers an AdmissionReview with 200 and counts it by kind, operation and verdict", async () => {
    world = [{ object: policy }];
    const allowed = await call(server.port, first.ca, { body: JSON.stringify(review(route)) });
    expect(allowed.status).toBe(200);
    expect(JSON.parse(allowed.body)).toEqual({
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      response: { uid: "uid-1", allowed: true },
    });

    const bad = { ...route, spec: { ...route.spec, scopePolicyRefs: [{ name: "nope" }] } };
    const denied = await call(server.port, first.ca, { body: JSON.stringify(review(bad, "uid-2")) });
    expect(JSON.parse(denied.body)).toMatchObject({
      response: { uid: "uid-2", allowed: false, status: { reason: "UnknownScopePolicy" } },
    });

    const metrics = await registry.getSingleMetricAsString("phantomgate_webhook_reviews_total");
    expect(metrics).toContain(
      'phantomgate_webhook_reviews_total{kind="ApiRoute",operation="CREATE",allowed="true"} 1',
    );
    expect(metrics).toContain(
      'phantomgate_webhook_reviews_total{kind="ApiRoute",operation="CREATE",allowed="false"} 1',
    );
  });

  it("answers 400 to what is not an AdmissionReview, 405/404/413 to wrong methods, paths and sizes", async () => {
    const notJson = await call(server.port, first.ca, { body: "{" });
    expect(notJson.status).toBe(400);
    const notReview = await call(server.port, first.ca, { body: JSON.stringify({ kind: "Pod" }) });
    expect(notReview.status).toBe(400);
    expect(JSON.parse(notReview.body)).toMatchObject({ code: "PG_WEBHOOK_INVALID_REVIEW" });
    const noObject = await call(server.port, first.ca, { body: JSON.stringify(review(null)) });
    expect(noObject.status).toBe(400);

    expect((await call(server.port, first.ca, { method: "GET" })).status).toBe(405);
    expect((await call(server.port, first.ca, { path: "/mutate", body: "{}" })).status).toBe(404);
    expect((await call(server.port, first.ca, { method: "GET", path: "/healthz" })).status).toBe(200);
    const huge = await call(server.port, first.ca, {
      body: JSON.stringify({ pad: "x".repeat(9 * 1024 * 1024) }),
    });
    expect(huge.status).toBe(413);

    const invalid = await registry.getSingleMetricAsString("phantomgate_webhook_invalid_requests_total");
    expect(invalid).toContain("phantomgate_webhook_invalid_requests_total 4");
  });

  it("re-checks a denial for a missing reference while the store catches up, then allows", async () => {
    world = [];
    setTimeout(() => (world = [{ object: policy }]), 150);
    const started = Date.now();
    const reply = await call(server.port, first.ca, { body: JSON.stringify(review(route)) });
    expect(JSON.parse(reply.body)).toMatchObject({ response: { allowed: true } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);

    // Still missing after the grace: denied, after about the grace.
    world = [];
    const deniedAt = Date.now();
    const denied = await call(server.port, first.ca, { body: JSON.stringify(review(route)) });
    expect(JSON.parse(denied.body)).toMatchObject({ response: { allowed: false } });
    expect(Date.now() - deniedAt).toBeGreaterThanOrEqual(550);
  });

  it("answers a review under way before it closes (a rollout does not cut the API server off)", async () => {
    const closing = await startWebhookServer({
      host: "127.0.0.1",
      port: 0,
      tls: () => first,
      world: () => [], // the route's ScopePolicy is missing: the denial is re-checked for 600 ms first
      logger,
      staleWorldGraceMs: 600,
    });
    const answer = call(closing.port, first.ca, { body: JSON.stringify(review(route, "uid-closing")) });
    await new Promise((resolve) => setTimeout(resolve, 150));
    const closed = closing.close();
    const reply = await answer;
    expect(reply.status).toBe(200);
    expect(JSON.parse(reply.body)).toMatchObject({ response: { uid: "uid-closing", allowed: false } });
    await closed;
    // Closed: nothing new is taken.
    await expect(call(closing.port, first.ca, { body: "{}" })).rejects.toThrow();
  });

  it("fits the re-check grace into the timeout the API server states for the call", async () => {
    expect(withinCallTimeout(1_000, "10s")).toBe(1_000);
    expect(withinCallTimeout(1_000, "1s")).toBe(500);
    expect(withinCallTimeout(1_000, "400ms")).toBe(100);
    expect(withinCallTimeout(1_000, "200ms")).toBe(0);
    expect(withinCallTimeout(1_000, null)).toBe(1_000);
    expect(withinCallTimeout(1_000, "soon")).toBe(1_000);
    // A denial that would be re-checked for 5 s is sent within a 1 s call.
    const patient = await startWebhookServer({
      host: "127.0.0.1",
      port: 0,
      tls: () => first,
      world: () => [],
      logger,
      staleWorldGraceMs: 5_000,
    });
    try {
      const started = Date.now();
      const reply = await call(patient.port, first.ca, {
        path: `${webhookPath}?timeout=1s`,
        body: JSON.stringify(review(route, "uid-short")),
      });
      expect(JSON.parse(reply.body)).toMatchObject({ response: { uid: "uid-short", allowed: false } });
      expect(Date.now() - started).toBeLessThan(1_000);
    } finally {
      await patient.close();
    }
  });

  it("serves a rotated certificate on new connections", async () => {
    world = [{ object: policy }];
    const before = await call(server.port, first.ca, { body: JSON.stringify(review(route)) });
    served = second;
    const after = await call(server.port, second.ca, { body: JSON.stringify(review(route)) });
    expect(after.status).toBe(200);
    expect(after.fingerprint).not.toBe(before.fingerprint);
    // The old CA no longer verifies what is served.
    await expect(call(server.port, first.ca, { body: "{}" })).rejects.toThrow();
  });
});
