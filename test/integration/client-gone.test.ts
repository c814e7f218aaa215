// Clients that leave early: while their token is checked at a slow AS, while their form body or upload is
// read, or that send too much. Nothing is forwarded for a client that is gone, nothing stays in flight, and every
// request still gets its audit line, with the client's departure (499, PG_ERR_CLIENT_CLOSED) rather than a
// gateway or upstream failure. A real gateway process, demo AS and a counting upstream.
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { makeConfigDir, startGatewayProcess, type GatewayProcess } from "../helpers/gateway-process.ts";
import { getToken, rawRequest } from "../helpers/http.ts";
import { allManifests } from "../helpers/manifests.ts";

let as: DemoAuthServer;
let upstream: Server;
let gateway: GatewayProcess;
const upstreamPaths: string[] = [];

beforeAll(async () => {
  as = await startDemoAuthServer({ port: 0 });
  upstream = createServer((req, res) => {
    upstreamPaths.push(req.url ?? "");
    if (req.url?.includes("/early") === true) {
      // Answers without reading the request body, as an API refusing an upload does.
      res.writeHead(401, { "content-type": "text/plain" }).end("no");
      return;
    }
    req.resume();
    req.on("end", () => res.end("hello"));
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  gateway = await startGatewayProcess(
    makeConfigDir(allManifests({ issuer: as.issuer, echoOrigin: origin, maxBodyBytes: 1024 })),
  );
});

afterAll(async () => {
  await gateway.stop();
  upstream.closeAllConnections();
  upstream.close();
  await as.close();
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface AuditLine {
  requestId: string;
  method: string;
  route?: string;
  status: number;
  decision: string;
  reason: string;
}

function auditLines(): AuditLine[] {
  // The gateway opens its audit file in the background: it may not exist before the first line.
  if (!existsSync(gateway.auditFile)) return [];
  return readFileSync(gateway.auditFile, "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as AuditLine);
}

/** Waits for the audit trail to grow by `count` lines (written in batches) and returns the new ones. */
async function newAuditLines(before: number, count: number): Promise<AuditLine[]> {
  for (let waited = 0; waited < 5_000; waited += 50) {
    const lines = auditLines();
    if (lines.length >= before + count) return lines.slice(before);
    await sleep(50);
  }
  throw new Error(`the audit trail did not grow by ${count} lines`);
}

async function inflight(): Promise<number> {
  const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
  return Number(/^phantomgate_inflight_requests (\d+)$/m.exec(text)?.[1]);
}

/** Writes `head` (and `body`) on a fresh connection and destroys it after `afterMs`. */
async function sendAndLeave(head: string, body: string, afterMs: number): Promise<void> {
  const socket = connect(gateway.port, "127.0.0.1");
  socket.on("error", () => undefined);
  socket.write(head + body);
  await sleep(afterMs);
  socket.destroy();
}

describe("a client that leaves", () => {
  it("while its token is checked at a slow AS: nothing is forwarded, nothing stays in flight, one audit line", async () => {
    const before = auditLines().length;
    const seen = upstreamPaths.length;
    as.setDelayMs(400);
    try {
      for (let i = 0; i < 3; i++) {
        const token = await getToken(as.tokenEndpoint, "read_invoice"); // fresh: not cached
        await sendAndLeave(
          `GET /echo/gone-${i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`,
          "",
          100,
        );
      }
      await sleep(600);
    } finally {
      as.setDelayMs(0);
    }
    const lines = await newAuditLines(before, 3);
    expect(lines.map((line) => [line.status, line.reason])).toEqual([
      [499, "PG_ERR_CLIENT_CLOSED"],
      [499, "PG_ERR_CLIENT_CLOSED"],
      [499, "PG_ERR_CLIENT_CLOSED"],
    ]);
    expect(upstreamPaths.slice(seen)).toEqual([]);
    expect(await inflight()).toBe(0);
  });

  it("in the middle of a streamed upload: audited as the client's doing, not as a 502", async () => {
    const before = auditLines().length;
    await sendAndLeave(
      "POST /public/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n",
      "x".repeat(100),
      200,
    );
    const [line] = await newAuditLines(before, 1);
    expect(line).toMatchObject({ status: 499, reason: "PG_ERR_CLIENT_CLOSED", decision: "abort" });
    expect(await inflight()).toBe(0);
  });

  it("in the middle of a form body the gateway reads for tokens: audited as the client's doing, not a 500", async () => {
    const before = auditLines().length;
    await sendAndLeave(
      "POST /public/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
      "a=b",
      200,
    );
    const [line] = await newAuditLines(before, 1);
    expect(line).toMatchObject({ status: 499, reason: "PG_ERR_CLIENT_CLOSED" });
  });

  it("a form body over the route's limit gets 413 and its audit line (the handler does not crash)", async () => {
    const before = auditLines().length;
    const response = await rawRequest(
      gateway.port,
      [
        "POST /public/form HTTP/1.1",
        "Host: x",
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Length: 2000",
      ],
      "a".repeat(2000),
    );
    expect(response.status).toBe(413);
    const [line] = await newAuditLines(before, 1);
    expect(line).toMatchObject({ status: 413, reason: "PG_ERR_BODY_TOO_LARGE", decision: "deny" });
    expect(gateway.output()).not.toContain("request handler crashed");
  });

  it("a chunked form body that grows over the route's limit gets its 413 too", async () => {
    const before = auditLines().length;
    const chunk = `${(1000).toString(16)}\r\n${"a".repeat(1000)}\r\n`;
    const response = await rawRequest(
      gateway.port,
      [
        "POST /public/form HTTP/1.1",
        "Host: x",
        "Content-Type: application/x-www-form-urlencoded",
        "Transfer-Encoding: chunked",
      ],
      `${chunk}${chunk}0\r\n\r\n`,
    );
    expect(response.status).toBe(413);
    const [line] = await newAuditLines(before, 1);
    expect(line).toMatchObject({ status: 413, reason: "PG_ERR_BODY_TOO_LARGE" });
  });
});

describe("an upstream that answers before it has read the request body", () => {
  it("relays the answer with Connection: close and ends the connection, which nothing reads any more", async () => {
    const socket = connect(gateway.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.setEncoding("utf8");
    let received = "";
    socket.on("data", (chunk: string) => (received += chunk));
    const closed = new Promise<boolean>((resolve) => {
      socket.on("close", () => resolve(true));
      setTimeout(() => resolve(false), 3_000);
    });
    // 10 of the 1,000 declared bytes: the rest is never sent, as a client waiting on a slow upload would. (A body
    // without a Content-Type would be read whole as a form before anything is forwarded.)
    socket.write(
      "POST /public/early HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789",
    );
    const ended = await closed;
    socket.destroy();
    expect(received).toMatch(/^HTTP\/1\.1 401 /);
    expect(received.toLowerCase()).toContain("\r\nconnection: close\r\n");
    expect(ended).toBe(true);
  });
});
