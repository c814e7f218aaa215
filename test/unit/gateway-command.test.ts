// `phantomgate gateway` refuses settings it cannot start with by a one-line message and exit code 2, as it does
// for malformed flags: a port taken, a mint key file that cannot be read.
import { createServer, type Server } from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { gatewayCommand } from "../../src/cli/commands/gateway.ts";
import { MemoryStream } from "../helpers/memory-stream.ts";

const examples = join(import.meta.dirname, "../../examples");
const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

async function runGateway(...argv: string[]): Promise<{ code: number; stderr: string }> {
  const stdout = new MemoryStream();
  const stderr = new MemoryStream();
  const code = await gatewayCommand.run(["--config", examples, "--log-level", "silent", ...argv], {
    stdout,
    stderr,
    env: {},
  });
  return { code, stderr: stderr.text };
}

describe("phantomgate gateway start-up errors", () => {
  it("a port in use: exit 2, naming the address and the flags", async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as AddressInfo).port;
    const publicPort = await runGateway("--host", "127.0.0.1", "--port", String(port), "--admin-port", "0");
    expect(publicPort.code).toBe(2);
    expect(publicPort.stderr).toBe(
      `phantomgate gateway: cannot listen on 127.0.0.1:${port} (--host, --port): listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`,
    );
    const adminPort = await runGateway("--port", "0", "--admin-port", String(port));
    expect(adminPort.code).toBe(2);
    expect(adminPort.stderr).toContain(`(--admin-host, --admin-port): listen EADDRINUSE`);
  });

  it("a mint key file that cannot be read: exit 2, naming the flag", async () => {
    const { code, stderr } = await runGateway(
      "--port",
      "0",
      "--admin-port",
      "0",
      "--mint-key-file",
      "/nonexistent/key.pem",
    );
    expect(code).toBe(2);
    expect(stderr).toMatch(
      /^phantomgate gateway: --mint-key-file \(PHANTOMGATE_MINT_KEY_FILE\): .*\/nonexistent\/key\.pem/,
    );
  });
});
