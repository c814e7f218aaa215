// The product's version, as package.json gives it (the image ships package.json beside src/), and the build-info
// gauge each program exports with it.
import { readFileSync } from "node:fs";
import { Gauge, type Registry } from "prom-client";

let version: string | undefined;

/** phantomgate's version from package.json, read on first use. */
export function productVersion(): string {
  if (version === undefined) {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version?: unknown;
    };
    version = typeof pkg.version === "string" ? pkg.version : "unknown";
  }
  return version;
}

/** Registers `name{version, node_version}` with value 1: which release and which Node.js a process runs. */
export function registerBuildInfo(registry: Registry, name: string): void {
  new Gauge({
    name,
    help: "The running phantomgate version and Node.js version (value 1)",
    labelNames: ["version", "node_version"] as const,
    registers: [registry],
  })
    .labels(productVersion(), process.version)
    .set(1);
}
