// Smoke test of the Kubernetes test harness: a real etcd + kube-apiserver with the stamped version, RBAC on,
// TokenRequest/TokenReview working for audience-bound ServiceAccount tokens, and a helm that talks to it; and the
// operator's own Kubernetes client loading its credentials from files.
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKubeClient, KubeApiError } from "../../src/operator/kube/kube-client.ts";
import { startTestCluster, type TestCluster } from "./harness/cluster.ts";

// The first run may build the Go binaries (tens of minutes on 2 cores) when globalSetup did not.
const startupTimeoutMs = 60 * 60_000;
const testTimeoutMs = 120_000;

let current: TestCluster | undefined;
const cluster = (): TestCluster => {
  if (current === undefined) throw new Error("cluster not started");
  return current;
};

beforeAll(async () => {
  current = await startTestCluster();
}, startupTimeoutMs);

afterAll(async () => {
  await current?.stop();
}, 60_000);

describe("test cluster (real etcd + kube-apiserver)", () => {
  it(
    "serves the stamped Kubernetes version",
    async () => {
      const { stdout } = await cluster().kubectl(["get", "--raw", "/version"]);
      const version = JSON.parse(stdout) as { gitVersion: string; major: string; minor: string };
      const expected = cluster().tools.kubeVersion;
      expect(version.gitVersion).toBe(expected);
      expect(`v${version.major}.${version.minor}.`).toBe(expected.slice(0, expected.lastIndexOf(".") + 1));
    },
    testTimeoutMs,
  );

  it(
    "issues audience-bound ServiceAccount tokens that TokenReview accepts for that audience only",
    async () => {
      const c = cluster();
      await c.kubectl(["create", "serviceaccount", "x", "-n", "default"]);
      const token = (
        await c.kubectl([
          "create",
          "token",
          "x",
          "-n",
          "default",
          "--audience",
          "phantomgate",
          "--duration",
          "10m",
        ])
      ).stdout.trim();
      expect(token.split(".")).toHaveLength(3);

      const review = async (audiences: string[]): Promise<TokenReviewStatus> => {
        const body = {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences },
        };
        const { stdout } = await c.kubectl(["create", "-f", "-", "-o", "json"], {
          input: JSON.stringify(body),
        });
        return (JSON.parse(stdout) as { status: TokenReviewStatus }).status;
      };
      const accepted = await review(["phantomgate"]);
      expect(accepted.authenticated).toBe(true);
      expect(accepted.audiences).toEqual(["phantomgate"]);
      expect(accepted.user?.username).toBe("system:serviceaccount:default:x");

      const otherAudience = await review(["someone-else"]);
      expect(otherAudience.authenticated).not.toBe(true);
    },
    testTimeoutMs,
  );

  it(
    "enforces RBAC: a ServiceAccount cannot list secrets, the admin can",
    async () => {
      const c = cluster();
      const asServiceAccount = await c.kubectl(
        ["auth", "can-i", "list", "secrets", "--as=system:serviceaccount:default:x"],
        { allowFailure: true },
      );
      expect(asServiceAccount.stdout.trim()).toBe("no");
      expect(asServiceAccount.exitCode).not.toBe(0);
      expect((await c.kubectl(["auth", "can-i", "list", "secrets"])).stdout.trim()).toBe("yes");

      // The same through the ServiceAccount's own token (default audience = the API server's).
      const token = (await c.kubectl(["create", "token", "x", "-n", "default"])).stdout.trim();
      const kubeconfig = await c.writeTokenKubeconfig("sa-x", token);
      const whoami = await c.kubectl(["--kubeconfig", kubeconfig, "auth", "whoami", "-o", "json"]);
      const review = JSON.parse(whoami.stdout) as { status: { userInfo: { username: string } } };
      expect(review.status.userInfo.username).toBe("system:serviceaccount:default:x");
      const secrets = await c.kubectl(["--kubeconfig", kubeconfig, "get", "secrets", "-n", "default"], {
        allowFailure: true,
      });
      expect(secrets.exitCode).not.toBe(0);
      expect(secrets.stderr).toMatch(/forbidden/i);
    },
    testTimeoutMs,
  );

  it(
    "runs helm against the cluster, with the API server's Kubernetes version stamped in",
    async () => {
      const c = cluster();
      expect((await c.helm(["version", "--template", "{{.Version}}"])).stdout.trim()).toBe(
        c.tools.helmVersion,
      );
      expect((await c.helm(["list", "--all-namespaces", "--output", "json"])).stdout.trim()).toBe("[]");

      const chart = join(c.dataDir, "smoke-chart");
      await mkdir(join(chart, "templates"), { recursive: true });
      await writeFile(join(chart, "Chart.yaml"), "apiVersion: v2\nname: smoke\nversion: 0.1.0\n");
      await writeFile(
        join(chart, "templates", "cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: smoke\ndata:\n" +
          '  kube: "{{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}"\n',
      );
      const { stdout } = await c.helm(["template", "smoke", chart]);
      const minor = c.tools.kubeVersion.split(".")[1];
      expect(stdout).toContain(`kube: "1.${minor}"`);
    },
    testTimeoutMs,
  );

  it(
    "the operator's Kubernetes client fails a call clearly while a credential file is missing, and works once it is there",
    async () => {
      const c = cluster();
      const dir = join(c.dataDir, "client-files");
      await mkdir(dir, { recursive: true });
      const certFile = join(dir, "admin.crt");
      const keyFile = join(dir, "admin.key");
      const kubeConfig = new KubeConfig();
      kubeConfig.loadFromOptions({
        clusters: [{ name: "test", server: c.server, caData: Buffer.from(c.caPem).toString("base64") }],
        users: [{ name: "admin", certFile, keyFile }],
        contexts: [{ name: "test", cluster: "test", user: "admin" }],
        currentContext: "test",
      });
      const client = createKubeClient(kubeConfig);
      try {
        const call = { method: "GET", path: "/api/v1/namespaces/default" } as const;
        const failure = await client.request(call).catch((error: unknown) => error);
        expect(failure).toBeInstanceOf(KubeApiError);
        expect((failure as KubeApiError).code).toBe("PG_ERR_KUBE_CREDENTIALS");
        expect((failure as KubeApiError).message).toContain(
          "GET /api/v1/namespaces/default: cannot load the credentials",
        );
        expect((failure as KubeApiError).message).toContain("admin.crt");

        // The files appear (a mounted secret filled late): the next call loads them, nothing of the failure kept.
        await writeFile(certFile, c.adminCert, { mode: 0o600 });
        await writeFile(keyFile, c.adminKey, { mode: 0o600 });
        const namespace = await client.request<{ metadata: { name: string } }>(call);
        expect(namespace.metadata.name).toBe("default");
      } finally {
        await client.close();
      }
    },
    testTimeoutMs,
  );

  it(
    "stop() ends both servers and removes the temp data dir",
    async () => {
      const c = cluster();
      await c.stop();
      for (const pid of [c.pids.etcd, c.pids.kubeApiserver]) {
        expect(() => process.kill(pid, 0)).toThrow();
      }
      expect(existsSync(c.dataDir)).toBe(false);
      await c.stop(); // idempotent
    },
    testTimeoutMs,
  );
});

interface TokenReviewStatus {
  authenticated?: boolean;
  audiences?: string[];
  user?: { username?: string };
  error?: string;
}
