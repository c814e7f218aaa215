// The operator's Kubernetes client without an API server: what happens around loading credentials. (Calls
// against a real API server are in test/k8s/cluster.test.ts.)
import { KubeConfig } from "@kubernetes/client-node";
import type { RequestOptions } from "node:https";
import { describe, expect, it } from "vitest";
import { createKubeClient, KubeApiError } from "../../src/operator/kube/kube-client.ts";

/** A kubeconfig whose credentials take `delayMs` to load (as an exec plugin does). Nothing listens on its server. */
class SlowCredentials extends KubeConfig {
  loads = 0;
  private readonly delayMs: number;
  constructor(delayMs: number) {
    super();
    this.delayMs = delayMs;
    this.loadFromOptions({
      clusters: [{ name: "c", server: "https://127.0.0.1:1", skipTLSVerify: false }],
      users: [{ name: "u", token: "not-a-real-token" }],
      contexts: [{ name: "x", cluster: "c", user: "u" }],
      currentContext: "x",
    });
  }
  override async applyToHTTPSOptions(options: RequestOptions): Promise<void> {
    this.loads += 1;
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    await super.applyToHTTPSOptions(options);
  }
}

describe("kube client", () => {
  it("a call whose credentials were still loading when the client closed fails as aborted and connects nowhere", async () => {
    const config = new SlowCredentials(200);
    const client = createKubeClient(config);
    const call = client.request({ method: "GET", path: "/api" }).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await client.close();
    const failure = await call;
    expect(failure).toBeInstanceOf(KubeApiError);
    expect((failure as KubeApiError).code).toBe("PG_ERR_KUBE_ABORTED");
    expect((failure as KubeApiError).message).toBe("GET /api: the client was closed");
    expect(config.loads).toBe(1);
  });
});
