// Placeholder wiring for the 'check' subcommand; replaced by its real implementation.
import type { Command } from "../command.ts";

export const checkCommand: Command = {
  name: "check",
  summary: "(not yet available)",
  help: "phantomgate check: not yet available\n",
  run(_argv, io) {
    io.stderr.write("phantomgate check: not yet available\n");
    return Promise.resolve(1);
  },
};
