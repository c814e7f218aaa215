// Failure paths with real processes: the authorization server down or slow, upstreams down or slow, live
// configuration changes under load, a broken manifest, and graceful shutdown.
import { writeFileSync } from "node:fs";
import type { Server } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { request } from "undici";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import { makeConfigDir, startGatewayProcess, type GatewayProcess } from "../helpers/gateway-process.ts";
import { getToken } from "../helpers/http.ts";
import { allManifests, routesYaml, type TestManifestOptions } from "../helpers/manifests.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setUp(options: Partial<TestManifestOptions> = {}): Promise<{
  as: DemoAuthServer;
  echo: { server: Server; port: number };
  gateway: GatewayProcess;
  manifest: TestManifestOptions;
}> {
  const as = await startDemoAuthServer({ port: 0 });
  cleanups.push(() => as.close().catch(() => undefined));
  const echo = await startEchoApi(0);
  cleanups.push(() => {
    echo.server.closeAllConnections();
    return new Promise((resolve) => echo.server.close(resolve));
  });
  const manifest: TestManifestOptions = {
    issuer: as.issuer,
    echoOrigin: `http://127.0.0.1:${echo.port}`,
    ...options,
  };
  const gateway = await startGatewayProcess(makeConfigDir(allManifests(manifest)));
  cleanups.push(() => gateway.stop());
  return { as, echo, gateway, manifest };
}

async function status(
  url: string,
  token?: string,
): Promise<{ status: number; headers: Record<string, unknown> }> {
  const response = await request(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  await response.body.dump();
  return { status: response.statusCode, headers: response.headers };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("condition not met in time");
}

describe("authorization server failures", () => {
  it("keeps serving cached tokens when the AS is down and fails closed with 503 + Retry-After for others", async () => {
    const { as, gateway } = await setUp();
    const cached = await getToken(as.tokenEndpoint, "read_invoice");
    const fresh = await getToken(as.tokenEndpoint, "read_invoice");
    expect((await status(`${gateway.url}/echo/a`, cached)).status).toBe(200);
    await as.close();
    expect((await status(`${gateway.url}/echo/b`, cached)).status).toBe(200);
    const refused = await status(`${gateway.url}/echo/c`, fresh);
    expect(refused.status).toBe(503);
    expect(refused.headers["retry-after"]).toBe("5");
  });

  it("times out a slow AS within the configured response timeout", async () => {
    const { as, gateway } = await setUp({ responseTimeoutMs: 300 });
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    as.setDelayMs(5_000);
    const started = Date.now();
    const response = await status(`${gateway.url}/echo/slow-as`, t);
    expect(response.status).toBe(503);
    expect(Date.now() - started).toBeLessThan(3_000);
    as.setDelayMs(0);
  });

  it("stops accepting a revoked token once its cached facts expire", async () => {
    const { as, gateway } = await setUp({ maxTtlSeconds: 1 });
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    expect((await status(`${gateway.url}/echo/r`, t)).status).toBe(200);
    const basic = Buffer.from("demo-client:demo-secret").toString("base64");
    const revoked = await fetch(as.revocationEndpoint, {
      method: "POST",
      headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: t }),
    });
    expect(revoked.status).toBe(200);
    await waitFor(async () => (await status(`${gateway.url}/echo/r`, t)).status === 401, 5_000);
  });
});

describe("upstream failures", () => {
  it("answers 504 when the upstream is too slow and 502 when it refuses connections", async () => {
    const { as, gateway } = await setUp({ requestTimeoutMs: 300 });
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    expect((await status(`${gateway.url}/echo/slow?ms=2000`, t)).status).toBe(504);
  });

  it("answers 502 when the upstream is down", async () => {
    const { as, gateway, echo } = await setUp();
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    echo.server.closeAllConnections();
    await new Promise((resolve) => echo.server.close(resolve));
    expect((await status(`${gateway.url}/echo/down`, t)).status).toBe(502);
  });
});

describe("live configuration", () => {
  it("swaps configuration under load with zero failed requests", async () => {
    const { as, gateway, manifest } = await setUp();
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    const failures: number[] = [];
    let sent = 0;
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        const response = await status(`${gateway.url}/echo/load`, t);
        sent += 1;
        if (response.status !== 200) failures.push(response.status);
      }
    };
    const workers = Array.from({ length: 8 }, () => worker());
    const routesFile = join(gateway.configDir, "routes.yaml");
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      const extra = `---
apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata:
  name: extra-${i}
spec:
  rules:
    - matches:
        - path: { type: PathPrefix, value: /extra${i} }
      authentication:
        mode: none
      backendRefs:
        - url: ${manifest.echoOrigin}
`;
      writeFileSync(routesFile, routesYaml(manifest) + extra);
    }
    await waitFor(async () => (await status(`${gateway.url}/extra4/x`)).status === 200);
    stop = true;
    await Promise.all(workers);
    expect(sent).toBeGreaterThan(50);
    expect(failures).toEqual([]);
  });

  it("keeps the last good snapshot when a file breaks, and reports it on /readyz and /metrics", async () => {
    const { as, gateway, manifest } = await setUp();
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    const before = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as { revision: string };
    writeFileSync(join(gateway.configDir, "routes.yaml"), "kind: ApiRoute\nspec: [unclosed\n");
    await waitFor(async () => {
      const ready = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as { problems: unknown[] };
      return ready.problems.length > 0;
    });
    const during = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as {
      revision: string;
      ready: boolean;
      problems: { file?: string }[];
    };
    expect(during.ready).toBe(true);
    expect(during.revision).toBe(before.revision);
    expect(during.problems[0]?.file).toContain("routes.yaml");
    expect((await status(`${gateway.url}/echo/still`, t)).status).toBe(200);
    expect(await (await fetch(`${gateway.adminUrl}/metrics`)).text()).toMatch(
      /phantomgate_config_errors_total\{kind="file"\} [1-9]/,
    );
    writeFileSync(join(gateway.configDir, "routes.yaml"), routesYaml(manifest));
    await waitFor(async () => {
      const ready = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as { problems: unknown[] };
      return ready.problems.length === 0;
    });
  });
});

describe("graceful shutdown", () => {
  it("drains an in-flight request on SIGTERM, then exits 0", async () => {
    const { as, gateway } = await setUp();
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    const inflight = status(`${gateway.url}/echo/slow?ms=1000`, t);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const exited = gateway.stop();
    expect((await inflight).status).toBe(200);
    expect(await exited).toBe(0);
  });
});
