// `phantomgate compile-cache`: fills Node's compile cache with every module of the program, so processes started
// later with the same cache directory skip both compiling and type stripping. Once every module is cached, Node
// never loads its TypeScript stripper (a WebAssembly module that keeps ~20 MiB for the process's lifetime).
// The image build runs it; bin/phantomgate.js enables the cache for every command.
import { readdirSync } from "node:fs";
import { flushCompileCache, getCompileCacheDir } from "node:module";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Command, CommandIo } from "../command.ts";

const sourceRoot = fileURLToPath(new URL("../../", import.meta.url));

const help = [
  "Usage: phantomgate compile-cache",
  "",
  "Loads every module of phantomgate once so Node.js stores its compiled (and type-stripped) form in the",
  "compile cache, then prints the directory. Later processes with the same cache directory start faster and",
  "use ~20 MiB less memory. The directory is NODE_COMPILE_CACHE, or one under the system temp dir. Image builds",
  "run this once; the cache must be made by the same Node.js version as the one that reads it.",
  "",
  "Environment:",
  "  NODE_COMPILE_CACHE   Cache directory.",
  "",
].join("\n");

/** Every module under src/, except entry-point scripts (`*-main.ts`), which start servers when imported. */
export function programModules(dir: string = sourceRoot): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return programModules(path);
      return /\.(ts|js)$/.test(entry.name) && !/-main\.(ts|js)$/.test(entry.name) ? [path] : [];
    })
    .sort();
}

export const compileCacheCommand: Command = {
  name: "compile-cache",
  help,
  async run(argv: readonly string[], io: CommandIo): Promise<number> {
    if (argv.length > 0) {
      io.stderr.write(`phantomgate compile-cache: unexpected argument '${argv[0] ?? ""}'\n\n${help}`);
      return 2;
    }
    const directory = getCompileCacheDir();
    if (directory === undefined) {
      io.stderr.write("phantomgate compile-cache: the compile cache is not enabled in this process\n");
      return 1;
    }
    const modules = programModules();
    for (const module of modules) await import(pathToFileURL(module).href);
    flushCompileCache();
    io.stdout.write(`compile cache: ${modules.length} modules in ${directory}\n`);
    return 0;
  },
};
