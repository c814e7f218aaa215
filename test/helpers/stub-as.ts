// A stub authorization server on a real socket (port 0), for answers the demo AS cannot be made to give:
// oversized, malformed, 5xx and mix-up responses, sender-constrained tokens, tokens without a stated lifetime.
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { CompiledAuthServer } from "../../src/snapshot/snapshot.ts";
import { compiledAuthServer } from "./compiled.ts";

export type StubHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

export interface StubAs {
  readonly url: string;
  readonly requests: { path: string; headers: IncomingMessage["headers"]; body: string }[];
  handle: StubHandler;
  close(): Promise<void>;
}

/** Starts a stub AS that answers with whatever `handle` writes; every request is recorded. */
export async function startStubAs(handle: StubHandler): Promise<StubAs> {
  const requests: StubAs["requests"] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      requests.push({ path: req.url ?? "", headers: req.headers, body });
      stub.handle(req, res, body);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const stub: StubAs = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    handle,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
  return stub;
}

export function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** A compiled AuthServer for the stub: explicit endpoints, client_secret_basic, ES256, no skew. */
export function stubAuthServer(
  stub: StubAs,
  overrides: Partial<CompiledAuthServer> = {},
): CompiledAuthServer {
  return compiledAuthServer(stub.url, {
    id: "test/stub",
    discovery: false,
    endpoints: {
      introspection: `${stub.url}/introspect`,
      token: `${stub.url}/token`,
      jwks: `${stub.url}/jwks`,
    },
    clockSkewSeconds: 0,
    cache: { maxTtlSeconds: 300, negativeTtlSeconds: 30, maxEntries: 100 },
    timeouts: { connectMs: 500, responseMs: 1_000 },
    ...overrides,
  });
}
