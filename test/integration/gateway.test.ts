// The gateway as a real process between a real demo authorization server and a real echo API.
import { readFileSync, statSync } from "node:fs";
import type { Server } from "node:http";
import { createHash } from "node:crypto";
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client, request } from "undici";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { startEchoApi } from "../../src/demo/echo-api.ts";
import { eventually } from "../helpers/control-plane-gateway.ts";
import { startGatewayProcess, makeConfigDir, type GatewayProcess } from "../helpers/gateway-process.ts";
import { getToken, rawRequest } from "../helpers/http.ts";
import { allManifests } from "../helpers/manifests.ts";

interface Echo {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  jwtClaims?: Record<string, unknown>;
  body: { bytes: number; sha256: string };
}

const productVersion = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

let as: DemoAuthServer;
let echo: { server: Server; port: number };
let gateway: GatewayProcess;
const tokensSeen: string[] = [];

async function token(
  scope: string,
  options: { clientId?: string; secret?: string; resource?: string } = {},
): Promise<string> {
  const value = await getToken(as.tokenEndpoint, scope, options);
  tokensSeen.push(value);
  return value;
}

async function call(
  path: string,
  options: { token?: string; method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  const response = await request(`${gateway.url}${path}`, {
    method: (options.method ?? "GET") as "GET",
    headers,
    body: options.body ?? null,
  });
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

/** The audit lines of these request ids, in their order, once all of them were written. */
async function auditLinesOf(
  requestIds: readonly (string | string[] | undefined)[],
): Promise<(Record<string, unknown> | undefined)[]> {
  let found: (Record<string, unknown> | undefined)[] = [];
  await eventually(
    () => {
      const lines = readFileSync(gateway.auditFile, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      found = requestIds.map((id) => lines.find((l) => l.requestId === id));
      return found.every((line) => line !== undefined);
    },
    5_000,
    "audit lines",
  );
  return found;
}

beforeAll(async () => {
  as = await startDemoAuthServer({ port: 0 });
  echo = await startEchoApi(0);
  const dir = makeConfigDir(
    allManifests({
      issuer: as.issuer,
      echoOrigin: `http://127.0.0.1:${echo.port}`,
      maxBodyBytes: 64 * 1024 * 1024,
    }),
  );
  gateway = await startGatewayProcess(dir);
});

afterAll(async () => {
  await gateway.stop();
  echo.server.close();
  await as.close();
});

describe("phantom mode", () => {
  it("turns an opaque token into a verified JWT at the upstream", async () => {
    const opaque = await token("read_invoice");
    expect(opaque.split(".")).toHaveLength(1);
    const response = await call("/echo/hello?x=1", { token: opaque });
    expect(response.status).toBe(200);
    const seen = JSON.parse(response.text) as Echo;
    expect(seen.path).toBe("/echo/hello");
    expect(seen.query).toBe("?x=1");
    expect(seen.headers.authorization).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect(seen.headers.authorization).not.toContain(opaque);
    expect(JSON.stringify(seen)).not.toContain(opaque);
    expect(seen.jwtClaims).toMatchObject({ sub: "demo-client", client_id: "demo-client", iss: as.issuer });
    expect(response.headers["x-request-id"]).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
  });

  it("answers 401 without a token, with a Bearer challenge and problem+json", async () => {
    const response = await call("/echo/hello");
    expect(response.status).toBe(401);
    expect(response.headers["www-authenticate"]).toBe('Bearer realm="phantomgate"');
    expect(response.headers["content-type"]).toBe("application/problem+json");
    expect(JSON.parse(response.text)).toMatchObject({ status: 401, code: "PG_ERR_TOKEN_MISSING" });
  });

  it("answers 401 invalid_token for an unknown token", async () => {
    const response = await call("/echo/hello", { token: "not-a-real-token-123" });
    expect(response.status).toBe(401);
    expect(response.headers["www-authenticate"]).toContain('error="invalid_token"');
    expect(response.text).not.toContain("not-a-real-token-123");
  });

  it("answers 403 insufficient_scope naming the scope", async () => {
    const response = await call("/echo/hello", { token: await token("video_metadata") });
    expect(response.status).toBe(403);
    expect(response.headers["www-authenticate"]).toContain('error="insufficient_scope"');
    expect(response.headers["www-authenticate"]).toContain('scope="read_invoice"');
    expect(JSON.parse(response.text)).toMatchObject({
      code: "PG_ERR_INSUFFICIENT_SCOPE",
      scope: "read_invoice",
    });
  });

  it("checks each request's own credential on a keep-alive connection that changes tokens", async () => {
    const reader = await token("read_invoice");
    const viewer = await token("video_metadata");
    const fingerprint = (t: string): string => createHash("sha256").update(t).digest("base64url");
    // One connection for every request: the gateway keeps the connection's last credential, and each request
    // must still be judged by the credential it carries.
    const client = new Client(gateway.url, { pipelining: 1 });
    const sockets = new Set<unknown>();
    client.on("connect", (_origin, targets) => sockets.add(targets));
    try {
      const send = async (authorization: string | undefined, path: string) => {
        const response = await client.request({
          path,
          method: "GET",
          headers: authorization === undefined ? {} : { authorization },
        });
        const text = await response.body.text();
        return { status: response.statusCode, requestId: response.headers["x-request-id"], text };
      };
      const steps: [string | undefined, number][] = [
        [`Bearer ${reader}`, 200],
        [`Bearer ${reader}`, 200],
        [`Bearer ${viewer}`, 403],
        [`Bearer ${viewer}`, 403],
        [`Bearer ${reader}`, 200],
        ["Bearer not-a-real-token-456", 401],
        [undefined, 401],
        [`Basic ${Buffer.from("a:b").toString("base64")}`, 400],
        [`Bearer ${reader}`, 200],
        [`Bearer ${reader} extra`, 400],
        [`Bearer ${viewer}`, 403],
      ];
      const answers = [];
      for (const [index, [authorization, status]] of steps.entries()) {
        const answer = await send(authorization, `/echo/connection-${index}`);
        expect({ index, status: answer.status }).toEqual({ index, status });
        answers.push(answer);
      }
      // A 400 closes its connection (the gateway refuses a malformed Authorization header like bad framing), so
      // the eleven requests ran on three connections, the first eight on one.
      expect(sockets.size).toBe(3);
      const audited = await auditLinesOf(answers.map((a) => a.requestId));
      expect(audited.map((l) => l?.tokenFingerprint)).toEqual([
        fingerprint(reader),
        fingerprint(reader),
        fingerprint(viewer),
        fingerprint(viewer),
        fingerprint(reader),
        fingerprint("not-a-real-token-456"),
        undefined,
        undefined,
        fingerprint(reader),
        undefined,
        fingerprint(viewer),
      ]);
    } finally {
      await client.close();
    }
  });

  it("honours scope implications (write_invoice satisfies read_invoice)", async () => {
    const response = await call("/echo/implied", { token: await token("write_invoice") });
    expect(response.status).toBe(200);
  });

  it("checks scopes on every request, also when the token facts are cached", async () => {
    const reader = await token("read_invoice");
    expect((await call("/echo/a", { token: reader })).status).toBe(200);
    expect((await call("/write/a", { token: reader, method: "POST", body: "{}" })).status).toBe(403);
    expect((await call("/echo/b", { token: reader })).status).toBe(200);
    expect((await call("/write/b", { token: reader, method: "PUT", body: "{}" })).status).toBe(403);
  });

  it("answers 405 with Allow for a method the route does not take", async () => {
    const response = await call("/write/x", { token: await token("write_invoice"), method: "DELETE" });
    expect(response.status).toBe(405);
    expect(String(response.headers.allow)).toContain("POST");
    expect(String(response.headers.allow)).toContain("PUT");
  });

  it("never proxies TRACE (an echoing upstream would reveal the JWT): 405 with the route's Allow", async () => {
    const t = await token("write_invoice");
    // /write takes POST and PUT; /public takes any method.
    const narrow = await rawRequest(gateway.port, [
      "TRACE /write/x HTTP/1.1",
      "Host: localhost",
      `Authorization: Bearer ${t}`,
      "Connection: close",
    ]);
    expect(narrow.status).toBe(405);
    expect(narrow.head.toLowerCase()).toContain("\r\nallow: post, put\r\n");
    const wide = await rawRequest(gateway.port, [
      "TRACE /public/x HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(wide.status).toBe(405);
    expect(wide.head.toLowerCase()).toContain("\r\nallow: get, head, post, put, patch, delete, options\r\n");
    // Audited with the route it matched (a route taking any method), like any other refusal on a route.
    const requestId = (JSON.parse(wide.body) as { requestId: string }).requestId;
    const [audited] = await auditLinesOf([requestId]);
    expect(audited).toMatchObject({
      method: "TRACE",
      status: 405,
      decision: "deny",
      route: expect.stringMatching(/#/) as unknown,
    });
    // TRACK is not a method node:http parses: refused before the gateway sees it.
    const track = await rawRequest(gateway.port, [
      "TRACK /public/x HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(track.status).toBe(501);
    expect(JSON.parse(track.body)).toMatchObject({ code: "PG_ERR_UNKNOWN_METHOD" });
  });

  it("answers 404 problem+json for an unrouted path", async () => {
    const response = await call("/nowhere");
    expect(response.status).toBe(404);
    expect(JSON.parse(response.text)).toMatchObject({ code: "PG_ERR_ROUTE_NOT_FOUND" });
  });
});

describe("path normalisation cannot bypass a route's checks", () => {
  const attempts = [
    "/public/../admin/secret",
    "/public/./../admin/secret",
    "//admin/secret",
    "/public/%2e%2e/admin/secret",
    "/public/%2E%2E/admin/secret",
    "/public%2F..%2Fadmin/secret",
    "/public/..%2fadmin/secret",
    "/public/..\\admin/secret",
    "/public/%5c../admin/secret",
    "/public/x%00/../../admin/secret",
    "/public/..;/admin/secret",
    "/admin;jsessionid=1/secret",
  ];
  for (const path of attempts) {
    it(`${path} never reaches /admin unauthenticated`, async () => {
      const response = await rawRequest(gateway.port, [
        `GET ${path} HTTP/1.1`,
        "Host: localhost",
        "Connection: close",
      ]);
      expect([400, 401]).toContain(response.status);
      expect(response.body).not.toContain('"path": "/admin');
    });
  }

  it("forwards the same normalised path it matched", async () => {
    const response = await rawRequest(gateway.port, [
      "GET /public//a/./b/../c HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(response.status).toBe(200);
    expect((JSON.parse(response.body) as Echo).path).toBe("/public/a/c");
  });

  it("refuses path parameters, which servlet-style upstreams strip before mapping (/public;x is /public there)", async () => {
    const response = await rawRequest(gateway.port, [
      "GET /public;x/a HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ code: "PG_ERR_BAD_PATH" });
  });

  it("routes an absolute-form target only when its authority is the Host (RFC 9112 §3.2.2)", async () => {
    const same = await rawRequest(gateway.port, [
      "GET http://localhost/public/abs HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(same.status).toBe(200);
    expect((JSON.parse(same.body) as Echo).path).toBe("/public/abs");
    const other = await rawRequest(gateway.port, [
      "GET http://internal.example/public/abs HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(other.status).toBe(400);
    expect(JSON.parse(other.body)).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
  });

  it("matches paths case-sensitively (/ADMIN is not /admin and not public)", async () => {
    const response = await rawRequest(gateway.port, [
      "GET /PUBLIC/x HTTP/1.1",
      "Host: localhost",
      "Connection: close",
    ]);
    expect(response.status).toBe(404);
  });
});

describe("firewall", () => {
  it("rejects a token in the query string", async () => {
    const t = await token("read_invoice");
    const response = await call(`/echo/x?access_token=${t}`);
    expect(response.status).toBe(400);
    expect(JSON.parse(response.text)).toMatchObject({ code: "PG_ERR_TOKEN_IN_QUERY" });
  });

  it("rejects a token in a form body and forwards other form bodies intact", async () => {
    const t = await token("read_invoice");
    const form = { "content-type": "application/x-www-form-urlencoded" };
    // Authentication comes before the body is read: without an Authorization header the answer is 401 and the
    // gateway buffers nothing for an unauthenticated client.
    const unauthenticated = await call("/echo/form", {
      method: "POST",
      headers: form,
      body: `a=1&access_token=${t}`,
    });
    expect(unauthenticated.status).toBe(401);
    expect(JSON.parse(unauthenticated.text)).toMatchObject({ code: "PG_ERR_TOKEN_MISSING" });
    const refused = await call("/echo/form", {
      token: t,
      method: "POST",
      headers: form,
      body: `a=1&access_token=${t}`,
    });
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.text)).toMatchObject({ code: "PG_ERR_TOKEN_IN_QUERY" });
    // A form field asking the upstream to run another method than the one the rule was checked for.
    const override = await call("/echo/form", {
      token: t,
      method: "POST",
      headers: form,
      body: "a=1&_method=DELETE",
    });
    expect(override.status).toBe(400);
    expect(JSON.parse(override.text)).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    const body = "a=1&b=two";
    const passed = await call("/echo/form", { token: t, method: "POST", headers: form, body });
    expect(passed.status).toBe(200);
    expect((JSON.parse(passed.text) as Echo).body.sha256).toBe(
      createHash("sha256").update(body).digest("hex"),
    );
  });

  it("rejects two Authorization headers", async () => {
    const t = await token("read_invoice");
    const response = await rawRequest(gateway.port, [
      "GET /echo/x HTTP/1.1",
      "Host: localhost",
      `Authorization: Bearer ${t}`,
      `Authorization: Bearer ${t}`,
      "Connection: close",
    ]);
    expect(response.status).toBe(400);
  });

  it("rejects a non-Bearer Authorization header", async () => {
    const response = await call("/echo/x", { headers: { authorization: "Basic ZGVtbzpkZW1v" } });
    expect(response.status).toBe(400);
  });

  it("answers 414 for an over-long URL and 431 for over-large headers", async () => {
    expect((await call(`/public/${"a".repeat(9000)}`)).status).toBe(414);
    // Past node's own limit for headers alone (2 × --max-header-bytes), which it counts with the request line.
    expect((await call(`/public/${"a".repeat(36_000)}`)).status).toBe(414);
    expect((await call("/public/x", { headers: { "x-big": "b".repeat(20_000) } })).status).toBe(431);
  });
});

describe("framing the gateway refuses, with a problem+json body and an audit line", () => {
  function problemOf(response: { head: string; body: string }): Record<string, unknown> {
    expect(response.head.toLowerCase()).toContain("content-type: application/problem+json");
    expect(response.head.toLowerCase()).toContain("connection: close");
    return JSON.parse(response.body) as Record<string, unknown>;
  }

  it("what node's HTTP parser refuses: conflicting framing, a folded header, headers over its limit", async () => {
    const conflicting = await rawRequest(
      gateway.port,
      ["POST /public/x HTTP/1.1", "Host: localhost", "Content-Length: 5", "Transfer-Encoding: chunked"],
      "0\r\n\r\n",
    );
    expect(conflicting.status).toBe(400);
    expect(problemOf(conflicting)).toMatchObject({ code: "PG_ERR_BAD_REQUEST", status: 400 });
    const folded = await rawRequest(gateway.port, [
      "GET /public/x HTTP/1.1",
      "Host: localhost",
      "X-A: 1",
      "  more",
    ]);
    expect(folded.status).toBe(400);
    expect(problemOf(folded)).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    const huge = await rawRequest(gateway.port, [
      "GET /public/x HTTP/1.1",
      "Host: localhost",
      `X-Big: ${"b".repeat(70_000)}`,
    ]);
    expect(huge.status).toBe(431);
    expect(problemOf(huge)).toMatchObject({ code: "PG_ERR_HEADERS_TOO_LARGE" });
    // Each is audited, with an empty method and no route (the parser never produced a request).
    const requestIds = [conflicting, folded, huge].map((response) =>
      String(problemOf(response)["requestId"]),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const lines = readFileSync(gateway.auditFile, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const requestId of requestIds) {
      const line = lines.find((candidate) => candidate.requestId === requestId);
      expect(line).toMatchObject({
        method: "",
        decision: "deny",
        status: requestId === requestIds[2] ? 431 : 400,
      });
      expect(line).not.toHaveProperty("route");
    }
  });

  it("a malformed request pipelined after a whole one: the first is answered, then the refusal, then close", async () => {
    const socket = connect(gateway.port, "127.0.0.1");
    let data = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (data += chunk));
    const closed = new Promise((resolve) => socket.on("close", resolve));
    socket.write(
      "GET /public/pipelined HTTP/1.1\r\nHost: localhost\r\n\r\n" +
        "GET /x HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    );
    await closed;
    const statusLines = data.match(/HTTP\/1\.1 \d{3}/g);
    expect(statusLines).toEqual(["HTTP/1.1 200", "HTTP/1.1 400"]);
    expect(data).toContain('"code":"PG_ERR_BAD_REQUEST"');
  });

  it("HTTP/1.1 without Host is 400; HTTP/1.0 without Host is served", async () => {
    const missing = await rawRequest(gateway.port, ["GET /public/x HTTP/1.1"]);
    expect(missing.status).toBe(400);
    expect(problemOf(missing)).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    const old = await rawRequest(gateway.port, ["GET /public/x HTTP/1.0"]);
    expect(old.head).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("another HTTP version on the request line (HTTP/2.0, or none: HTTP/0.9) is 505, not forwarded", async () => {
    for (const line of ["GET /public/x HTTP/2.0", "GET /public/x"]) {
      const response = await rawRequest(gateway.port, [line]);
      expect(response.status, line).toBe(505);
      expect(problemOf(response)).toMatchObject({ code: "PG_ERR_HTTP_VERSION_NOT_SUPPORTED", status: 505 });
      // The client's doing, not the gateway's failure: a client cannot raise the error rate this way.
      const [audited] = await auditLinesOf([String(problemOf(response)["requestId"])]);
      expect(audited).toMatchObject({ decision: "deny", status: 505 });
    }
  });

  it("a method the HTTP parser does not know is 501 naming the method as the problem", async () => {
    const response = await rawRequest(gateway.port, ["FOO /public/x HTTP/1.1", "Host: localhost"]);
    expect(response.status).toBe(501);
    expect(problemOf(response)).toMatchObject({ code: "PG_ERR_UNKNOWN_METHOD", status: 501 });
  });

  it("CONNECT, an expectation other than 100-continue, a gzip transfer coding and a WebSocket upgrade", async () => {
    const connectRequest = await rawRequest(gateway.port, [
      "CONNECT example.com:443 HTTP/1.1",
      "Host: example.com:443",
    ]);
    expect(connectRequest.status).toBe(400);
    expect(problemOf(connectRequest)).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    const expectation = await rawRequest(gateway.port, [
      "GET /public/x HTTP/1.1",
      "Host: localhost",
      "Expect: teapot",
    ]);
    expect(expectation.status).toBe(417);
    expect(problemOf(expectation)).toMatchObject({ code: "PG_ERR_EXPECTATION_FAILED" });
    const gzipped = await rawRequest(
      gateway.port,
      ["POST /public/x HTTP/1.1", "Host: localhost", "Transfer-Encoding: gzip, chunked"],
      "3\r\nabc\r\n0\r\n\r\n",
    );
    expect(gzipped.status).toBe(501);
    expect(problemOf(gzipped)).toMatchObject({ code: "PG_ERR_NOT_IMPLEMENTED" });
    const websocket = await rawRequest(gateway.port, [
      "GET /public/ws HTTP/1.1",
      "Host: localhost",
      "Connection: Upgrade",
      "Upgrade: websocket",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]);
    expect(websocket.status).toBe(501);
    expect(problemOf(websocket)).toMatchObject({ code: "PG_ERR_NOT_IMPLEMENTED" });
    const [audited] = await auditLinesOf([String(problemOf(websocket)["requestId"])]);
    expect(audited).toMatchObject({
      decision: "deny",
      status: 501,
      detail: "WebSocket upgrade",
    });
    // An h2c upgrade may be ignored (RFC 9110 §7.8): served over HTTP/1.1, without the upgrade fields.
    const h2c = await rawRequest(gateway.port, [
      "GET /public/h2c HTTP/1.1",
      "Host: localhost",
      "Connection: Upgrade, HTTP2-Settings, close",
      "Upgrade: h2c",
      "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
    ]);
    expect(h2c.status).toBe(200);
    expect((JSON.parse(h2c.body) as Echo).headers.upgrade).toBeUndefined();
  });

  it("a request the HTTP parser refuses is audited with the time since its connection went idle, not 0", async () => {
    const socket = connect(gateway.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.setEncoding("latin1");
    let data = "";
    socket.on("data", (chunk: string) => (data += chunk));
    const closed = new Promise((resolve) => socket.on("close", resolve));
    await new Promise((resolve) => setTimeout(resolve, 600));
    socket.write(
      "GET /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    await closed;
    expect(data.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
    const requestId = /"requestId":"([^"]+)"/.exec(data)?.[1];
    const [audited] = await auditLinesOf([requestId]);
    expect(audited?.["latencyMs"]).toBeGreaterThanOrEqual(550);
    expect(audited?.["latencyMs"]).toBeLessThan(5_000);
  });

  it("the audit line cuts a Host of kilobytes to 256 characters", async () => {
    const response = await rawRequest(gateway.port, ["GET /public/x HTTP/1.1", `Host: ${"h".repeat(4_000)}`]);
    const [audited] = await auditLinesOf([String(response.head.match(/x-request-id: (\S+)/i)?.[1])]);
    expect(audited?.["host"]).toBe(`${"h".repeat(256)}…`);
  });

  it("an unknown token's refusal says cache miss, the same refusal from the negative cache says hit", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const response = await call("/echo/negative", { token: "not-a-token-the-as-issued" });
      expect(response.status).toBe(401);
      ids.push(String(response.headers["x-request-id"]));
    }
    const [first, second] = await auditLinesOf(ids);
    expect(first).toMatchObject({ reason: "PG_ERR_TOKEN_INVALID", cache: "miss" });
    expect(second).toMatchObject({ reason: "PG_ERR_TOKEN_INVALID", cache: "hit" });
  });

  it("a compressed form body is 415: its bytes could hide an access_token", async () => {
    const t = await token("read_invoice");
    const response = await call("/echo/form", {
      token: t,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", "content-encoding": "gzip" },
      body: Buffer.from([0x1f, 0x8b, 0x08, 0x00]),
    });
    expect(response.status).toBe(415);
    expect(JSON.parse(response.text)).toMatchObject({ code: "PG_ERR_UNSUPPORTED_ENCODING" });
  });
});

describe("forwarding", () => {
  it("drops hop-by-hop and identity-spoofing headers and sets X-Forwarded-*, Forwarded and traceparent", async () => {
    const t = await token("read_invoice");
    const response = await rawRequest(gateway.port, [
      "GET /echo/h HTTP/1.1",
      "Host: localhost",
      `Authorization: Bearer ${t}`,
      "Connection: close, x-secret-hop, host",
      "x-secret-hop: 1",
      "Keep-Alive: timeout=5",
      "Proxy-Authorization: Basic Zm9vOmJhcg==",
      "X-Forwarded-For: 6.6.6.6",
      "X-User-Id: admin",
      "X-Authenticated-User: root",
      "Forwarded: for=6.6.6.6",
      "X-Keep-Me: yes",
      "Via: 1.0 fred",
      "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "True-Client-IP: 6.6.6.6",
      "CF-Connecting-IP: 6.6.6.6",
      "X-Forwarded: for=6.6.6.6",
      "X-Original-Forwarded-For: 6.6.6.6",
      "X-HTTP-Method-Override: DELETE",
      "X-Method-Override: DELETE",
      // Underscore spellings that CGI-style upstreams read as X-User-Id, and httpoxy's Proxy.
      "X_User_Id: admin",
      "X_Forwarded_For: 6.6.6.6",
      "Proxy: http://attacker.example:8080",
      // What other proxies and identity-aware load balancers hand their upstreams.
      "Remote-User: admin",
      "X-Remote-User: admin",
      "X-Consumer-Username: admin",
      "X-MS-Client-Principal-Name: admin",
      "X-Goog-Authenticated-User-Email: accounts.google.com:admin@example.com",
      "X-Amzn-Oidc-Identity: admin",
      "Cf-Access-Authenticated-User-Email: admin@example.com",
      "X-SSL-Client-Verify: SUCCESS",
      "SSL-Client-Cert: -----BEGIN CERTIFICATE-----",
      "X-Client-Cert: abc",
      "X-Envoy-Internal: true",
      "X-Original-Host: internal.example",
      "X-Host: internal.example",
      "X-Jwt-Payload: e30",
      "X-Scopes: admin",
      "Baggage: user.id=admin",
    ]);
    expect(response.status).toBe(200);
    const seen = (JSON.parse(response.body) as Echo).headers;
    for (const name of ["x_user_id", "x_forwarded_for", "proxy"]) expect(seen[name], name).toBeUndefined();
    expect(seen["x-secret-hop"]).toBeUndefined();
    expect(seen["keep-alive"]).toBeUndefined();
    expect(seen["proxy-authorization"]).toBeUndefined();
    expect(seen["x-user-id"]).toBeUndefined();
    expect(seen["x-authenticated-user"]).toBeUndefined();
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.forwarded).toContain("for=127.0.0.1");
    expect(seen["x-forwarded-proto"]).toBe("http");
    expect(seen["x-keep-me"]).toBe("yes");
    expect(seen.via).toBe("1.0 fred, 1.1 phantomgate");
    // Naming Host in Connection does not make the upstream get the gateway's idea of its address instead.
    expect(seen.host).toBe("localhost");
    for (const name of [
      "true-client-ip",
      "cf-connecting-ip",
      "x-forwarded",
      "x-original-forwarded-for",
      "x-http-method-override",
      "x-method-override",
      "remote-user",
      "x-remote-user",
      "x-consumer-username",
      "x-ms-client-principal-name",
      "x-goog-authenticated-user-email",
      "x-amzn-oidc-identity",
      "cf-access-authenticated-user-email",
      "x-ssl-client-verify",
      "ssl-client-cert",
      "x-client-cert",
      "x-envoy-internal",
      "x-original-host",
      "x-host",
      "x-jwt-payload",
      "x-scopes",
      "baggage",
    ]) {
      expect(seen[name], name).toBeUndefined();
    }
    expect(seen.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(seen.traceparent).not.toContain("b7ad6b7169203331");
  });

  it("streams a large request body and a large response body", async () => {
    const t = await token("read_invoice");
    const body = Buffer.alloc(32 * 1024 * 1024, 7);
    const sent = await call("/echo/upload", { token: t, method: "POST", body });
    expect(sent.status).toBe(200);
    const seen = JSON.parse(sent.text) as Echo;
    expect(seen.body.bytes).toBe(body.length);
    expect(seen.body.sha256).toBe(createHash("sha256").update(body).digest("hex"));
    const big = await request(`${gateway.url}/echo/stream?bytes=${48 * 1024 * 1024}`, {
      headers: { authorization: `Bearer ${t}` },
    });
    let received = 0;
    for await (const chunk of big.body) received += (chunk as Buffer).length;
    expect(big.statusCode).toBe(200);
    expect(received).toBe(48 * 1024 * 1024);
  });

  it("OPTIONS with Max-Forwards: 0 is answered by the gateway; more is decremented; other methods pass it on", async () => {
    const t = await token("read_invoice");
    const own = await call("/echo/options", {
      token: t,
      method: "OPTIONS",
      headers: { "max-forwards": "0" },
    });
    expect(own.status).toBe(200);
    expect(own.headers.allow).toBe("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    expect(own.text).toBe("");
    // Still the route's checks first: without a token the answer is 401.
    expect(
      (await call("/echo/options", { method: "OPTIONS", headers: { "max-forwards": "0" } })).status,
    ).toBe(401);
    const onward = await call("/echo/options", {
      token: t,
      method: "OPTIONS",
      headers: { "max-forwards": "3" },
    });
    expect(onward.status).toBe(200);
    expect((JSON.parse(onward.text) as Echo).headers["max-forwards"]).toBe("2");
    const get = await call("/echo/options", { token: t, headers: { "max-forwards": "0" } });
    expect((JSON.parse(get.text) as Echo).headers["max-forwards"]).toBe("0");
    const invalid = await call("/echo/options", {
      token: t,
      method: "OPTIONS",
      headers: { "max-forwards": "-1" },
    });
    expect(invalid.status).toBe(400);
    expect(JSON.parse(invalid.text)).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
  });

  it("passes the client's tracestate on only with its trace (a kept traceparent), and only well-formed", async () => {
    const traceparent = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const upstreamSees = async (...headers: string[]): Promise<Record<string, string>> => {
      const response = await rawRequest(gateway.port, [
        "GET /public/trace HTTP/1.1",
        "Host: localhost",
        ...headers,
      ]);
      expect(response.status).toBe(200);
      return (JSON.parse(response.body) as Echo).headers;
    };
    // The trace continues: its tracestate goes with it, unchanged; two fields arrive as one list.
    const kept = await upstreamSees(traceparent, "tracestate: rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    expect(kept.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(kept.tracestate).toBe("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    const split = await upstreamSees(
      traceparent,
      "tracestate: rojo=00f067aa0ba902b7",
      "tracestate: congo=t61rcWkgMzE",
    );
    expect(split.tracestate).toBe("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE");
    // A new trace (no traceparent, an invalid one, two of them) leaves the client's tracestate behind.
    for (const parent of [
      [],
      ["traceparent: 00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"],
      ["traceparent: garbage"],
      [traceparent, traceparent],
    ]) {
      const fresh = await upstreamSees(...parent, "tracestate: rojo=00f067aa0ba902b7");
      expect(fresh.traceparent, parent.join()).not.toContain("0af7651916cd43dd8448eb211c80319c");
      expect(fresh.tracestate, parent.join()).toBeUndefined();
    }
    // A malformed or oversized one is dropped, the trace still continued.
    for (const state of [
      `a=${"x".repeat(250)},b=${"y".repeat(250)},c=zzzzz`, // 513 characters
      Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(","),
      "Rojo=00f067aa0ba902b7",
      "rojo=caf\u00e9",
      "rojo",
      "rojo=a=b",
    ]) {
      const dropped = await upstreamSees(traceparent, `tracestate: ${state}`);
      expect(dropped.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-/);
      expect(dropped.tracestate, state).toBeUndefined();
    }
    // Named in Connection, it is the client's hop-by-hop field and stays with the gateway.
    const hop = await upstreamSees(traceparent, "tracestate: rojo=1", "Connection: keep-alive, tracestate");
    expect(hop.tracestate).toBeUndefined();
  });

  it("public routes never pass the client's Authorization header upstream", async () => {
    const response = await call("/public/p", { headers: { authorization: "Bearer leaked-credential" } });
    expect(response.status).toBe(200);
    expect((JSON.parse(response.text) as Echo).headers.authorization).toBeUndefined();
  });
});

describe("other token modes", () => {
  it("mint: forwards a gateway-signed JWT with only the route's audience and domain scopes", async () => {
    const t = await token("read_invoice video_metadata");
    const response = await call("/minted/x", { token: t });
    expect(response.status).toBe(200);
    const claims = (JSON.parse(response.text) as Echo).jwtClaims;
    expect(claims).toMatchObject({ aud: "echo-api", sub: "demo-client", scope: "read_invoice" });
    const jwks = (await (await fetch(`${gateway.adminUrl}/.well-known/jwks.json`)).json()) as {
      keys: { kid?: string }[];
    };
    expect(jwks.keys.length).toBeGreaterThan(0);
  });

  it("exchange: forwards an RFC 8693 token narrowed to the route's audience", async () => {
    const t = await token("read_invoice high_video_stream");
    const response = await call("/exchanged/x", { token: t });
    expect(response.status).toBe(200);
    const claims = (JSON.parse(response.text) as Echo).jwtClaims;
    expect(claims).toMatchObject({ aud: "urn:phantomgate:echo", sub: "demo-client" });
    expect(String(claims?.scope)).toBe("read_invoice");
  });

  it("jwt: validates a by-value JWT locally", async () => {
    const jwt = await token("read_invoice", { resource: "urn:phantomgate:jwt-api" });
    expect(jwt.split(".")).toHaveLength(3);
    expect((await call("/byvalue/x", { token: jwt })).status).toBe(200);
    const opaque = await token("read_invoice");
    expect((await call("/byvalue/x", { token: opaque })).status).toBe(401);
  });
});

describe("accepted audiences", () => {
  const billing = "urn:phantomgate:billing";
  const payments = "urn:phantomgate:payments";

  it("phantom: a token meant for an accepted audience passes; the upstream JWT names that audience", async () => {
    const forBilling = await token("read_invoice", { resource: billing });
    expect(forBilling.split(".")).toHaveLength(1);
    const response = await call("/billing-api/x", { token: forBilling });
    expect(response.status).toBe(200);
    expect((JSON.parse(response.text) as Echo).jwtClaims).toMatchObject({ aud: billing, sub: "demo-client" });
    // Any one of the listed audiences will do.
    expect(
      (await call("/billing-api/x", { token: await token("read_invoice", { resource: payments }) })).status,
    ).toBe(200);
  });

  // With responseType jwt (these tests), the facts come from the JWT the AS returns, and the demo AS names itself
  // as its aud when the token has none; phantom-facts.test.ts covers tokens without any aud (json, RFC 9701).
  it("phantom: a token for no API, or for another one, is 401 invalid_token, from the cached facts", async () => {
    const noAudience = await token("read_invoice");
    // The facts are cached by a route without the check; the audience is then checked on every request.
    expect((await call("/echo/x", { token: noAudience })).status).toBe(200);
    const introspections = as.stats.introspections;
    const refused = await call("/billing-api/x", { token: noAudience });
    expect(refused.status).toBe(401);
    expect(refused.headers["www-authenticate"]).toContain('error="invalid_token"');
    expect(JSON.parse(refused.text)).toMatchObject({ status: 401, code: "PG_ERR_TOKEN_AUDIENCE" });
    expect(refused.text).not.toContain(noAudience);
    expect(as.stats.introspections).toBe(introspections);
    // Passing one route does not open the other: the same token again, same answers.
    expect((await call("/echo/x", { token: noAudience })).status).toBe(200);
    expect((await call("/billing-api/x", { token: noAudience })).status).toBe(401);

    const [line] = await auditLinesOf([refused.headers["x-request-id"]]);
    expect(line).toMatchObject({ decision: "deny", reason: "PG_ERR_TOKEN_AUDIENCE", status: 401 });
  });

  it("mint and exchange check the client token's audience before their upstream token is used", async () => {
    const forBilling = await token("read_invoice", { resource: billing });
    const forPayments = await token("read_invoice", { resource: payments });
    const minted = await call("/billing-minted/x", { token: forBilling });
    expect(minted.status).toBe(200);
    expect((JSON.parse(minted.text) as Echo).jwtClaims).toMatchObject({ aud: "echo-api" });
    const exchanged = await call("/billing-exchanged/x", { token: forBilling });
    expect(exchanged.status).toBe(200);
    expect((JSON.parse(exchanged.text) as Echo).jwtClaims).toMatchObject({ aud: "urn:phantomgate:echo" });
    const exchanges = as.stats.exchanges;
    for (const path of ["/billing-minted/x", "/billing-exchanged/x", "/billing-exchanged/x"]) {
      const refused = await call(path, { token: forPayments });
      expect(refused.status, path).toBe(401);
      expect(JSON.parse(refused.text)).toMatchObject({ code: "PG_ERR_TOKEN_AUDIENCE" });
    }
    // Refused before the exchange: the AS was not asked for a token the client may not have.
    expect(as.stats.exchanges).toBe(exchanges);
  });

  it("the route catalogue lists a rule's accepted audiences", async () => {
    const routes = (await (await fetch(`${gateway.adminUrl}/routes`)).json()) as {
      routes: { path: { value: string }; acceptedAudiences?: string[] }[];
    };
    const billingApi = routes.routes.find((r) => r.path.value === "/billing-api");
    expect(billingApi?.acceptedAudiences).toEqual([billing, payments]);
    expect(routes.routes.find((r) => r.path.value === "/echo")?.acceptedAudiences).toBeUndefined();
  });
});

/**
 * Sends a request head with `Expect: 100-continue` and collects what arrives before `waitMs` passes; sends `body`
 * only after a 100 (Continue), as a client does.
 */
function expectContinue(
  head: readonly string[],
  body: string,
  waitMs = 1_500,
): Promise<{ sawContinue: boolean; final: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(gateway.port, "127.0.0.1");
    let data = "";
    let sawContinue = false;
    let closed = false;
    socket.setEncoding("utf8");
    socket.on("error", reject);
    socket.on("data", (chunk: string) => {
      data += chunk;
      if (!sawContinue && data.startsWith("HTTP/1.1 100 Continue\r\n\r\n")) {
        sawContinue = true;
        data = data.slice("HTTP/1.1 100 Continue\r\n\r\n".length);
        socket.write(body);
      }
    });
    socket.on("close", () => (closed = true));
    socket.write(
      `${[...head, "Expect: 100-continue", `Content-Length: ${body.length}`].join("\r\n")}\r\n\r\n`,
    );
    setTimeout(() => {
      socket.destroy();
      resolve({ sawContinue, final: data, closed });
    }, waitMs);
  });
}

describe("Expect: 100-continue", () => {
  it("refuses a request without a valid token before the client sends its body, and closes the connection", async () => {
    const result = await expectContinue(["POST /echo/upload HTTP/1.1", "Host: localhost"], "x".repeat(1000));
    expect(result.sawContinue).toBe(false);
    expect(result.final).toMatch(/^HTTP\/1\.1 401 /);
    expect(result.final).toMatch(/\r\nconnection: close\r\n/i);
    expect(result.closed).toBe(true);
  });

  it("sends 100 (Continue) once the token and scopes passed, and forwards the body", async () => {
    const t = await token("read_invoice");
    const body = "y".repeat(1000);
    const result = await expectContinue(
      ["POST /echo/upload HTTP/1.1", "Host: localhost", `Authorization: Bearer ${t}`, "Connection: close"],
      body,
    );
    expect(result.sawContinue).toBe(true);
    expect(result.final).toMatch(/^HTTP\/1\.1 200 /);
    const echoed = JSON.parse(result.final.slice(result.final.indexOf("\r\n\r\n") + 4)) as Echo;
    expect(echoed.body).toEqual({ bytes: 1000, sha256: createHash("sha256").update(body).digest("hex") });
    // The expectation is the gateway's to answer: it is not passed on.
    expect(echoed.headers.expect).toBeUndefined();
  });

  it("answers 403 without 100 when the token lacks the route's scope", async () => {
    const t = await token("read_invoice");
    const result = await expectContinue(
      ["POST /write/upload HTTP/1.1", "Host: localhost", `Authorization: Bearer ${t}`],
      "z",
    );
    expect(result.sawContinue).toBe(false);
    expect(result.final).toMatch(/^HTTP\/1\.1 403 /);
  });
});

describe("admin port and audit", () => {
  it("serves healthz, readyz, routes and metrics", async () => {
    expect((await fetch(`${gateway.adminUrl}/healthz`)).status).toBe(200);
    // What describes this moment is never cached on the way (a stale 200 from /readyz would hide an outage).
    for (const path of ["/healthz", "/readyz", "/routes"]) {
      const response = await request(`${gateway.adminUrl}${path}`);
      await response.body.dump();
      expect(response.headers["cache-control"], path).toBe("no-store");
    }
    const ready = (await (await fetch(`${gateway.adminUrl}/readyz`)).json()) as {
      ready: boolean;
      revision: string;
    };
    expect(ready.ready).toBe(true);
    expect(ready.revision).toMatch(/^[0-9a-f]{16}$/);
    const routes = (await (await fetch(`${gateway.adminUrl}/routes`)).json()) as {
      routes: { path: { value: string } }[];
    };
    expect(routes.routes.map((r) => r.path.value)).toContain("/echo");
    expect(JSON.stringify(routes)).not.toContain("gateway-secret");
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    expect(metrics).toContain("phantomgate_requests_total");
    expect(metrics).toContain("phantomgate_request_duration_seconds_bucket");
    expect(metrics).toContain(`phantomgate_snapshot_info{revision="${ready.revision}"} 1`);
    // Node's process metrics under the names standard dashboards use, with no prefix of ours.
    expect(metrics).toMatch(/^process_cpu_seconds_total \d/m);
    expect(metrics).toMatch(/^process_resident_memory_bytes \d/m);
    expect(metrics).toMatch(/^nodejs_heap_size_used_bytes \d/m);
    expect(metrics).not.toContain("phantomgate_process_");
    // Which release and which Node.js, as a gauge and in the start-up log line.
    expect(metrics).toContain(
      `phantomgate_build_info{version="${productVersion}",node_version="${process.version}"} 1`,
    );
    const started = gateway
      .output()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { msg?: string; version?: string })
      .find((line) => line.msg === "gateway listening");
    expect(started?.version).toBe(productVersion);
  });

  it("writes one audit line per request and never a raw token anywhere", async () => {
    const t = await token("read_invoice");
    await call("/echo/audited", { token: t });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const lines = readFileSync(gateway.auditFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const mine = lines.find(
      (l) => l.pathTemplate === "/echo/**" && l.decision === "allow" && l.status === 200,
    );
    expect(mine).toMatchObject({
      type: "audit",
      method: "GET",
      clientId: "demo-client",
      sub: "demo-client",
      authMode: "phantom",
    });
    expect(mine?.tokenFingerprint).toMatch(/^[\w-]{43}$/);
    expect(lines.some((l) => l.decision === "deny" && l.reason === "PG_ERR_INSUFFICIENT_SCOPE")).toBe(true);
    const everything =
      readFileSync(gateway.auditFile, "utf8") +
      gateway.output() +
      (await (await fetch(`${gateway.adminUrl}/metrics`)).text());
    for (const raw of tokensSeen) expect(everything).not.toContain(raw);
  });

  // Linux: the umask (which the gateway inherits, and which can only take bits away) comes from /proc.
  it.skipIf(process.platform !== "linux")(
    "creates the audit file for its owner and group only (mode 0640: lines name subjects and clients)",
    () => {
      // The gateway made the file, in a directory of its own.
      const umask = Number.parseInt(
        /^Umask:\s*([0-7]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0",
        8,
      );
      expect((statSync(gateway.auditFile).mode & 0o777).toString(8)).toBe((0o640 & ~umask).toString(8));
    },
  );
});
