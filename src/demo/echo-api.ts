// The demo echo API: answers with the method, path, query and headers it received, so a user can see exactly
// what crossed the gateway (the internal JWT instead of the opaque token, X-Forwarded-*, traceparent).
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

function decodeJwtPayload(authorization: string | undefined): unknown {
  const token = authorization?.startsWith("Bearer ") === true ? authorization.slice(7) : undefined;
  const payload = token?.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as unknown;
  } catch {
    return undefined;
  }
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://echo.invalid");
  // Test hooks: /…/stream?bytes=N streams N bytes back; /…/slow?ms=N answers after N ms.
  const streamBytes = Number(url.searchParams.get("bytes") ?? "0");
  if (url.pathname.endsWith("/stream") && streamBytes > 0) {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let left = streamBytes;
    while (left > 0) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= piece.length;
      if (!res.write(piece)) await new Promise((resolve) => res.once("drain", resolve));
    }
    res.end();
    return;
  }
  const delayMs = Number(url.searchParams.get("ms") ?? "0");
  if (url.pathname.endsWith("/slow") && delayMs > 0)
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  const hash = createHash("sha256");
  let bodyBytes = 0;
  for await (const chunk of req) {
    const buffer = chunk as Buffer;
    bodyBytes += buffer.length;
    hash.update(buffer);
  }
  const body = JSON.stringify(
    {
      method: req.method,
      path: url.pathname,
      query: url.search,
      headers: req.headers,
      jwtClaims: decodeJwtPayload(req.headers.authorization),
      body: { bytes: bodyBytes, sha256: hash.digest("hex") },
    },
    null,
    2,
  );
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** Starts the echo API on 127.0.0.1:`port` (0 = any). */
export async function startEchoApi(port: number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  const address = server.address();
  return { server, port: typeof address === "object" && address !== null ? address.port : port };
}
