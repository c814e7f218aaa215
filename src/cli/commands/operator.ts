// `phantomgate operator`: runs the control plane until SIGINT/SIGTERM, then stops in order and releases the
// leader Lease.
import pino from "pino";
import { describeOperatorOptions, loadOperatorConfig, OperatorConfigError } from "../../operator/config.ts";
import { startOperator } from "../../operator/operator.ts";
import type { Command } from "../command.ts";
import { waitForSignal } from "../signals.ts";

export const operatorCommand: Command = {
  name: "operator",
  help: [
    "Usage: phantomgate operator [flags]",
    "",
    "Watches ApiRoute, ScopePolicy and AuthServer objects (phantomgate.dev/v1alpha1) and the Secrets they",
    "reference, compiles them into snapshots, streams those to the gateways, serves the validating admission",
    "webhook and, on the replica holding the leader Lease, writes each object's status (Accepted, Programmed)",
    "and Events. The Kubernetes permissions it needs are listed in docs/operator.md.",
    "",
    "Flags (each also from its environment variable; an empty variable counts as unset):",
    describeOperatorOptions(),
    "",
  ].join("\n"),
  async run(argv, io) {
    let config;
    try {
      config = loadOperatorConfig(argv, io.env);
    } catch (error) {
      if (error instanceof OperatorConfigError) {
        io.stderr.write(
          `phantomgate operator: ${error.message}\nRun 'phantomgate operator --help' for the flags.\n`,
        );
        return 2;
      }
      throw error;
    }
    const logger = pino({
      level: config.logLevel,
      base: { component: "operator", replica: config.identity },
    });
    let operator;
    try {
      operator = await startOperator(config, logger);
    } catch (error) {
      logger.fatal({ err: error }, "operator failed to start");
      return 1;
    }
    const signal = await waitForSignal();
    logger.info({ signal }, "shutting down");
    await operator.close();
    logger.info("operator stopped");
    return 0;
  },
};
