// The `phantomgate` CLI: one binary, one subcommand per program. Commands load on demand, so a gateway process
// never loads the operator's Kubernetes client or the demo's authorization server (tens of MiB per pod).
import type { Command, CommandIo } from "./command.ts";

interface CommandEntry {
  readonly name: string;
  /** One line for the top-level help. */
  readonly summary: string;
  readonly load: () => Promise<Command>;
}

const commands: readonly CommandEntry[] = [
  {
    name: "gateway",
    summary: "Run the gateway (data plane) from a directory of manifests or the operator's snapshot stream.",
    load: async () => (await import("./commands/gateway.ts")).gatewayCommand,
  },
  {
    name: "operator",
    summary: "Run the operator (control plane) against a Kubernetes cluster.",
    load: async () => (await import("./commands/operator.ts")).operatorCommand,
  },
  {
    name: "demo",
    summary: "Run the all-in-one demo on localhost: authorization server, demo APIs and the gateway.",
    load: async () => (await import("./commands/demo.ts")).demoCommand,
  },
  {
    name: "check",
    summary: "Compile manifests offline; print the routes and every problem.",
    load: async () => (await import("./commands/check.ts")).checkCommand,
  },
  {
    name: "compile-cache",
    summary: "Fill Node's compile cache with every module, for faster, leaner start-up (image builds).",
    load: async () => (await import("./commands/compile-cache.ts")).compileCacheCommand,
  },
];

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
  const entry = commands.find((c) => c.name === name);
  if (entry === undefined) {
    io.stderr.write(`phantomgate: unknown command '${name}'\n\n${topLevelHelp()}`);
    return 2;
  }
  const command = await entry.load();
  if (rest.includes("--help") || rest.includes("-h")) {
    io.stdout.write(command.help);
    return 0;
  }
  return command.run(rest, io);
}
