// The shape every `phantomgate` subcommand has, so main.ts can list, dispatch and print help uniformly.
import type { Writable } from "node:stream";

export interface CommandIo {
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export interface Command {
  readonly name: string;
  /** Full `--help` text: usage, flags, environment variables. */
  readonly help: string;
  /** Runs the command; resolves to the process exit code. Long-running commands resolve on shutdown. */
  run(argv: readonly string[], io: CommandIo): Promise<number>;
}
