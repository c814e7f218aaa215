// Distribution against a REAL kube-apiserver: gateways authenticate with audience-bound ServiceAccount tokens
// from the TokenRequest API, checked by real TokenReviews; revocations are authorised by real
// SubjectAccessReviews against RBAC. The distribution server itself runs under a ServiceAccount that holds only
// the two review permissions it needs.
import {
  AuthenticationV1TokenRequest,
  CoreV1Api,
  KubeConfig,
  V1TokenRequestSpec,
} from "@kubernetes/client-node";
import pino from "pino";
import { Registry } from "prom-client";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKubeTokenReviewer, ReviewUnavailableError } from "../../src/operator/kube/reviews.ts";
import {
  createDistributor,
  startDistributionServer,
  type DistributionServer,
  type Distributor,
} from "../../src/operator/distribute/index.ts";
import { fingerprintToken } from "../../src/tokens/fingerprint.ts";
import {
  compileSnapshot,
  controlPlaneGatewaySpec,
  eventually,
  readyz,
  startControlPlaneGateway,
  type ControlPlaneGateway,
} from "../helpers/control-plane-gateway.ts";
import { allManifests } from "../helpers/manifests.ts";
import { startTestCluster, type TestCluster } from "./harness/cluster.ts";

const startupTimeoutMs = 60 * 60_000;
const NS = "pg-dist";
const AUDIENCE = "phantomgate";

let cluster: TestCluster | undefined;
let admin: CoreV1Api;
let distributor: Distributor;
let server: DistributionServer | undefined;
let base: string;
const gateways: ControlPlaneGateway[] = [];
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

const c = (): TestCluster => {
  if (cluster === undefined) throw new Error("cluster not started");
  return cluster;
};

/** A token from the TokenRequest API for `namespace/name`, bound to `audiences`. */
async function requestToken(name: string, audiences?: string[]): Promise<string> {
  const body = new AuthenticationV1TokenRequest();
  body.apiVersion = "authentication.k8s.io/v1";
  body.kind = "TokenRequest";
  body.spec = new V1TokenRequestSpec();
  if (audiences !== undefined) body.spec.audiences = audiences;
  body.spec.expirationSeconds = 600;
  const answer = await admin.createNamespacedServiceAccountToken({ name, namespace: NS, body });
  const token = answer.status?.token;
  if (token === undefined) throw new Error(`no token for ${name}`);
  return token;
}

async function apply(yaml: string): Promise<void> {
  await c().kubectl(["apply", "-f", "-"], { input: yaml });
}

async function call(
  path: string,
  token: string | undefined,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const controller = new AbortController();
  const response = await request(`${base}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? null : JSON.stringify(body),
    signal: controller.signal,
  });
  if (response.statusCode === 200 && body === undefined) {
    // A stream: the status is the answer; hang up.
    controller.abort();
    await response.body.dump().catch(() => undefined);
    return { status: 200, text: "" };
  }
  return { status: response.statusCode, text: await response.body.text() };
}

beforeAll(async () => {
  cluster = await startTestCluster();
  const adminConfig = new KubeConfig();
  adminConfig.loadFromFile(cluster.kubeconfigPath);
  admin = adminConfig.makeApiClient(CoreV1Api);
  await c().kubectl(["create", "namespace", NS]);
  for (const name of ["operator", "gateway", "intruder", "revoker"]) {
    await c().kubectl(["create", "serviceaccount", name, "-n", NS]);
  }
  // Exactly what the distribution server needs from the API server.
  await apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: pg-dist-operator-reviews }
rules:
  - apiGroups: [authentication.k8s.io]
    resources: [tokenreviews]
    verbs: [create]
  - apiGroups: [authorization.k8s.io]
    resources: [subjectaccessreviews]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: pg-dist-operator-reviews }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pg-dist-operator-reviews }
subjects: [{ kind: ServiceAccount, name: operator, namespace: ${NS} }]
`);
  const operatorConfig = new KubeConfig();
  operatorConfig.loadFromFile(
    await c().writeTokenKubeconfig("pg-dist-operator", await requestToken("operator")),
  );
  distributor = createDistributor({ logger });
  server = await startDistributionServer({
    host: "127.0.0.1",
    port: 0,
    distributor,
    reviewer: createKubeTokenReviewer(operatorConfig, { revocationNamespace: NS }),
    audience: AUDIENCE,
    allowedServiceAccounts: [`${NS}:gateway`],
    logger,
    registry: new Registry(),
  });
  base = `http://127.0.0.1:${server.port}`;
}, startupTimeoutMs);

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await server?.close();
  await cluster?.stop();
}, 60_000);

describe("distribution with real TokenReview and SubjectAccessReview", () => {
  it("accepts a gateway's audience-bound ServiceAccount token: a real gateway streams, swaps and ACKs", async () => {
    const token = await requestToken("gateway", [AUDIENCE]);
    const gateway = await startControlPlaneGateway(controlPlaneGatewaySpec("gw-k8s-1", base, token));
    gateways.push(gateway);
    await eventually(() => distributor.fleet().connected === 1, 20_000, "gateway connected");
    const snapshot = compileSnapshot(
      allManifests({ issuer: "http://127.0.0.1:9", echoOrigin: "http://127.0.0.1:9" }),
    );
    distributor.publish(snapshot);
    await eventually(() => distributor.fleet().programmed === 1, 20_000, "gateway programmed");
    expect(distributor.fleet().gateways).toMatchObject([
      { name: "gw-k8s-1", connected: true, status: "ACK", revision: snapshot.revision },
    ]);
    const { status, body } = await readyz(gateway);
    expect(status).toBe(200);
    expect(body.revision).toBe(snapshot.revision);
  });

  it("rejects the same ServiceAccount's token for another audience, and a random string (401)", async () => {
    const apiAudience = await requestToken("gateway");
    const otherAudience = await requestToken("gateway", ["someone-else"]);
    for (const token of [apiAudience, otherAudience, "random-string-that-is-no-token"]) {
      const response = await call("/v1/stream?gateway=gw-x", token);
      expect(response.status).toBe(401);
      expect(JSON.parse(response.text)).toMatchObject({ code: "PG_ERR_DIST_TOKEN_INVALID" });
      expect(response.text).not.toContain(token);
    }
    expect((await call("/v1/stream?gateway=gw-x", undefined)).status).toBe(401);
  });

  it("refuses a ServiceAccount that is not an allowed gateway (403)", async () => {
    const token = await requestToken("intruder", [AUDIENCE]);
    expect((await call("/v1/stream?gateway=gw-x", token)).status).toBe(403);
    expect(
      (await call("/v1/acks", token, { gateway: "gw-k8s-1", revision: "x", status: "ACK" })).status,
    ).toBe(403);
  });

  it("authorises revocations with RBAC: 403 without a grant, 202 with a Role granting create on revocations.phantomgate.dev", async () => {
    const token = await requestToken("revoker", [AUDIENCE]);
    const body = { tokens: ["an-opaque-access-token"] };
    const refused = await call("/v1/revocations", token, body);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.text)).toMatchObject({ code: "PG_ERR_DIST_FORBIDDEN" });

    await apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: phantomgate-revoker, namespace: ${NS} }
rules:
  - apiGroups: [phantomgate.dev]
    resources: [revocations]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: phantomgate-revoker, namespace: ${NS} }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: phantomgate-revoker }
subjects: [{ kind: ServiceAccount, name: revoker, namespace: ${NS} }]
`);
    let accepted: { status: number; text: string } = refused;
    await eventually(
      async () => {
        accepted = await call("/v1/revocations", token, body);
        return accepted.status === 202;
      },
      20_000,
      "RBAC grant in effect",
    );
    expect(JSON.parse(accepted.text)).toEqual({ revoked: 1, gateways: 1 });
    expect(accepted.text).not.toContain("an-opaque-access-token");
    // A gateway's own token does not carry that permission.
    const gatewayToken = await requestToken("gateway", [AUDIENCE]);
    expect(
      (await call("/v1/revocations", gatewayToken, { fingerprints: [fingerprintToken("x")] })).status,
    ).toBe(403);
  });

  it("reports a reviewer without RBAC for reviews as unavailable, not as a bad token", async () => {
    const unprivileged = new KubeConfig();
    unprivileged.loadFromFile(
      await c().writeTokenKubeconfig("pg-dist-intruder", await requestToken("intruder")),
    );
    const reviewer = createKubeTokenReviewer(unprivileged);
    const token = await requestToken("gateway", [AUDIENCE]);
    const error = await reviewer.reviewToken(token, [AUDIENCE]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReviewUnavailableError);
    expect((error as Error).message).toBe("TokenReview: API server answered HTTP 403");
  });
});
