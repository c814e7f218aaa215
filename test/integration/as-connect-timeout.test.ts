// An AuthServer's timeouts.connectMs bounds the wait for a connection, apart from responseMs. The gateway gives
// each AS a pool of its own for that (one shared pool could only have one connect timeout).
// The unresponsive AS: a real listening socket in a child process that is stopped (SIGSTOP), so it never accepts;
// once its accept queue is full, the kernel answers no more handshakes and a connect attempt just waits.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { createInterface } from "node:readline";
import { request } from "undici";
import { afterAll, describe, expect, it } from "vitest";
import { makeConfigDir, startGatewayProcess } from "../helpers/gateway-process.ts";
import { authServerYaml, routesYaml, scopePoliciesYaml } from "../helpers/manifests.ts";

let listener: ChildProcess | undefined;
const sockets: Socket[] = [];
afterAll(() => {
  for (const socket of sockets) socket.destroy();
  listener?.kill("SIGKILL");
});

/** A port whose listener accepts nothing and whose accept queue is full. */
async function fullPort(): Promise<number> {
  const child = spawn(
    process.execPath,
    [
      "-e",
      "const s=require('node:net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>console.log(s.address().port))",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  listener = child;
  const [line] = (await once(createInterface({ input: child.stdout }), "line")) as [string];
  const port = Number(line);
  child.kill("SIGSTOP");
  // Fill the accept queue (backlog 1 holds a couple of finished handshakes): connections that complete fill it.
  for (let i = 0; i < 8; i++) {
    const socket = connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    sockets.push(socket);
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  return port;
}

describe("AuthServer connect timeout", () => {
  it("a gateway whose AS accepts no connection answers 503 after connectMs, well before responseMs", async () => {
    const port = await fullPort();
    const issuer = `http://127.0.0.1:${port}`;
    // connectMs is 500 in these manifests; responseMs far above it.
    const options = { issuer, echoOrigin: "http://127.0.0.1:1", responseTimeoutMs: 8_000 };
    const gateway = await startGatewayProcess(
      makeConfigDir({
        "as.yaml": authServerYaml(options),
        "policies.yaml": scopePoliciesYaml,
        "routes.yaml": routesYaml(options),
      }),
    );
    try {
      const started = performance.now();
      const response = await request(`${gateway.url}/echo/hello`, {
        headers: { authorization: "Bearer an-opaque-token" },
      });
      await response.body.dump();
      const took = performance.now() - started;
      expect(response.statusCode).toBe(503);
      expect(response.headers["retry-after"]).toBeDefined();
      // undici checks its connect timer coarsely (up to about a second late): still far from responseMs.
      expect(took).toBeLessThan(4_000);
    } finally {
      await gateway.stop();
    }
  });
});
