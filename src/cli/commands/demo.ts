// Placeholder wiring for the 'demo' subcommand; replaced by its real implementation.
import type { Command } from "../command.ts";

export const demoCommand: Command = {
  name: "demo",
  summary: "(not yet available)",
  help: "phantomgate demo: not yet available\n",
  run(_argv, io) {
    io.stderr.write("phantomgate demo: not yet available\n");
    return Promise.resolve(1);
  },
};
