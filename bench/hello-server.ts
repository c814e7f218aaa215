// A tiny node:http "hello" server: the upstream behind the proxies, and on its own the throughput ceiling of
// node:http on one core. `node bench/hello-server.ts [--port N]`; prints one ready JSON line on stdout and exits
// when stdin closes (so it never outlives the benchmark driver).
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });
const body = Buffer.from("hello world\n");

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  // Drain any request body before answering, as a real API would.
  req.resume();
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
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
};
process.stdin.on("end", stop).resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
