// `phantomgate gateway`: runs the data plane until SIGINT/SIGTERM, then drains and exits.
import { statSync } from "node:fs";
import pino from "pino";
import { ConfigError, describeGatewayOptions, loadGatewayConfig } from "../../config/gateway-config.ts";
import { startGateway } from "../../gateway/gateway.ts";
import type { Command } from "../command.ts";
import { waitForSignal } from "../signals.ts";

export const gatewayCommand: Command = {
  name: "gateway",
  help: [
    "Usage: phantomgate gateway --config DIR [flags]",
    "       phantomgate gateway --control-plane URL [--control-plane-token-file PATH] [--state-dir DIR] [flags]",
    "",
    "File mode serves the routes compiled from the ApiRoute, ScopePolicy, AuthServer (and Secret) manifests in",
    "DIR, and reloads them when files change. A file that does not parse keeps the last good configuration.",
    "",
    "Control-plane mode streams compiled snapshots from the operator, authenticating with a projected",
    "ServiceAccount token. Each snapshot is validated, swapped in, saved to --state-dir and acknowledged; an",
    "invalid one is refused (NACK) and the current one keeps serving. At start the gateway serves the snapshot",
    "saved in --state-dir, so it works while the operator is unreachable, also across restarts.",
    "",
    "Flags (each also from its environment variable; an empty variable counts as unset):",
    describeGatewayOptions(),
    "",
  ].join("\n"),
  async run(argv, io) {
    let config;
    try {
      config = loadGatewayConfig(argv, io.env);
      if (config.configDir !== undefined) checkConfigDirectory(config.configDir);
    } catch (error) {
      if (error instanceof ConfigError) {
        io.stderr.write(
          `phantomgate gateway: ${error.message}\nRun 'phantomgate gateway --help' for the flags.\n`,
        );
        return 2;
      }
      throw error;
    }
    const logger = pino({ level: config.logLevel, base: { component: "gateway" } });
    let gateway;
    try {
      gateway = await startGateway(config, logger);
    } catch (error) {
      if (error instanceof ConfigError) {
        io.stderr.write(`phantomgate gateway: ${error.message}\n`);
        return 2;
      }
      logger.fatal({ err: error }, "gateway failed to start");
      return 1;
    }
    const signal = await waitForSignal();
    logger.info({ signal }, "shutting down");
    await gateway.close();
    return 0;
  },
};

/** File mode needs a directory that exists at start: a typo in --config must not start a gateway with no routes. */
function checkConfigDirectory(dir: string): void {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch (error) {
    const code = error instanceof Error && "code" in error ? String(error.code) : "unreadable";
    throw new ConfigError(`--config (PHANTOMGATE_CONFIG): cannot read ${dir}: ${code}`);
  }
  if (!isDirectory) throw new ConfigError(`--config (PHANTOMGATE_CONFIG): ${dir} is not a directory`);
}
