// The `phantomgate` CLI: one binary, one subcommand per program.
import { checkCommand } from "./commands/check.ts";
import { demoCommand } from "./commands/demo.ts";
import { gatewayCommand } from "./commands/gateway.ts";
import { operatorCommand } from "./commands/operator.ts";
import type { Command, CommandIo } from "./command.ts";

const commands: readonly Command[] = [gatewayCommand, operatorCommand, demoCommand, checkCommand];

function topLevelHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    "phantomgate: the phantom token API gateway",
    "",
    "Usage: phantomgate <command> [flags]",
    "",
    "Commands:",
    ...lines,
    "",
    "Run 'phantomgate <command> --help' for the flags of one command.",
    "",
  ].join("\n");
}

export async function main(
  argv: readonly string[],
  io: CommandIo = { stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    io.stdout.write(topLevelHelp());
    return name === undefined ? 2 : 0;
  }
  const command = commands.find((c) => c.name === name);
  if (command === undefined) {
    io.stderr.write(`phantomgate: unknown command '${name}'\n\n${topLevelHelp()}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    io.stdout.write(command.help);
    return 0;
  }
  return command.run(rest, io);
}
