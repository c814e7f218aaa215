// The bare pass-through proxy baseline: node:http in front, an undici Agent `request` behind, bodies streamed
// both ways, hop-by-hop headers dropped — what a gateway costs before it does any gateway work.
// `node bench/bare-proxy.ts --upstream http://127.0.0.1:PORT [--port N]`; one ready JSON line on stdout; exits
// when stdin closes.
import { createServer, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { Agent, type Dispatcher } from "undici";

const { values } = parseArgs({
  options: { port: { type: "string", default: "0" }, upstream: { type: "string" } },
});
const origin = values.upstream;
if (origin === undefined) {
  process.stderr.write("bare-proxy: --upstream URL is required\n");
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
  incoming: IncomingHttpHeaders | Dispatcher.ResponseData["headers"],
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value !== undefined && !hopByHop.has(name)) out[name] = value;
  }
  return out;
}

// Same pool settings as the gateway's upstream dispatcher.
const agent = new Agent({ keepAliveTimeout: 30_000, keepAliveMaxTimeout: 600_000 });

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const hasBody =
    req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
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
  process.stdout.write(`${JSON.stringify({ ready: true, port })}\n`);
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
