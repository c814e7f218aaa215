// `phantomgate demo`: the all-in-one demo on localhost, no cluster. The authorization server and the demo APIs
// run in processes of their own; the gateway runs here in file mode on the example manifests.
import { statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pino from "pino";
import { ListenError, loadGatewayConfig } from "../../config/gateway-config.ts";
import { spawnReady, type ReadyChild } from "../../demo/spawn-ready.ts";
import { startGateway } from "../../gateway/gateway.ts";
import type { Command } from "../command.ts";
import { waitForSignal } from "../signals.ts";

const root = new URL("../../../", import.meta.url);
const script = (relative: string): string => fileURLToPath(new URL(relative, root));

function walkthrough(tokenEndpoint: string): string {
  const token = (scope: string): string =>
    `curl -s -u demo-client:demo-secret -d grant_type=client_credentials -d 'scope=${scope}' ${tokenEndpoint} | jq -r .access_token`;
  return `
phantomgate demo is running
  gateway         http://127.0.0.1:8080
  gateway admin   http://127.0.0.1:9901  (/healthz /readyz /metrics /routes /.well-known/jwks.json)
  authorization   http://127.0.0.1:9000  (/.well-known/openid-configuration)
  demo APIs       echo :9101, invoices :9102, video :9103 (reached only through the gateway)
                  ledger :9104, payments :9105 (called only by the invoices API, see docs/writing-an-api.md)

Try it:
  TOKEN=$(${token("read_invoice")})
  echo "$TOKEN"                                   # opaque: means nothing outside the authorization server
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/echo/hello | jq .jwtClaims
                                                  # the echo API received a signed JWT, not the opaque token
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/invoices | jq
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/invoices/inv-1001/status | jq
                                                  # API-to-API: ledger by share, payments by exchange,
                                                  # payments -> ledger by embed (audit lines on stderr)
  curl -si -H "Authorization: Bearer $TOKEN" -X POST -H 'content-type: application/json' \\
       -d '{"amount":10,"currency":"EUR"}' http://127.0.0.1:8080/invoices   # 403 insufficient_scope
  WRITE=$(${token("write_invoice")})
  curl -s -H "Authorization: Bearer $WRITE" -X POST -H 'content-type: application/json' \\
       -d '{"amount":10,"currency":"EUR"}' http://127.0.0.1:8080/invoices | jq
  VIDEO=$(${token("high_video_stream")})
  curl -s -H "Authorization: Bearer $VIDEO" http://127.0.0.1:8080/video/intro.mp4 | jq   # minted JWT
  curl -si http://127.0.0.1:8080/echo/hello         # 401 with WWW-Authenticate
  curl -s http://127.0.0.1:9901/routes | jq

Audit lines follow below (one JSON line per request). Ctrl-C stops everything.
`;
}

export const demoCommand: Command = {
  name: "demo",
  help: [
    "Usage: phantomgate demo [--config DIR]",
    "",
    "Starts the demo authorization server (http://127.0.0.1:9000), the echo, invoices, video, ledger and payments",
    "APIs (127.0.0.1:9101-9105) and the gateway (http://127.0.0.1:8080, admin http://127.0.0.1:9901) fed from the",
    "example manifests, prints commands to try, and streams audit lines. Ctrl-C stops everything.",
    "",
    "Flags:",
    "  --config DIR   manifests to serve (default: the examples/ directory of this package)",
    "",
  ].join("\n"),
  async run(argv, io) {
    let configDir: string;
    try {
      const { values } = parseArgs({ args: [...argv], options: { config: { type: "string" } } });
      configDir = values.config ?? script("examples");
    } catch (error) {
      io.stderr.write(
        `phantomgate demo: ${(error as Error).message}\nRun 'phantomgate demo --help' for the flags.\n`,
      );
      return 2;
    }
    // Checked before anything starts: a wrong path is a usage error, not a failure after the servers came up.
    try {
      if (!statSync(configDir).isDirectory()) throw new Error("not a directory");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason = code === "ENOENT" ? "no such directory" : (code ?? (error as Error).message);
      io.stderr.write(`phantomgate demo: --config: cannot read ${configDir}: ${reason}\n`);
      return 2;
    }
    const logger = pino({ level: "warn", base: { component: "demo" } });
    const children: ReadyChild[] = [];
    const stopChildren = async (): Promise<void> => {
      await Promise.all(children.map((c) => c.stop()));
    };
    try {
      const as = await spawnReady(script("src/demo/auth-server-main.ts"), ["--port", "9000"]);
      children.push(as);
      const issuer = String(as.ready.issuer);
      const discovery = (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as {
        jwks_uri: string;
        token_endpoint: string;
      };
      children.push(
        await spawnReady(script("src/demo/apis-main.ts"), [
          "--issuer",
          issuer,
          "--as-jwks",
          discovery.jwks_uri,
          "--token-endpoint",
          discovery.token_endpoint,
        ]),
      );
      const config = loadGatewayConfig(
        [
          "--config",
          configDir,
          "--host",
          "127.0.0.1",
          "--port",
          "8080",
          "--admin-port",
          "9901",
          "--log-level",
          "warn",
        ],
        {},
      );
      const gateway = await startGateway(config, logger);
      const signalled = waitForSignal();
      io.stdout.write(walkthrough(discovery.token_endpoint));
      await signalled;
      io.stdout.write("\nstopping the demo…\n");
      await gateway.close();
      await stopChildren();
      return 0;
    } catch (error) {
      // The demo's ports are fixed (its walk-through and the docs name them): a port in use is most likely an
      // earlier demo or a gateway still running, not a flag to change.
      const message =
        error instanceof ListenError
          ? `cannot listen on ${error.address}: ${error.detail} (the demo uses the fixed ports 8080, 9901, 9000 and 9101-9105: is another demo or gateway running?)`
          : (error as Error).message;
      io.stderr.write(`phantomgate demo: ${message}\n`);
      await stopChildren();
      return 1;
    }
  },
};
