// Failure paths with real processes: the authorization server down or slow, upstreams down or slow, body limits,
// slow and vanishing clients, upstreams breaking mid-body, live configuration changes under load, a broken
// manifest, and graceful shutdown.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import {
  createServer,
  get,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { request } from "undici";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import {
  makeConfigDir,
  spawnGateway,
  startGatewayProcess,
  type GatewayProcess,
} from "../helpers/gateway-process.ts";
import { getToken, rawRequest } from "../helpers/http.ts";
import { allManifests, routesYaml, type TestManifestOptions } from "../helpers/manifests.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setUp(
  options: Partial<TestManifestOptions> = {},
  extraArgs: readonly string[] = [],
): Promise<{
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
  const gateway = await startGatewayProcess(makeConfigDir(allManifests(manifest)), extraArgs);
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

/** A throwaway upstream on 127.0.0.1 for one test; returns its origin. */
async function startUpstream(listener: RequestListener): Promise<string> {
  const server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Writes 64 KiB chunks while the socket takes them, until `more` says stop; then ends unless `end` is false. */
function pump(res: ServerResponse, more: () => boolean, onChunk: (chunk: Buffer) => void, end = true): void {
  let i = 0;
  const write = (): void => {
    while (more()) {
      const chunk = Buffer.alloc(64 * 1024, i++ % 251);
      onChunk(chunk);
      if (!res.write(chunk)) {
        res.once("drain", write);
        return;
      }
    }
    if (end) res.end();
  };
  write();
}

function httpGet(url: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => get(url, resolve).on("error", reject));
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) =>
      setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms),
    ),
  ]);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function auditLines(gateway: GatewayProcess): Record<string, unknown>[] {
  return readFileSync(gateway.auditFile, "utf8")
    .split("\n")
    .filter((l) => l.endsWith("}"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The gateway's log lines (pino JSON on stdout) whose message is `msg`. */
function logLines(gateway: GatewayProcess, msg: string): Record<string, unknown>[] {
  return gateway
    .output()
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line["msg"] === msg);
}

async function waitForAuditLine(
  gateway: GatewayProcess,
  match: (line: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  await waitFor(() => {
    found = auditLines(gateway).find(match);
    return Promise.resolve(found !== undefined);
  });
  return found!;
}

function auditLineFor(gateway: GatewayProcess, requestId: string): Promise<Record<string, unknown>> {
  return waitForAuditLine(gateway, (line) => line["requestId"] === requestId);
}

async function inflight(gateway: GatewayProcess): Promise<number> {
  const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
  return Number(/^phantomgate_inflight_requests (\d+)$/m.exec(text)?.[1]);
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

  it("says why in the audit line, logs a failing AS once (not per request) and logs when it answers again", async () => {
    const { as, gateway } = await setUp({ responseTimeoutMs: 300 });
    const tokens = await Promise.all([1, 2, 3, 4].map(() => getToken(as.tokenEndpoint, "read_invoice")));
    expect((await status(`${gateway.url}/echo/discovered`, tokens[3])).status).toBe(200);
    as.setDelayMs(5_000);
    for (const [index, token] of tokens.slice(0, 2).entries()) {
      const response = await request(`${gateway.url}/echo/slow-as-${index}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await response.body.dump();
      expect(response.statusCode).toBe(503);
      expect(await auditLineFor(gateway, String(response.headers["x-request-id"]))).toMatchObject({
        decision: "error",
        reason: "PG_ERR_AS_UNAVAILABLE",
        detail: "introspection: no answer within 300 ms",
        cache: "miss",
      });
    }
    as.setDelayMs(0);
    expect((await status(`${gateway.url}/echo/as-back`, tokens[2])).status).toBe(200);
    // Two failures within the 10 s interval: one warning, with the reason; then one line for the recovery.
    const warnings = logLines(
      gateway,
      "call to the authorization server failed: requests whose token is not cached get 503",
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({
      level: 40,
      endpoint: "introspection",
      outcome: "timeout",
      reason: "introspection: no answer within 300 ms",
    });
    await waitFor(() =>
      Promise.resolve(logLines(gateway, "authorization server answering again").length === 1),
    );
    expect(logLines(gateway, "authorization server answering again")[0]).toMatchObject({
      level: 30,
      endpoint: "introspection",
      failures: 2,
    });
    for (const token of tokens) expect(gateway.output()).not.toContain(token);
  });

  it("answers 503 at once past --max-pending-as-calls while the AS is slow; cached tokens keep working", async () => {
    const { as, gateway } = await setUp({ responseTimeoutMs: 5_000 }, ["--max-pending-as-calls", "2"]);
    const cached = await getToken(as.tokenEndpoint, "read_invoice");
    expect((await status(`${gateway.url}/echo/warm`, cached)).status).toBe(200);
    const fresh = await Promise.all(
      Array.from({ length: 5 }, () => getToken(as.tokenEndpoint, "read_invoice")),
    );
    as.setDelayMs(1_500);
    const started = Date.now();
    const pending = fresh.map((token, index) =>
      status(`${gateway.url}/echo/flood-${index}`, token).then((response) => ({
        ...response,
        ms: Date.now() - started,
      })),
    );
    await sleep(300);
    // While two calls wait for the AS, a cached token is served without waiting for it.
    const hit = Date.now();
    expect((await status(`${gateway.url}/echo/cached`, cached)).status).toBe(200);
    expect(Date.now() - hit).toBeLessThan(500);
    const responses = await Promise.all(pending);
    const refused = responses.filter((response) => response.status === 503);
    expect(responses.filter((response) => response.status === 200)).toHaveLength(2);
    expect(refused).toHaveLength(3);
    for (const response of refused) {
      expect(response.headers["retry-after"]).toBe("5");
      expect(response.ms).toBeLessThan(1_000);
    }
    const line = await waitForAuditLine(gateway, (entry) => entry["status"] === 503);
    expect(line).toMatchObject({ decision: "error", reason: "PG_ERR_AS_UNAVAILABLE" });
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(
      /phantomgate_as_requests_total\{[^}]*endpoint="introspection",outcome="overloaded"\} 3/,
    );
    as.setDelayMs(0);
  });

  it("bounds the new tokens one client has checked at once (429), counting tokens, not requests, and per client", async () => {
    const { as, gateway } = await setUp({ responseTimeoutMs: 5_000 }, ["--max-new-tokens-per-client", "2"]);
    const cached = await getToken(as.tokenEndpoint, "read_invoice");
    expect((await status(`${gateway.url}/echo/warm`, cached)).status).toBe(200);
    const fresh = await Promise.all(
      Array.from({ length: 5 }, () => getToken(as.tokenEndpoint, "read_invoice")),
    );
    const [first, second, third, fourth, other] = fresh as [string, string, string, string, string];
    as.setDelayMs(1_500);
    const started = Date.now();
    // `localAddress`: another client, on the same loopback interface from another source address.
    const timed = (
      token: string,
      path: string,
      localAddress = "127.0.0.1",
    ): Promise<{ status: number; headers: Record<string, unknown>; ms: number }> =>
      new Promise((resolve, reject) => {
        get(
          {
            host: "127.0.0.1",
            port: gateway.port,
            path,
            localAddress,
            agent: false,
            headers: { authorization: `Bearer ${token}` },
          },
          (response) => {
            response.resume();
            response.on("end", () =>
              resolve({
                status: response.statusCode ?? 0,
                headers: response.headers,
                ms: Date.now() - started,
              }),
            );
          },
        ).on("error", reject);
      });
    // Six requests with the first token (a page loading) and one with the second: two tokens, two places. Five of
    // the first token's arrive once both places are taken: they join the check under way.
    const introspectionsBefore = as.stats.introspections;
    const firstWave = [timed(first, "/echo/page-0"), timed(second, "/echo/second")];
    await sleep(200);
    firstWave.push(...Array.from({ length: 5 }, (_, index) => timed(first, `/echo/page-${index + 1}`)));
    await sleep(200);
    // A third and a fourth new token from the same client are refused at once, without a call to the AS.
    const refused = await Promise.all([timed(third, "/echo/third"), timed(fourth, "/echo/fourth")]);
    for (const response of refused) {
      expect(response.status).toBe(429);
      expect(response.headers["retry-after"]).toBe("1");
      expect(response.ms).toBeLessThan(1_000);
    }
    // A cached token of the same client passes at once: the bound is on checks at the AS only.
    const cachedAtBound = await timed(cached, "/echo/cached");
    expect(cachedAtBound.status).toBe(200);
    expect(cachedAtBound.ms).toBeLessThan(1_200);
    // Another client's new token still gets its check.
    const fromElsewhere = timed(other, "/echo/elsewhere", "127.0.0.2");
    expect((await Promise.all(firstWave)).map((response) => response.status)).toEqual(
      Array.from({ length: 7 }, () => 200),
    );
    expect((await fromElsewhere).status).toBe(200);
    // The first and second tokens and the other client's: the refused ones cost the AS nothing.
    expect(as.stats.introspections - introspectionsBefore).toBe(3);
    as.setDelayMs(0);
    // The places went back: the refused tokens pass now.
    expect((await timed(third, "/echo/third-again")).status).toBe(200);
    expect((await timed(fourth, "/echo/fourth-again")).status).toBe(200);
    // A refused token gives its place back too (the check failed): three of them, then a new valid one.
    for (let i = 0; i < 3; i++) expect((await timed(`unknown-${i}`, "/echo/unknown")).status).toBe(401);
    const another = await getToken(as.tokenEndpoint, "read_invoice");
    expect((await timed(another, "/echo/another")).status).toBe(200);
    const line = await waitForAuditLine(gateway, (entry) => entry["status"] === 429);
    expect(line).toMatchObject({
      decision: "deny",
      reason: "PG_ERR_TOO_MANY_NEW_TOKENS",
      detail:
        "tokens of this client (127.0.0.1) being checked at the authorization server already: 2 (--max-new-tokens-per-client)",
    });
    // Refused before any check: neither a cache hit nor a miss.
    expect(line).not.toHaveProperty("cache");
    for (const token of fresh) expect(gateway.output()).not.toContain(token);
  });

  it("with --trust-forwarded counts new tokens under the address the proxy in front saw; 0 turns the bound off", async () => {
    const { as, gateway } = await setUp({ responseTimeoutMs: 5_000 }, [
      "--max-new-tokens-per-client",
      "1",
      "--trust-forwarded",
    ]);
    const fresh = await Promise.all(
      Array.from({ length: 4 }, () => getToken(as.tokenEndpoint, "read_invoice")),
    );
    as.setDelayMs(800);
    const send = (token: string, forwardedFor: string): Promise<number> =>
      request(`${gateway.url}/echo/fwd`, {
        headers: { authorization: `Bearer ${token}`, "x-forwarded-for": forwardedFor },
      }).then(async (response) => {
        await response.body.dump();
        return response.statusCode;
      });
    // A token another client's check covers joins that check, also for a client at its bound.
    const [checking, atBound] = [send(fresh[0]!, "198.51.100.10"), send(fresh[1]!, "198.51.100.11")];
    await sleep(200);
    expect(await send(fresh[0]!, "198.51.100.11")).toBe(200);
    expect([await checking, await atBound]).toEqual([200, 200]);
    const more = await Promise.all(
      Array.from({ length: 4 }, () => getToken(as.tokenEndpoint, "read_invoice")),
    );
    // The client's own entries (before the last) do not make it another client; the proxy's entry does.
    const statuses = await Promise.all([
      send(more[0]!, "198.51.100.1, 203.0.113.7"),
      send(more[1]!, "198.51.100.2, 203.0.113.7:50123"),
      send(more[2]!, "2001:db8:0:1::5"),
      send(more[3]!, "[2001:db8:0:2:ffff::9]:443"),
    ]);
    expect([...statuses].sort()).toEqual([200, 200, 429, 429]);
    expect(statuses[0] + statuses[1]).toBe(629);
    expect(statuses[2] + statuses[3]).toBe(629);

    // jwt mode verifies locally: JWTs take no places, even with the JWKS still to fetch.
    const jwts = await Promise.all(
      Array.from({ length: 4 }, () =>
        getToken(as.tokenEndpoint, "read_invoice", { resource: "urn:phantomgate:jwt-api" }),
      ),
    );
    const byValue = await Promise.all(
      jwts.map((jwt) =>
        request(`${gateway.url}/byvalue/x`, {
          headers: { authorization: `Bearer ${jwt}`, "x-forwarded-for": "203.0.113.99" },
        }).then(async (response) => {
          await response.body.dump();
          return response.statusCode;
        }),
      ),
    );
    expect(byValue).toEqual([200, 200, 200, 200]);

    const { as: as2, gateway: unbounded } = await setUp({ responseTimeoutMs: 5_000 }, [
      "--max-new-tokens-per-client",
      "0",
    ]);
    const twenty = await Promise.all(
      Array.from({ length: 20 }, () => getToken(as2.tokenEndpoint, "read_invoice")),
    );
    as2.setDelayMs(300);
    const all = await Promise.all(twenty.map((token) => status(`${unbounded.url}/echo/any`, token)));
    expect(all.map((response) => response.status)).toEqual(Array.from({ length: 20 }, () => 200));
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

  it("cuts a response whose body stalls longer than the route's timeout, and audits the upstream status", async () => {
    const origin = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": 1024 * 1024 });
      res.write(Buffer.alloc(16 * 1024, 1)); // then nothing more, the connection left open
    });
    const { gateway } = await setUp({ echoOrigin: origin, requestTimeoutMs: 300 });
    const started = Date.now();
    const response = await request(`${gateway.url}/public/stalls`);
    expect(response.statusCode).toBe(200);
    await expect(response.body.arrayBuffer()).rejects.toThrow();
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(5_000);
    const requestId = String(response.headers["x-request-id"]);
    expect(await auditLineFor(gateway, requestId)).toMatchObject({
      status: 200,
      upstreamStatus: 200,
      decision: "allow",
      reason: "PG_ERR_UPSTREAM_TIMEOUT",
      detail: "upstream timed out",
    });
    // Counted as a 200 by phantomgate_requests_total, and as cut here.
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(
      /phantomgate_responses_cut_total\{route="[^"]+",reason="PG_ERR_UPSTREAM_TIMEOUT"\} 1/,
    );
    expect(logLines(gateway, "upstream failed")).toMatchObject([
      { level: 40, upstream: origin, code: "PG_ERR_UPSTREAM_TIMEOUT" },
    ]);
  });

  it("lets a slow upload and a slow download finish while neither side goes quiet for the timeout", async () => {
    const origin = await startUpstream((req, res) => {
      let bytes = 0;
      req.on("data", (chunk: Buffer) => (bytes += chunk.length));
      req.on("end", () => {
        // 6 chunks 150 ms apart: 750 ms in all, more than twice the 300 ms timeout, never 300 ms quiet.
        res.writeHead(200, { "content-type": "text/plain" });
        let sent = 0;
        const tick = setInterval(() => {
          res.write(`${bytes}:${sent}\n`);
          sent += 1;
          if (sent === 6) {
            clearInterval(tick);
            res.end();
          }
        }, 150);
      });
    });
    const { gateway } = await setUp({ echoOrigin: origin, requestTimeoutMs: 300 });
    const upload = async function* (): AsyncGenerator<Buffer> {
      for (let i = 0; i < 5; i++) {
        await new Promise((resolve) => setTimeout(resolve, 150));
        yield Buffer.alloc(1000, 97);
      }
    };
    const response = await request(`${gateway.url}/public/slow-both`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: Readable.from(upload()),
    });
    expect(response.statusCode).toBe(200);
    expect(await response.body.text()).toBe(Array.from({ length: 6 }, (_, i) => `5000:${i}\n`).join(""));
  });

  it("answers 503 at once past --max-upstream-requests in flight to one upstream, and frees the places after", async () => {
    const origin = await startUpstream((_req, res) => {
      setTimeout(() => res.end("slow"), 1_000);
    });
    const { gateway } = await setUp({ echoOrigin: origin }, ["--max-upstream-requests", "2"]);
    const started = Date.now();
    const responses = await Promise.all(
      [0, 1, 2, 3].map(async (index) => {
        // Staggered, so the first two are in flight before the others arrive.
        await sleep(index * 50);
        const response = await request(`${gateway.url}/public/held-${index}`);
        await response.body.dump();
        return { status: response.statusCode, headers: response.headers, ms: Date.now() - started };
      }),
    );
    expect(responses.map((response) => response.status)).toEqual([200, 200, 503, 503]);
    for (const refused of responses.slice(2)) {
      expect(refused.headers["retry-after"]).toBe("5");
      expect(refused.ms).toBeLessThan(800);
      expect(await auditLineFor(gateway, String(refused.headers["x-request-id"]))).toMatchObject({
        decision: "error",
        reason: "PG_ERR_UPSTREAM_OVERLOADED",
        detail: "2 requests in flight to the upstream already (--max-upstream-requests)",
      });
    }
    // The places went back when the first two ended, and so do those of clients that leave mid-request.
    for (let i = 0; i < 3; i++) {
      const socket = connect(gateway.port, "127.0.0.1");
      socket.on("error", () => undefined);
      socket.write(`GET /public/left-${i} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await sleep(100);
      socket.destroy();
    }
    await sleep(1_200);
    const after = await Promise.all([0, 1].map((i) => status(`${gateway.url}/public/after-${i}`)));
    expect(after.map((response) => response.status)).toEqual([200, 200]);
  });

  it("answers 502 when the upstream is down", async () => {
    const { as, gateway, echo } = await setUp();
    const t = await getToken(as.tokenEndpoint, "read_invoice");
    echo.server.closeAllConnections();
    await new Promise((resolve) => echo.server.close(resolve));
    const down = await request(`${gateway.url}/echo/down`, { headers: { authorization: `Bearer ${t}` } });
    await down.body.dump();
    expect(down.statusCode).toBe(502);
    expect(await auditLineFor(gateway, String(down.headers["x-request-id"]))).toMatchObject({
      decision: "error",
      reason: "PG_ERR_UPSTREAM_UNAVAILABLE",
      detail: "upstream failed: ECONNREFUSED",
    });
    // An upload cut short by the failure leaves the rest of its body unread: the connection is closed, or the
    // unread bytes would stall it (or be read as the next request).
    const upload = await rawRequest(
      gateway.port,
      [
        "POST /echo/down HTTP/1.1",
        "Host: localhost",
        `Authorization: Bearer ${t}`,
        "Content-Type: application/octet-stream",
        "Content-Length: 100000",
      ],
      "x".repeat(1000),
    );
    expect(upload.status).toBe(502);
    expect(upload.head).toMatch(/\r\nconnection: close(\r\n|$)/i);
  });
});

describe("behind a trusted proxy", () => {
  it("with --trust-forwarded appends to the client's X-Forwarded-For and Forwarded, and audits the chain", async () => {
    const { gateway } = await setUp({}, ["--trust-forwarded"]);
    const response = await request(`${gateway.url}/public/behind-lb`, {
      headers: { "x-forwarded-for": "203.0.113.7, 198.51.100.2", forwarded: "for=203.0.113.7;proto=https" },
    });
    const echo = (await response.body.json()) as { headers: Record<string, string> };
    expect(echo.headers["x-forwarded-for"]).toBe("203.0.113.7, 198.51.100.2, 127.0.0.1");
    expect(echo.headers["forwarded"]).toBe(
      'for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host="127.0.0.1:' + String(gateway.port) + '"',
    );
    expect(await auditLineFor(gateway, String(response.headers["x-request-id"]))).toMatchObject({
      remoteAddress: "127.0.0.1",
      forwardedFor: "203.0.113.7, 198.51.100.2",
    });
  });

  it("without it replaces them, and audits no chain a client could have made up", async () => {
    const { gateway } = await setUp();
    const response = await request(`${gateway.url}/public/direct`, {
      headers: { "x-forwarded-for": "203.0.113.7", forwarded: "for=203.0.113.7" },
    });
    const echo = (await response.body.json()) as { headers: Record<string, string> };
    expect(echo.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(echo.headers["forwarded"]).not.toContain("203.0.113.7");
    const line = await auditLineFor(gateway, String(response.headers["x-request-id"]));
    expect(line["forwardedFor"]).toBeUndefined();
  });
});

describe("token cache bounds", () => {
  it("keeps the token cache within --token-cache-max-bytes, evicting the least recently used tokens", async () => {
    const { as, gateway } = await setUp({}, ["--token-cache-max-bytes", "1048576"]);
    const tokens: string[] = [];
    const fetchSome = async (): Promise<void> => {
      while (tokens.length < 800) tokens.push(await getToken(as.tokenEndpoint, "read_invoice"));
    };
    await Promise.all(Array.from({ length: 8 }, fetchSome));
    let next = 0;
    const send = async (): Promise<void> => {
      while (next < tokens.length) {
        const token = tokens[next++];
        expect((await status(`${gateway.url}/echo/bounded`, token)).status).toBe(200);
      }
    };
    await Promise.all(Array.from({ length: 8 }, send));
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text();
    const bytes = Number(/^phantomgate_token_cache_bytes (\d+)$/m.exec(metrics)?.[1]);
    const evictions = Number(
      /^phantomgate_token_cache_evictions_total\{reason="capacity"\} (\d+)$/m.exec(metrics)?.[1],
    );
    expect(bytes).toBeGreaterThan(512 * 1024);
    expect(bytes).toBeLessThanOrEqual(1_048_576);
    expect(evictions).toBeGreaterThan(0);
    // The most recent token is still cached: it is served without the AS.
    await as.close();
    expect((await status(`${gateway.url}/echo/bounded`, tokens[tokens.length - 1])).status).toBe(200);
  });
});

describe("connection limits", () => {
  it("drops connections past --max-connections on arrival, counts and logs them, and keeps the admin port answering", async () => {
    const { gateway } = await setUp({}, ["--max-connections", "4"]);
    /** A raw keep-alive connection that sent one request; resolves with the status line it got, "" when none. */
    const open = (): Promise<{ socket: Socket; statusLine: string }> =>
      new Promise((resolve) => {
        const socket = connect(gateway.port, "127.0.0.1");
        let data = "";
        socket.setEncoding("latin1");
        socket.on("error", () => undefined);
        socket.on("data", (chunk: string) => {
          data += chunk;
          if (data.includes("\r\n\r\n")) resolve({ socket, statusLine: data.split("\r\n")[0] ?? "" });
        });
        socket.on("close", () => resolve({ socket, statusLine: data.split("\r\n")[0] ?? "" }));
        socket.write("GET /public/held HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
      });
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await open());
    expect(held.map((c) => c.statusLine)).toEqual(Array.from({ length: 4 }, () => "HTTP/1.1 200 OK"));
    const refused = await open();
    expect(refused.statusLine).toBe("");
    expect(refused.socket.destroyed).toBe(true);
    expect((await request(`${gateway.adminUrl}/healthz`)).statusCode).toBe(200);
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(/^phantomgate_connections_dropped_total 1$/m);
    expect(logLines(gateway, "connection dropped on arrival: --max-connections reached")).toMatchObject([
      { level: 40, maxConnections: 4 },
    ]);
    // One held connection goes: a new one is served.
    held[0]?.socket.destroy();
    await sleep(100);
    const again = await open();
    expect(again.statusLine).toBe("HTTP/1.1 200 OK");
    for (const connection of [...held, again]) connection.socket.destroy();
  });
});

describe("request body limits", () => {
  it("lets a client still sending a refused body read the whole 413 (lingering close, no reset)", async () => {
    const { gateway } = await setUp({ maxBodyBytes: 1024 });
    // Each client sends its head and 8 MiB of body at once, as an upload does: the gateway answers 413 after the
    // head. A connection closed with unread bytes would be reset, and the reset can take the answer with it.
    const attempt = (): Promise<{ head: string; error: string | undefined }> =>
      new Promise((resolve) => {
        const socket = connect(gateway.port, "127.0.0.1");
        let data = "";
        let error: string | undefined;
        socket.setEncoding("latin1");
        socket.on("data", (chunk: string) => (data += chunk));
        socket.on("error", (failure: NodeJS.ErrnoException) => (error = failure.code ?? failure.message));
        socket.on("close", () => resolve({ head: data.split("\r\n")[0] ?? "", error }));
        const size = 8 * 1024 * 1024;
        socket.write(
          `POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${size}\r\n\r\n`,
        );
        socket.write(Buffer.alloc(size, 0x61), () => undefined);
      });
    const results = await Promise.all(Array.from({ length: 10 }, () => attempt()));
    expect(results).toEqual(
      Array.from({ length: 10 }, () => ({ head: "HTTP/1.1 413 Payload Too Large", error: undefined })),
    );
  });

  it("does not run a request pipelined behind a refused body once it answered Connection: close", async () => {
    const { gateway, echo } = await setUp({ maxBodyBytes: 1024 });
    const upstreamSaw: string[] = [];
    echo.server.on("request", (req: IncomingMessage) => upstreamSaw.push(`${req.method} ${req.url}`));

    // Warm the gateway's keep-alive pool to the upstream.
    for (let i = 0; i < 3; i++) {
      const warm = await fetch(`http://127.0.0.1:${gateway.port}/public/warm`);
      await warm.arrayBuffer();
    }
    upstreamSaw.length = 0;
    const socket = connect({ port: gateway.port, host: "127.0.0.1", allowHalfOpen: true });
    let data = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (data += chunk));
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    // 413 for the declared length; the gateway lingers to read the 2,048 bytes.
    socket.write(
      "POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 2048\r\n\r\n",
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(data.split("\r\n")[0]).toBe("HTTP/1.1 413 Payload Too Large");
    expect(data.toLowerCase()).toContain("connection: close");
    // The rest of the body, then a second request on the same connection.
    socket.write(
      Buffer.concat([
        Buffer.alloc(2048, 0x61),
        Buffer.from(
          "DELETE /public/side-effect HTTP/1.1\r\nHost: x\r\n\r\n" +
            "PUT /public/side-effect HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".repeat(50),
        ),
      ]),
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    socket.destroy();
    // RFC 9112 §9.6: after sending close the server SHOULD NOT process further requests on that connection.
    expect(upstreamSaw).toEqual([]);
    // Not run, but it arrived: the audit trail says so, once per connection (a line for each of the 50 requests
    // behind it would let a client make ~15 times its bytes in audit lines).
    expect(await waitForAuditLine(gateway, (line) => line["method"] === "DELETE")).toMatchObject({
      host: "x",
      decision: "abort",
      reason: "PG_ERR_CONNECTION_CLOSING",
      status: 503,
      remoteAddress: "127.0.0.1",
    });
    await sleep(300);
    expect(auditLines(gateway).filter((line) => line["reason"] === "PG_ERR_CONNECTION_CLOSING")).toHaveLength(
      1,
    );
    const metrics = await (await request(`${gateway.adminUrl}/metrics`)).body.text();
    expect(metrics).toMatch(
      /^phantomgate_requests_total\{route="none",method="DELETE",status="503",decision="abort"\} 1$/m,
    );
    expect(metrics).not.toMatch(/method="PUT",status="503"/);
  }, 20_000);

  /**
   * Sends a POST declaring `length` body bytes to `port`, then `chunk` bytes every `everyMs` until the body is
   * whole or the gateway answers; resolves with the status line and the time it took.
   */
  function trickle(
    port: number,
    length: number,
    chunk: number,
    everyMs: number,
  ): Promise<{ statusLine: string; body: string; ms: number }> {
    return new Promise((resolve) => {
      const started = Date.now();
      const socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
      let data = "";
      let sent = 0;
      socket.setEncoding("latin1");
      socket.on("error", () => undefined);
      const tick = setInterval(() => {
        if (sent >= length || socket.destroyed || data !== "") return;
        const size = Math.min(chunk, length - sent);
        sent += size;
        socket.write(Buffer.alloc(size, 0x61));
      }, everyMs);
      const done = (): void => {
        clearInterval(tick);
        socket.destroy();
        const [head = "", body = ""] = data.split("\r\n\r\n");
        resolve({ statusLine: head.split("\r\n")[0] ?? "", body, ms: Date.now() - started });
      };
      socket.on("data", (text: string) => {
        data += text;
        const [head, body] = data.split("\r\n\r\n");
        const declared = /content-length: (\d+)/i.exec(head ?? "")?.[1];
        if (body !== undefined && declared !== undefined && body.length >= Number(declared)) done();
      });
      socket.on("close", done);
      socket.write(
        `POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${length}\r\n\r\n`,
      );
    });
  }

  it("answers 408 when a request body stalls for the route's timeout (the client is late, not the upstream)", async () => {
    const { gateway } = await setUp({ requestTimeoutMs: 500 });
    // 10 bytes of a declared 1,000, then nothing.
    const answer = await trickle(gateway.port, 1_000, 10, 60_000);
    expect(answer.statusLine).toBe("HTTP/1.1 408 Request Timeout");
    expect(JSON.parse(answer.body)).toMatchObject({ code: "PG_ERR_REQUEST_TIMEOUT" });
    expect(answer.ms).toBeGreaterThanOrEqual(400);
    expect(answer.ms).toBeLessThan(3_000);
    const line = await waitForAuditLine(gateway, (entry) => entry["status"] === 408);
    expect(line).toMatchObject({
      decision: "deny",
      reason: "PG_ERR_REQUEST_TIMEOUT",
      detail: "request body stalled: no bytes for 500 ms",
    });
    // Not an upstream failure: nothing about the upstream is logged.
    expect(logLines(gateway, "upstream failed")).toEqual([]);
  });

  it("cuts a body trickled below --min-body-rate once the route's timeout passed, and takes one that keeps the rate", async () => {
    const { gateway } = await setUp({ requestTimeoutMs: 500 }, ["--min-body-rate", "1000"]);
    // 10 bytes every 100 ms (100 B/s): never silent for 500 ms, but behind 1,000 B/s after the first 500 ms.
    const slow = await trickle(gateway.port, 300, 10, 100);
    expect(slow.statusLine).toBe("HTTP/1.1 408 Request Timeout");
    expect(slow.ms).toBeLessThan(2_500);
    const line = await waitForAuditLine(gateway, (entry) => entry["status"] === 408);
    expect(String(line["detail"])).toMatch(
      /^request body too slow: \d+ bytes in \d+\.\d s \(--min-body-rate 1000\)$/,
    );
    // 2,000 bytes every 100 ms (20 KB/s) for 2 s: longer than the route's timeout, but at the rate.
    const steady = await trickle(gateway.port, 40_000, 2_000, 100);
    expect(steady.statusLine).toBe("HTTP/1.1 200 OK");
    expect(steady.ms).toBeGreaterThan(1_500);

    // With no minimum the trickle is taken (its silences are shorter than the route's timeout).
    const { gateway: lenient } = await setUp({ requestTimeoutMs: 500 }, ["--min-body-rate", "0"]);
    const taken = await trickle(lenient.port, 300, 10, 100);
    expect(taken.statusLine).toBe("HTTP/1.1 200 OK");
    expect(taken.ms).toBeGreaterThan(2_500);
  }, 20_000);

  it("gives the upstream the rule's whole timeout from the end of a body that came in slowly", async () => {
    const origin = await startUpstream((req, res) => {
      req.resume();
      req.on("end", () => setTimeout(() => res.writeHead(200, { "content-length": "4" }).end("done"), 400));
    });
    const { gateway } = await setUp({ echoOrigin: origin, requestTimeoutMs: 1_000 }, [
      "--min-body-rate",
      "1000",
    ]);
    // Two 100-byte chunks 900 ms apart: the second is behind the rate (its bytes keep nothing alive) but ends
    // the body before the timer fires; the upstream then answers 400 ms later, within its own 1,000 ms.
    const answer = await trickle(gateway.port, 200, 100, 900);
    expect(answer.statusLine).toBe("HTTP/1.1 200 OK");
    expect(answer.body).toBe("done");
  });

  it("blames the upstream, not the client, when the upstream stops reading a body", async () => {
    const origin = await startUpstream((req, res) => {
      // Reads nothing for 3 s, far past the rule's timeout.
      req.pause();
      setTimeout(() => req.resume(), 3_000);
      req.on("end", () => res.writeHead(200).end());
    });
    const { as, gateway } = await setUp(
      { echoOrigin: origin, requestTimeoutMs: 400, maxBodyBytes: 64 * 1024 * 1024 },
      ["--min-body-rate", "1000000"],
    );
    const token = await getToken(as.tokenEndpoint, "read_invoice");
    // More than the kernel's socket buffers hold: the bytes wait for the upstream, so the rule's timeout is the
    // upstream's (504), not the client's (408).
    const response = await request(`${gateway.url}/echo/upload`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
      body: Buffer.alloc(32 * 1024 * 1024, 0x61),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const text = await response.body.text();
    expect(response.statusCode).toBe(504);
    expect(JSON.parse(text)).toMatchObject({ code: "PG_ERR_UPSTREAM_TIMEOUT" });
  }, 30_000);

  it("lingers at most 5 s for a client that goes on sending a refused body slowly, then closes the connection", async () => {
    const { gateway } = await setUp({ maxBodyBytes: 1024 });
    const socket = connect({ port: gateway.port, host: "127.0.0.1", allowHalfOpen: true });
    let data = "";
    let endedAt = 0;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (data += chunk));
    socket.on("end", () => (endedAt = Date.now()));
    const started = Date.now();
    const failed = new Promise<number>((resolve) => socket.on("error", () => resolve(Date.now() - started)));
    socket.write(
      "POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 104857600\r\n\r\n",
    );
    // 64 KiB every 250 ms: taken and dropped while the gateway lingers; refused (reset) once it closed.
    const tick = setInterval(() => {
      if (!socket.destroyed) socket.write(Buffer.alloc(64 * 1024, 0x61));
    }, 250);
    const elapsed = await failed.finally(() => clearInterval(tick));
    socket.destroy();
    expect(data.split("\r\n")[0]).toBe("HTTP/1.1 413 Payload Too Large");
    // The gateway's side ended right after the answer (FIN); the connection itself after the lingering time.
    expect(endedAt - started).toBeLessThan(2_000);
    expect(elapsed).toBeGreaterThanOrEqual(4_500);
    expect(elapsed).toBeLessThan(9_000);
  }, 15_000);

  it("answers 413 for a declared content-length over the route's limit without contacting the upstream", async () => {
    const { gateway, echo } = await setUp({ maxBodyBytes: 1024 });
    let upstreamRequests = 0;
    echo.server.on("request", () => (upstreamRequests += 1));
    const response = await rawRequest(gateway.port, [
      "POST /public/upload HTTP/1.1",
      "Host: localhost",
      "Content-Type: application/octet-stream",
      "Content-Length: 4096",
    ]);
    expect(response.status).toBe(413);
    expect(JSON.parse(response.body)).toMatchObject({ code: "PG_ERR_BODY_TOO_LARGE" });
    expect(upstreamRequests).toBe(0);
  });

  it("counts a chunked body while streaming it: within the limit it arrives whole, past it the answer is 413", async () => {
    const { gateway } = await setUp({ maxBodyBytes: 1024 });
    const chunked = (sizes: number[]): string =>
      sizes.map((n) => `${n.toString(16)}\r\n${"a".repeat(n)}\r\n`).join("") + "0\r\n\r\n";
    const head = [
      "POST /public/upload HTTP/1.1",
      "Host: localhost",
      "Content-Type: application/octet-stream",
      "Transfer-Encoding: chunked",
      "Connection: close",
    ];
    const fits = await rawRequest(gateway.port, head, chunked([400, 400]));
    expect(fits.status).toBe(200);
    expect((JSON.parse(fits.body) as { body: { bytes: number } }).body.bytes).toBe(800);
    const over = await rawRequest(gateway.port, head, chunked([1000, 1000]));
    expect(over.status).toBe(413);
    expect(JSON.parse(over.body)).toMatchObject({ code: "PG_ERR_BODY_TOO_LARGE" });
  });
});

describe("clients and upstreams at different speeds", () => {
  it("holds the upstream back while a client reads slowly, and delivers the whole body intact", async () => {
    const total = 64 * 1024 * 1024;
    let sent = 0;
    const sentHash = createHash("sha256");
    const origin = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": total });
      pump(
        res,
        () => sent < total,
        (chunk) => {
          sent += chunk.length;
          sentHash.update(chunk);
        },
      );
    });
    const { gateway } = await setUp({ echoOrigin: origin });
    const response = await httpGet(`${gateway.url}/public/slow-reader`);
    expect(response.statusCode).toBe(200);
    response.pause();
    await sleep(1000);
    // Kernel socket buffers on two loopback hops hold some megabytes; without backpressure the upstream would
    // have sent everything by now.
    expect(sent).toBeLessThan(total / 2);
    const receivedHash = createHash("sha256");
    let received = 0;
    let nextStall = 8 * 1024 * 1024;
    for await (const chunk of response) {
      const buffer = chunk as Buffer;
      received += buffer.length;
      receivedHash.update(buffer);
      if (received >= nextStall) {
        nextStall += 8 * 1024 * 1024;
        await sleep(50);
      }
    }
    expect(received).toBe(total);
    expect(receivedHash.digest("hex")).toBe(sentHash.digest("hex"));
  });

  it("lets a client pause reading for longer than the route's timeout (a slow mobile reader), within --client-send-timeout-ms", async () => {
    const total = 32 * 1024 * 1024;
    const origin = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": total });
      let sent = 0;
      pump(
        res,
        () => sent < total,
        (chunk) => (sent += chunk.length),
      );
    });
    // The route's 300 ms would have cut the client at its first pause; the client's own timeout (60 s) does not.
    const { gateway } = await setUp({ echoOrigin: origin, requestTimeoutMs: 300 });
    const response = await httpGet(`${gateway.url}/public/paused-reader`);
    expect(response.statusCode).toBe(200);
    response.pause();
    await sleep(1_500);
    let received = 0;
    let paused = false;
    for await (const chunk of response) {
      received += (chunk as Buffer).length;
      if (!paused && received >= total / 2) {
        paused = true;
        await sleep(1_000);
      }
    }
    expect(received).toBe(total);
    const line = await waitForAuditLine(gateway, (l) => l["route"] !== undefined && l["status"] === 200);
    expect(line).toMatchObject({ reason: "ok", upstreamStatus: 200 });
  });

  it("aborts the upstream request when the client goes away, before and during the response", async () => {
    const upstreamClosed = new Map<string, Promise<boolean>>();
    const arrived = new Map<string, () => void>();
    const origin = await startUpstream((req, res) => {
      const path = req.url ?? "";
      upstreamClosed.set(
        path,
        new Promise((resolve) => res.once("close", () => resolve(res.writableFinished))),
      );
      arrived.get(path)?.();
      if (path === "/public/ok") {
        res.end("ok");
      } else if (path === "/public/endless") {
        res.writeHead(200, { "content-type": "application/octet-stream" });
        pump(
          res,
          () => !res.destroyed,
          () => undefined,
          false,
        );
      }
      // /public/hang never answers.
    });
    const { gateway } = await setUp({ echoOrigin: origin });

    const hangArrived = new Promise<void>((resolve) => arrived.set("/public/hang", resolve));
    const hanging = get(`${gateway.url}/public/hang`).on("error", () => undefined);
    await within(hangArrived, 5_000, "request reached the upstream");
    hanging.destroy();
    expect(await within(upstreamClosed.get("/public/hang")!, 5_000, "upstream saw the hang close")).toBe(
      false,
    );

    const endlessArrived = new Promise<void>((resolve) => arrived.set("/public/endless", resolve));
    const endless = get(`${gateway.url}/public/endless`, (response) => {
      response.once("data", () => endless.destroy());
    }).on("error", () => undefined);
    await within(endlessArrived, 5_000, "request reached the upstream");
    expect(await within(upstreamClosed.get("/public/endless")!, 5_000, "upstream saw the stream close")).toBe(
      false,
    );

    const after = await request(`${gateway.url}/public/ok`);
    expect(after.statusCode).toBe(200);
    expect(await after.body.text()).toBe("ok");
  });

  it("cuts the client connection when the upstream breaks mid-body, and audits the upstream status", async () => {
    const origin = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": 1024 * 1024 });
      res.write(Buffer.alloc(64 * 1024, 1));
      setTimeout(() => res.destroy(), 50);
    });
    const { gateway } = await setUp({ echoOrigin: origin });
    const response = await request(`${gateway.url}/public/broken`);
    expect(response.statusCode).toBe(200);
    await expect(response.body.arrayBuffer()).rejects.toThrow();
    const requestId = response.headers["x-request-id"];
    expect(typeof requestId).toBe("string");
    expect(await auditLineFor(gateway, String(requestId))).toMatchObject({
      status: 200,
      upstreamStatus: 200,
      decision: "allow",
      reason: "PG_ERR_UPSTREAM_UNAVAILABLE",
    });
  });

  it("closes a client that stops reading for --client-send-timeout-ms, which frees the upstream connection", async () => {
    let upstreamClosed: Promise<void> | undefined;
    const origin = await startUpstream((_req, res) => {
      upstreamClosed = new Promise((resolve) => res.once("close", () => resolve()));
      res.writeHead(200, { "content-type": "application/octet-stream" });
      pump(
        res,
        () => !res.destroyed,
        () => undefined,
        false,
      );
    });
    // The route's timeout (2 s) is longer than the client's (800 ms): the client's own timer cuts it.
    const { gateway } = await setUp({ echoOrigin: origin, requestTimeoutMs: 2_000 }, [
      "--client-send-timeout-ms",
      "800",
    ]);
    // A client that sends its request and then never reads: the socket buffers fill and stay full.
    const socket = connect(gateway.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.pause();
    socket.write("GET /public/never-read HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const started = Date.now();
    await waitFor(() => Promise.resolve(upstreamClosed !== undefined));
    await within(upstreamClosed!, 10_000, "upstream connection released");
    // Cut after the client's 800 ms from when its connection filled up, not at the route's 2 s.
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    expect(Date.now() - started).toBeLessThan(1_900);
    const line = await waitForAuditLine(
      gateway,
      (l) => l["route"] !== undefined && l["reason"] === "PG_ERR_CLIENT_TIMEOUT",
    );
    expect(line).toMatchObject({ status: 200, upstreamStatus: 200, decision: "allow" });
    expect(await inflight(gateway)).toBe(0);
    socket.destroy();
  });
});

describe("interim responses from the upstream", () => {
  it("drops 103 Early Hints and relays the final response", async () => {
    const origin = await startUpstream((_req, res) => {
      res.writeEarlyHints({ link: "</style.css>; rel=preload; as=style" }, () => res.end("final"));
    });
    const { gateway } = await setUp({ echoOrigin: origin });
    const response = await rawRequest(gateway.port, [
      "GET /public/hints HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(response.status).toBe(200);
    expect(response.body).toBe("final");
  });

  it("answers 502 for an unsolicited 100 (Continue), which the upstream client does not parse", async () => {
    const origin = await startUpstream((req, res) => {
      res.writeContinue();
      req.resume();
      req.on("end", () => res.end("final"));
    });
    const { gateway } = await setUp({ echoOrigin: origin });
    const response = await rawRequest(
      gateway.port,
      [
        "POST /public/continue HTTP/1.1",
        "Host: localhost",
        "Content-Type: text/plain",
        "Content-Length: 2",
        "Connection: close",
      ],
      "hi",
    );
    expect(response.status).toBe(502);
    expect(JSON.parse(response.body)).toMatchObject({ code: "PG_ERR_UPSTREAM_UNAVAILABLE" });
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
    const cleared = (): { revision?: string }[] =>
      gateway
        .output()
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { msg?: string; revision?: string })
        .filter((line) => line.msg === "configuration problems cleared");
    expect(cleared()).toEqual([]);
    writeFileSync(join(gateway.configDir, "routes.yaml"), routesYaml(manifest));
    await waitFor(async () => {
      const ready = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as { problems: unknown[] };
      return ready.problems.length === 0;
    });
    // The same configuration as before: nothing is swapped in, but the log says the problems are gone, once.
    await waitFor(() => Promise.resolve(cleared().length > 0));
    await sleep(500);
    expect(cleared()).toEqual([expect.objectContaining({ revision: before.revision })]);
    expect((await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as { revision: string }).toMatchObject({
      revision: before.revision,
    });
  });

  it("lists the first 100 problems on /readyz and counts them all when a file holds many bad objects", async () => {
    const { gateway } = await setUp();
    const bad = Array.from(
      { length: 150 },
      (_, i) =>
        `apiVersion: phantomgate.dev/v1alpha1\nkind: ApiRoute\nmetadata:\n  name: bad-${i}\nspec: {}\n`,
    ).join("---\n");
    writeFileSync(join(gateway.configDir, "generated.yaml"), bad);
    type Ready = { ready: boolean; problems: { object?: string }[]; problemCount: number };
    await waitFor(
      async () => ((await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as Ready).problemCount >= 150,
    );
    const ready = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as Ready;
    expect(ready.ready).toBe(true);
    expect(ready.problems).toHaveLength(100);
    expect(ready.problemCount).toBeGreaterThanOrEqual(150);
    expect(ready.problems[0]?.object).toContain("bad-");
    expect(await (await fetch(`${gateway.adminUrl}/metrics`)).text()).toMatch(
      new RegExp(`^phantomgate_config_problems ${ready.problemCount}$`, "m"),
    );
  });
});

describe("a port that is taken", () => {
  it("ends the gateway with exit 2 and a one-line message instead of leaving it half-started, for the public and the admin port", async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => busy.close(resolve)));
    const taken = String((busy.address() as AddressInfo).port);
    const dir = makeConfigDir(
      allManifests({ issuer: "http://127.0.0.1:9", echoOrigin: "http://127.0.0.1:9" }),
    );
    for (const ports of [
      ["--port", taken, "--admin-port", "0"],
      ["--port", "0", "--admin-port", taken],
    ]) {
      const started = Date.now();
      await expect(
        spawnGateway(["--config", dir, "--host", "127.0.0.1", "--admin-host", "127.0.0.1", ...ports]),
      ).rejects.toThrow(
        /exited with 2[\s\S]*phantomgate gateway: cannot listen on 127\.0\.0\.1:\d+ \(--[a-z-]+, --[a-z-]+\): listen EADDRINUSE/,
      );
      expect(Date.now() - started).toBeLessThan(15_000);
    }
  });
});

describe("an audit log that cannot be opened", () => {
  it("ends the gateway with exit 2 naming --audit-log when its directory is missing, and creates no directory", async () => {
    const dir = makeConfigDir(
      allManifests({ issuer: "http://127.0.0.1:9", echoOrigin: "http://127.0.0.1:9" }),
    );
    const missing = join(dir, "no-such-dir", "deeper");
    const args = ["--config", dir, "--host", "127.0.0.1", "--port", "0", "--admin-port", "0"];
    // A gateway that starts anyway is stopped again, with the test failing.
    const outcome = await spawnGateway([...args, "--audit-log", join(missing, "audit.log")]).then(
      async (started) => `started (exit ${String(await started.stop())})`,
      (error: unknown) => (error as Error).message,
    );
    expect(outcome).toMatch(
      /exited with 2[\s\S]*phantomgate gateway: --audit-log \(PHANTOMGATE_AUDIT_LOG\): cannot open the audit log \S+\/no-such-dir\/deeper\/audit\.log: ENOENT/,
    );
    expect(existsSync(join(dir, "no-such-dir"))).toBe(false);
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
