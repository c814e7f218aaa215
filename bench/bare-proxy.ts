// The bare pass-through proxy baselines: node:http in front, an undici Agent behind, bodies streamed both ways,
// hop-by-hop headers dropped — what a gateway costs before it does any gateway work. Two ways to use undici:
// - `--mode request` (default): `agent.request()` and `stream.pipeline()` into the response, the way most
//   Node.js proxies are written;
// - `--mode dispatch`: `agent.dispatch()` with a handler writing into the response, the technique the gateway
//   itself uses (src/gateway/forward/forward.ts), so the gateway's own work shows against the same transport.
// `node bench/bare-proxy.ts --upstream http://127.0.0.1:PORT [--port N] [--mode request|dispatch]`; one ready
// JSON line on stdout; exits when stdin closes.
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { Agent, type Dispatcher } from "undici";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    upstream: { type: "string" },
    mode: { type: "string", default: "request" },
  },
});
const upstream = values.upstream;
if (upstream === undefined) {
  process.stderr.write("bare-proxy: --upstream URL is required\n");
  process.exit(2);
}
const origin: string = upstream;
const mode = values.mode;
if (mode !== "request" && mode !== "dispatch") {
  process.stderr.write("bare-proxy: --mode is request or dispatch\n");
  process.exit(2);
}

const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

function copyHeaders(
  incoming: IncomingHttpHeaders | Record<string, string | string[] | undefined>,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value !== undefined && !hopByHop.has(name)) out[name] = value;
  }
  return out;
}

// Same pool settings as the gateway's upstream dispatcher.
const agent = new Agent({ keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000 });

/**
 * The dispatch baseline's handler: status, headers and chunks go straight into the response, the upstream
 * pauses while the client is slow, and a client that leaves aborts the upstream request (as the gateway does).
 */
class PassThrough implements Dispatcher.DispatchHandler {
  private readonly res: ServerResponse;
  private controller: Dispatcher.DispatchController | undefined;
  private done = false;
  constructor(res: ServerResponse) {
    this.res = res;
    res.once("close", this.onClose);
  }
  private readonly onClose = (): void => {
    if (!this.done) this.controller?.abort(new Error("client closed the connection"));
  };
  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }
  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (statusCode >= 200) this.res.writeHead(statusCode, copyHeaders(headers));
  }
  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once("drain", () => controller.resume());
    }
  }
  onResponseEnd(): void {
    this.done = true;
    this.res.end();
  }
  onResponseError(_controller: Dispatcher.DispatchController | null, _error: Error): void {
    this.done = true;
    if (!this.res.headersSent) this.res.writeHead(502).end();
    else this.res.destroy();
  }
}

function viaDispatch(req: IncomingMessage, res: ServerResponse, hasBody: boolean): void {
  agent.dispatch(
    {
      origin,
      path: req.url ?? "/",
      method: req.method ?? "GET",
      headers: copyHeaders(req.headers) as Record<string, string | string[]>,
      body: hasBody ? req : null,
    },
    new PassThrough(res),
  );
}

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const hasBody =
    req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
  if (mode === "dispatch") {
    viaDispatch(req, res, hasBody);
    return;
  }
  agent
    .request({
      origin,
      path: req.url ?? "/",
      method: req.method ?? "GET",
      headers: copyHeaders(req.headers) as Record<string, string | string[]>,
      body: hasBody ? req : null,
    })
    .then(async (upstream) => {
      res.writeHead(upstream.statusCode, copyHeaders(upstream.headers));
      await pipeline(upstream.body, res);
    })
    .catch(() => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
});

server.listen(Number(values.port), "127.0.0.1", () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ ready: true, port, mode })}\n`);
});

const stop = (): void => {
  // Let go of stdin too, so the process exits on its own (and --cpu-prof can write its profile).
  process.stdin.destroy();
  server.close();
  server.closeAllConnections();
  void agent.close();
};
process.stdin.on("end", stop).resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
