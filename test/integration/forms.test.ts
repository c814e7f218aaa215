// Form bodies an upstream framework reads `_method` and `access_token` from (PHP, Laravel, Symfony, Rails):
// form-urlencoded ones however their Content-Type is spelled or left out, names PHP cuts at NUL, and multipart
// bodies checked as they stream; and the process-wide budget for the form bodies held while they are checked.
// A real gateway process, the demo authorization server and an upstream that records what reached it.
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import { Readable } from "node:stream";
import { connect, type AddressInfo, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { startDemoAuthServer, type DemoAuthServer } from "../../src/demo/auth-server.ts";
import { eventually } from "../helpers/control-plane-gateway.ts";
import { makeConfigDir, startGatewayProcess, type GatewayProcess } from "../helpers/gateway-process.ts";
import { getToken, rawRequest } from "../helpers/http.ts";
import { allManifests } from "../helpers/manifests.ts";

/** What the upstream got of one request. */
interface Received {
  url: string;
  method: string;
  bytes: number;
  sha256: string;
  /** The whole body arrived. */
  complete: boolean;
  contentType: string | undefined;
}

/** The bodies the upstream got, by path (not in the JSON answer: a 1 MiB file would bloat it). */
const bodies = new Map<string, Buffer>();

const FORM_BUDGET = 256 * 1024;

let as: DemoAuthServer;
let upstream: Server;
let gateway: GatewayProcess;
let token: string;
const received: Received[] = [];

beforeAll(async () => {
  as = await startDemoAuthServer({ port: 0 });
  upstream = createServer((req, res) => {
    const seen: Received = {
      url: req.url ?? "",
      method: req.method ?? "",
      bytes: 0,
      sha256: "",
      complete: false,
      contentType: req.headers["content-type"],
    };
    received.push(seen);
    const hash = createHash("sha256");
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => {
      seen.bytes += chunk.length;
      hash.update(chunk);
      chunks.push(chunk);
    });
    req.on("error", () => undefined);
    req.on("end", () => {
      seen.complete = true;
      seen.sha256 = hash.digest("hex");
      bodies.set(seen.url, Buffer.concat(chunks));
      if (seen.url.endsWith("?big=1")) {
        // An answer larger than socket buffers, for a client that does not read it.
        res
          .writeHead(200, { "content-type": "application/octet-stream" })
          .end(Buffer.alloc(16 * 1024 * 1024));
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(seen));
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  gateway = await startGatewayProcess(
    makeConfigDir(
      allManifests({
        issuer: as.issuer,
        echoOrigin: origin,
        maxBodyBytes: 4 * 1024 * 1024,
        requestTimeoutMs: 2_000,
      }),
    ),
    ["--max-form-buffer-bytes", String(FORM_BUDGET)],
  );
  token = await getToken(as.tokenEndpoint, "read_invoice");
});

afterAll(async () => {
  await gateway.stop();
  upstream.closeAllConnections();
  upstream.close();
  await as.close();
});

let serial = 0;
/** A path no other request uses, to find what the upstream got of this one. */
const uniquePath = (): string => `/echo/forms/${++serial}`;
const receivedAt = (path: string): Received[] => received.filter((r) => r.url.startsWith(path));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function post(
  path: string,
  headers: Record<string, string>,
  body: string | Buffer,
): Promise<{
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown>;
}> {
  const response = await request(`${gateway.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, ...headers },
    body,
  });
  const text = await response.body.text();
  return {
    status: response.statusCode,
    headers: response.headers,
    json: JSON.parse(text) as Record<string, unknown>,
  };
}

const sha256 = (body: string | Buffer): string => createHash("sha256").update(body).digest("hex");

describe("form-urlencoded bodies, however they are labelled", () => {
  it.each([
    ["application/x-www-form-urlencoded,x", "a=1&_method=DELETE", "PG_ERR_BAD_REQUEST"],
    ["Application/X-WWW-Form-Urlencoded , text/plain", "_method=DELETE", "PG_ERR_BAD_REQUEST"],
    [undefined, "a=1&_method=DELETE", "PG_ERR_BAD_REQUEST"],
    [undefined, "access_token=abc", "PG_ERR_TOKEN_IN_QUERY"],
    ["application/x-www-form-urlencoded", "_method%00=DELETE", "PG_ERR_BAD_REQUEST"],
    ["application/x-www-form-urlencoded", "a=1&access_token%00x=abc", "PG_ERR_TOKEN_IN_QUERY"],
  ])("Content-Type %j with %j is refused and never reaches the upstream", async (contentType, body, code) => {
    const path = uniquePath();
    const response = await post(path, contentType === undefined ? {} : { "content-type": contentType }, body);
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ code });
    await sleep(50);
    expect(receivedAt(path)).toEqual([]);
  });

  it("refuses `_method` cut at NUL in the query", async () => {
    const path = uniquePath();
    const response = await post(`${path}?_method%00=DELETE`, { "content-type": "application/json" }, "{}");
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    expect(receivedAt(path)).toEqual([]);
  });

  it("forwards a body without a Content-Type intact when it holds no such field", async () => {
    const path = uniquePath();
    const body = "a=1&method=x&token=y";
    const response = await post(path, {}, body);
    expect(response.status).toBe(200);
    expect(response.json).toMatchObject({ sha256: sha256(body), complete: true });
  });
});

/** A multipart/form-data body of `parts`, each a field (a string) or a file (a Buffer). */
function multipart(boundary: string, parts: readonly [string, string | Buffer][]): Buffer {
  const pieces: Buffer[] = [];
  for (const [name, value] of parts) {
    const file = Buffer.isBuffer(value)
      ? `; filename="${name}.bin"\r\nContent-Type: application/octet-stream`
      : "";
    pieces.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"${file}\r\n\r\n`),
    );
    pieces.push(Buffer.isBuffer(value) ? value : Buffer.from(value));
    pieces.push(Buffer.from("\r\n"));
  }
  pieces.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(pieces);
}

const multipartType = (boundary: string): Record<string, string> => ({
  "content-type": `multipart/form-data; boundary=${boundary}`,
});

/** The gateway's own boundary from the Content-Type the upstream got. */
function forwardedBoundary(seen: Received | undefined): string {
  const boundary = /; boundary=(phantomgate-[0-9a-f]{32})$/.exec(seen?.contentType ?? "")?.[1];
  if (boundary === undefined) throw new Error(`no gateway boundary in ${String(seen?.contentType)}`);
  return boundary;
}

/** The names of the parts of a body under `boundary`, as any multipart parser splits it. */
function partNames(body: Buffer, boundary: string): string[] {
  return body
    .toString("latin1")
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((part) => /name="([^"]*)"/.exec(part)?.[1] ?? "(none)");
}

describe("multipart bodies: taken apart, checked and written again under the gateway's boundary", () => {
  const file = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < file.length; i++) file[i] = (i * 7919) % 251;

  it("forwards a field and a 1 MiB file unchanged, under a boundary of the gateway's own", async () => {
    const path = uniquePath();
    const parts: [string, string | Buffer][] = [
      ["title", "an invoice"],
      ["upload", file],
    ];
    const response = await post(path, multipartType("b0undary"), multipart("b0undary", parts));
    expect(response.status).toBe(200);
    const [seen] = receivedAt(path);
    expect(seen?.contentType).toMatch(/^multipart\/form-data; boundary=phantomgate-[0-9a-f]{32}$/);
    const expected = multipart(forwardedBoundary(seen), parts);
    expect(response.json).toMatchObject({ bytes: expected.length, sha256: sha256(expected), complete: true });
  });

  it.each([
    ["_method", "DELETE", "PG_ERR_BAD_REQUEST"],
    ["_METHOD", "DELETE", "PG_ERR_BAD_REQUEST"],
    // A control character in a name is refused whatever the name.
    ["_method\u0000", "DELETE", "PG_ERR_BAD_MULTIPART"],
    ["access_token", "abc", "PG_ERR_TOKEN_IN_QUERY"],
    ["access.token[]", Buffer.from("abc"), "PG_ERR_TOKEN_IN_QUERY"],
    // Rack 2 drops leading brackets and a stray `]`.
    ["_method]", "DELETE", "PG_ERR_BAD_REQUEST"],
    ["[_method]", "DELETE", "PG_ERR_BAD_REQUEST"],
    ["]access_token", "abc", "PG_ERR_TOKEN_IN_QUERY"],
    ["[[access_token]]", "abc", "PG_ERR_TOKEN_IN_QUERY"],
  ])(
    "refuses a part named %j after a large file, and the upstream never gets the whole body",
    async (name, value, code) => {
      const path = uniquePath();
      const body = multipart("xyz", [
        ["upload", file],
        [name, value],
      ]);
      const response = await post(path, multipartType("xyz"), body);
      expect(response.status).toBe(400);
      expect(response.json).toMatchObject({ code });
      await sleep(100);
      expect(receivedAt(path).filter((r) => r.complete)).toEqual([]);
    },
  );

  it("refuses `_method` in a small multipart body (curl -F _method=DELETE)", async () => {
    const path = uniquePath();
    const response = await post(
      path,
      { "content-type": "Multipart/Form-Data; boundary=q" },
      multipart("q", [["_method", "DELETE"]]),
    );
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    await sleep(100);
    expect(receivedAt(path).filter((r) => r.complete)).toEqual([]);
  });

  const part = (disposition: string, value = "DELETE"): string =>
    `--b\r\nContent-Disposition: ${disposition}\r\n\r\n${value}\r\n`;
  it.each([
    ["no boundary", "multipart/form-data", multipart("b", [["a", "1"]])],
    ["a truncated body", "multipart/form-data; boundary=b", multipart("b", [["a", "1"]]).subarray(0, 40)],
    [
      "a part without a Content-Disposition",
      "multipart/form-data; boundary=b",
      "--b\r\nX-Other: 1\r\n\r\nDELETE\r\n--b--\r\n",
    ],
    // Each of these once crashed the gateway or named a part differently from what PHP or Rack read.
    ["a form-data part without a name", "multipart/form-data; boundary=b", `${part("form-data")}--b--\r\n`],
    ["form-data; with no parameter", "multipart/form-data; boundary=b", `${part("form-data;")}--b--\r\n`],
    [
      "a file without a name",
      "multipart/form-data; boundary=b",
      `${part('form-data; filename="a"')}--b--\r\n`,
    ],
    [
      "a name given twice",
      "multipart/form-data; boundary=b",
      `${part('form-data; name="x"; name="_method"')}--b--\r\n`,
    ],
    [
      "a name* parameter",
      "multipart/form-data; boundary=b",
      `${part("form-data; name=\"_method\"; name*=UTF-8''x")}--b--\r\n`,
    ],
    [
      "a backslash in a name",
      "multipart/form-data; boundary=b",
      `${part('form-data; name="\\_method"')}--b--\r\n`,
    ],
    [
      "a Content-Disposition over 1 KiB (PHP reads header lines in pieces of 5 KiB)",
      "multipart/form-data; boundary=b",
      `${part(`form-data; name="${" ".repeat(5075)}_method:x"`)}--b--\r\n`,
    ],
    [
      "a Content-Type naming another header (older Rack searches the whole section)",
      "multipart/mixed; boundary=b",
      "--b\r\nContent-Transfer-Encoding: Content-Type: _method\r\nContent-Type: text/plain\r\n\r\nDELETE\r\n--b--\r\n",
    ],
    [
      "an unquoted name with a space",
      "multipart/form-data; boundary=b",
      `${part("form-data; name=_method x")}--b--\r\n`,
    ],
    // Rack 2 takes the last `; name=` of the line, also inside a quoted name or file name.
    [
      "a ';' in a name",
      "multipart/form-data; boundary=b",
      `${part('form-data; name="x; name=_method"')}--b--\r\n`,
    ],
    [
      "a ';' in a file name",
      "multipart/form-data; boundary=b",
      `${part('form-data; name="f"; filename="a; name=_method"')}--b--\r\n`,
    ],
    // Rack 3 reads `\"` as an escaped quote, which would let the file name swallow a second parameter.
    [
      "a backslash in a file name",
      "multipart/form-data; boundary=b",
      `${part('form-data; name="ok"; filename="a\\"; x=1')}--b--\r\n`,
    ],
    [
      "a filename* that is not RFC 8187",
      "multipart/form-data; boundary=b",
      `${part('form-data; name="ok"; filename*=x\\Xname=access_token')}--b--\r\n`,
    ],
    ["an empty name", "multipart/form-data; boundary=b", `${part('form-data; name=""')}--b--\r\n`],
    // Rack 2 searches a part's whole header section for `; filename=` and `Content-ID:`, also in quoted values.
    [
      "a naming parameter in another header",
      "multipart/mixed; boundary=b",
      "--b\r\nContent-Disposition: attachment\r\nContent-Type: text/plain; filename=access_token\r\n\r\nx\r\n--b--\r\n",
    ],
    [
      "a '; filename=' inside a file name",
      "multipart/mixed; boundary=b",
      "--b\r\nContent-Disposition: attachment; filename=\"a; filename=_method\"; filename*=a+b''x\r\n\r\nx\r\n--b--\r\n",
    ],
    [
      "a Content-ID: inside a file name",
      "multipart/mixed; boundary=b",
      '--b\r\nContent-Disposition: attachment; filename="Content-ID:_method]"\r\n\r\nx\r\n--b--\r\n',
    ],
    // Older Rack searches the whole header section for Content-ID: and Content-Disposition:.
    [
      "a header inside another header's value",
      "multipart/mixed; boundary=b",
      "--b\r\nContent-Type: text/plain; x=Content-ID: _method\r\n\r\nDELETE\r\n--b--\r\n",
    ],
    [
      "a header section that never ends",
      "multipart/form-data; boundary=b",
      '--b\r\nContent-Disposition: form-data; name="_method"\n\nDELETE\r\n--b--\r\n',
    ],
  ])("answers 400 PG_ERR_BAD_MULTIPART for %s, never forwarded whole", async (_label, contentType, body) => {
    const path = uniquePath();
    const response = await post(path, { "content-type": contentType }, body);
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ code: "PG_ERR_BAD_MULTIPART" });
    await sleep(100);
    expect(receivedAt(path).filter((r) => r.complete)).toEqual([]);
  });

  it.each([
    [
      "a close delimiter before the first part",
      "multipart/form-data; boundary=B",
      '--B--\r\n--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n',
      [],
    ],
    [
      "a part after the close delimiter",
      "multipart/form-data; boundary=B",
      '--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--B--\r\n--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n',
      ["a"],
    ],
    [
      "LF-only line ends inside a part (PHP splits there)",
      "multipart/form-data; boundary=B",
      '--B\r\nContent-Disposition: form-data; name="x"\r\n\r\nv\n--B\nContent-Disposition: form-data; name="_method"\n\nDELETE\r\n--B--\r\n',
      ["x"],
    ],
    [
      "a single-quoted name, written again inside double quotes (read literally)",
      "multipart/form-data; boundary=B",
      "--B\r\nContent-Disposition: form-data; name='_method'x\r\n\r\nDELETE\r\n--B--\r\n",
      ["'_method'x"],
    ],
    [
      "an apostrophe and a ';' in a file name (ordinary uploads)",
      "multipart/form-data; boundary=B",
      '--B\r\nContent-Disposition: form-data; name="cv"; filename="Bob\'s notes; draft.pdf"\r\n\r\nPDF\r\n--B--\r\n',
      ["cv"],
    ],
    [
      "a second boundary parameter",
      "multipart/form-data; boundary=P; boundary=B",
      '--P\r\nContent-Disposition: form-data; name="x"\r\n\r\n--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--B--\r\n--P--\r\n',
      ["x"],
    ],
  ])("%s: the upstream reads only the parts the gateway read", async (_label, contentType, body, names) => {
    const path = uniquePath();
    const response = await post(path, { "content-type": contentType }, body);
    expect(response.status).toBe(200);
    const [seen] = receivedAt(path);
    const boundary = forwardedBoundary(seen);
    expect(seen?.contentType).toBe(`multipart/form-data; boundary=${boundary}`);
    expect(partNames(bodies.get(seen?.url ?? "") ?? Buffer.alloc(0), boundary)).toEqual(names);
  });

  it("an unnamed part that Rack would name after its file name or Content-Type is checked by that name", async () => {
    const mixed = { "content-type": "multipart/mixed; boundary=m" };
    const byType = await post(
      uniquePath(),
      mixed,
      "--m\r\nContent-Type: access_token\r\n\r\nabc\r\n--m--\r\n",
    );
    expect(byType.status).toBe(400);
    expect(byType.json).toMatchObject({ code: "PG_ERR_TOKEN_IN_QUERY" });
    const byFile = await post(
      uniquePath(),
      mixed,
      '--m\r\nContent-Disposition: attachment; filename="_method"\r\n\r\nDELETE\r\n--m--\r\n',
    );
    expect(byFile.status).toBe(400);
    expect(byFile.json).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
  });

  it("an unnamed part's file name is checked as Rack reads it: decoded, its last segment, or filename*", async () => {
    const mixed = { "content-type": "multipart/mixed; boundary=m" };
    for (const disposition of [
      'attachment; filename="%5Fmethod"',
      'attachment; filename="a/_method"',
      "attachment; filename*=UTF-8''_method",
      // Not UTF-8 once decoded: Rack reads the bad byte as U+FFFD, and `_method[…]` is `_method`.
      'attachment; filename="%5Fmethod%5B%FF%5D"',
    ]) {
      const response = await post(
        uniquePath(),
        mixed,
        `--m\r\nContent-Disposition: ${disposition}\r\n\r\nDELETE\r\n--m--\r\n`,
      );
      expect(response.status, disposition).toBe(400);
      expect(response.json).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
    }
  });

  it("a part with no header kept gets a Content-Type, so no reader takes its body for its headers", async () => {
    const path = uniquePath();
    const body = "--XB\r\n\r\nContent-ID: _method\r\n\r\nDELETE\r\n--XB--\r\n";
    const response = await post(path, { "content-type": "multipart/mixed; boundary=XB" }, body);
    expect(response.status).toBe(200);
    const [seen] = receivedAt(path);
    const boundary = /boundary=(phantomgate-[0-9a-f]{32})/.exec(seen?.contentType ?? "")?.[1] ?? "";
    expect(bodies.get(seen?.url ?? "")?.toString("latin1")).toBe(
      `--${boundary}\r\nContent-Type: text/plain\r\n\r\nContent-ID: _method\r\n\r\nDELETE\r\n--${boundary}--\r\n`,
    );
  });

  it("a type parameter that is not a media type is dropped (it could carry a second boundary)", async () => {
    const path = uniquePath();
    const response = await post(
      path,
      { "content-type": 'multipart/related; boundary=r; type="a; boundary=zzz"' },
      "--r\r\nContent-Type: text/plain\r\n\r\nhello\r\n--r--\r\n",
    );
    expect(response.status).toBe(200);
    expect(receivedAt(path)[0]?.contentType).toMatch(
      /^multipart\/related; boundary=phantomgate-[0-9a-f]{32}$/,
    );
  });

  it("multipart/related: parts without names pass, with their type; a Content-ID naming _method is refused", async () => {
    const path = uniquePath();
    const related = 'multipart/related; boundary=r; type="application/json"';
    const body =
      '--r\r\nContent-Type: application/json\r\n\r\n{"name":"a.txt"}\r\n' +
      "--r\r\nContent-Type: text/plain\r\nContent-ID: <media>\r\n\r\nhello\r\n--r--\r\n";
    const response = await post(path, { "content-type": related }, body);
    expect(response.status).toBe(200);
    const [seen] = receivedAt(path);
    const boundary = /boundary=(phantomgate-[0-9a-f]{32})/.exec(seen?.contentType ?? "")?.[1] ?? "";
    expect(seen?.contentType).toBe(`multipart/related; boundary=${boundary}; type="application/json"`);
    expect(bodies.get(seen?.url ?? "")?.toString("latin1")).toBe(
      `--${boundary}\r\nContent-Type: application/json\r\n\r\n{"name":"a.txt"}\r\n` +
        `--${boundary}\r\nContent-Type: text/plain\r\nContent-ID: <media>\r\n\r\nhello\r\n--${boundary}--\r\n`,
    );
    const refused = await post(
      uniquePath(),
      { "content-type": related },
      "--r\r\nContent-ID: <_method>\r\n\r\nDELETE\r\n--r--\r\n",
    );
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ code: "PG_ERR_BAD_REQUEST" });
  });

  it("holds back the end of a body that does not end as a whole multipart body", async () => {
    const path = uniquePath();
    const whole = multipart("b", [["upload", file]]);
    const response = await post(path, multipartType("b"), whole.subarray(0, whole.length - 9));
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ code: "PG_ERR_BAD_MULTIPART" });
    await sleep(100);
    expect(receivedAt(path).filter((r) => r.complete)).toEqual([]);
  });

  it("refuses a compressed multipart body with 415", async () => {
    const path = uniquePath();
    const response = await post(
      path,
      { ...multipartType("b"), "content-encoding": "gzip" },
      Buffer.from([0x1f, 0x8b, 8, 0]),
    );
    expect(response.status).toBe(415);
    expect(response.json).toMatchObject({ code: "PG_ERR_UNSUPPORTED_ENCODING" });
  });
});

describe("the budget for form bodies held at once", () => {
  /** Opens a form request declaring `declared` bytes and sends `sent` of them, then holds the connection. */
  function holdForm(path: string, declared: number, sent: number): Socket {
    const socket = connect(gateway.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${declared}\r\n\r\n${"a".repeat(sent)}`,
    );
    return socket;
  }

  it("answers 413 for a form larger than the whole budget (waiting would not help), declared or not", async () => {
    const body = `a=${"d".repeat(300 * 1024)}`;
    const declared = await post(uniquePath(), { "content-type": "application/x-www-form-urlencoded" }, body);
    expect(declared.status).toBe(413);
    expect(declared.json).toMatchObject({ code: "PG_ERR_BODY_TOO_LARGE" });
    const path = uniquePath();
    const chunked = await request(`${gateway.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/x-www-form-urlencoded" },
      body: Readable.from(Array.from({ length: 6 }, () => Buffer.from("e".repeat(64 * 1024)))),
    });
    expect(chunked.statusCode).toBe(413);
    await chunked.body.text();
    expect(receivedAt(path)).toEqual([]);
  });

  it("streams an untyped PUT body (only an untyped POST is a form, to Rack): nothing held, nothing refused", async () => {
    const path = uniquePath();
    const body = `_method=DELETE&${"f".repeat(300 * 1024)}`;
    const response = await request(`${gateway.url}${path}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}` },
      body,
    });
    expect(response.statusCode).toBe(200);
    expect(await response.body.json()).toMatchObject({ sha256: sha256(body), complete: true });
  });

  it("gives a form's bytes back once the upstream answers, not when a slow client has read the answer", async () => {
    const path = uniquePath();
    const form = `a=${"g".repeat(200 * 1024)}`;
    // Forwarded, then the client reads none of the 16 MiB answer: the exchange stays open.
    const reader = connect(gateway.port, "127.0.0.1");
    reader.on("error", () => undefined);
    reader.pause();
    reader.write(
      `POST ${path}?big=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form.length}\r\n\r\n${form}`,
    );
    try {
      await eventually(() => receivedAt(path).some((r) => r.complete), 5_000, "the form forwarded");
      await sleep(200);
      // 200 KiB of 256 KiB would still be held without the release: this one would get 503.
      const second = await post(uniquePath(), { "content-type": "application/x-www-form-urlencoded" }, form);
      expect(second.status).toBe(200);
    } finally {
      reader.destroy();
    }
  });

  it("a form body trickled slower than the rule's timeout is 408, and its bytes go back", async () => {
    const path = uniquePath();
    const socket = holdForm(path, 200_000, 100 * 1024);
    const answer = new Promise<string>((resolve) => {
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => (text += chunk));
      socket.on("close", () => resolve(text));
    });
    // The rule's timeout is 2 s: the gateway answers and closes the connection.
    const text = await answer;
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toContain('"code":"PG_ERR_REQUEST_TIMEOUT"');
    const form = `a=${"h".repeat(200 * 1024)}`;
    expect(
      (await post(uniquePath(), { "content-type": "application/x-www-form-urlencoded" }, form)).status,
    ).toBe(200);
    expect(receivedAt(path)).toEqual([]);
  });

  it("answers 503 with Retry-After over the budget, and frees the budget when the held requests end", async () => {
    const path = uniquePath();
    const held = [holdForm(path, 200_000, 100 * 1024), holdForm(path, 200_000, 100 * 1024)];
    await sleep(300);
    // 200 KiB held of 256 KiB: another 100 KiB does not fit.
    const body = `a=${"b".repeat(100 * 1024)}`;
    const refused = await rawRequest(
      gateway.port,
      [
        `POST ${path} HTTP/1.1`,
        "Host: x",
        `Authorization: Bearer ${token}`,
        "Content-Type: application/x-www-form-urlencoded",
        `Content-Length: ${body.length}`,
      ],
      body,
    );
    expect(refused.status).toBe(503);
    expect(refused.head.toLowerCase()).toContain("\r\nretry-after: ");
    expect(JSON.parse(refused.body)).toMatchObject({ code: "PG_ERR_FORM_BUDGET_EXHAUSTED" });
    for (const socket of held) socket.destroy();
    // With the two held bodies gone, 200 KiB fits again.
    const large = `a=${"c".repeat(200 * 1024)}`;
    await eventually(
      async () =>
        (await post(uniquePath(), { "content-type": "application/x-www-form-urlencoded" }, large)).status ===
        200,
      5_000,
      "a form body within the freed budget",
    );
    expect(receivedAt(path)).toEqual([]);
  });
});
