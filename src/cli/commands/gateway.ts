// Placeholder wiring for the 'gateway' subcommand; replaced by its real implementation.
import type { Command } from "../command.ts";

export const gatewayCommand: Command = {
  name: "gateway",
  summary: "(not yet available)",
  help: "phantomgate gateway: not yet available\n",
  run(_argv, io) {
    io.stderr.write("phantomgate gateway: not yet available\n");
    return Promise.resolve(1);
  },
};
