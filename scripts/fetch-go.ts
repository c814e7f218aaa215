// Fetches a Go toolchain for scripts/k8s-tools.sh on a machine without Go >= 1.26: the archive of module
// golang.org/toolchain (what `go` itself downloads when it switches toolchains) from the Go module proxy,
// checked against the SHA-256 pinned below, unpacked into DIR/go<version>.<os>-<arch>.
//
//   node scripts/fetch-go.ts DIR      prints the path of the go binary (reuses an earlier download)
//
// GOPROXY is honoured (its first proxy URL; "direct" and "off" fall back to https://proxy.golang.org).
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import AdmZip from "adm-zip";

export const GO_VERSION = "1.26.8";

/** SHA-256 of golang.org/toolchain@v0.0.1-go<GO_VERSION>.<platform>.zip, as served by proxy.golang.org. */
export const ARCHIVE_SHA256: Readonly<Record<string, string>> = {
  "linux-amd64": "30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7",
  "linux-arm64": "02b36b6787b3ac767668f630e2998df45a3b1f9ffee08d1bf3ef6487cd658d99",
};

/** Every entry of a module archive starts with `<module>@<version>/`. */
const MODULE_PREFIX = "golang.org/toolchain@";

const NODE_ARCH_TO_GO: Readonly<Record<string, string>> = { x64: "amd64", arm64: "arm64" };

export function goPlatform(platform: string = process.platform, arch: string = process.arch): string {
  const goArch = NODE_ARCH_TO_GO[arch];
  if (platform !== "linux" || goArch === undefined) {
    throw new Error(`no pinned Go toolchain for ${platform}/${arch}: install Go >= 1.26 and retry`);
  }
  return `linux-${goArch}`;
}

/** The first proxy URL of a GOPROXY value (comma- or pipe-separated), or proxy.golang.org. */
export function proxyBase(goproxy: string | undefined): string {
  for (const entry of (goproxy ?? "").split(/[,|]/)) {
    const url = entry.trim();
    if (url !== "" && url !== "direct" && url !== "off") return url.replace(/\/+$/, "");
  }
  return "https://proxy.golang.org";
}

/**
 * Unpacks a toolchain module archive into `target`: drops the `golang.org/toolchain@<version>/` prefix of every
 * entry, refuses entries that would land outside `target`, and makes bin/ and pkg/tool/ executable (module
 * archives keep no file modes; `go` does the same when it unpacks one).
 */
export function unpackToolchain(archive: Buffer, target: string): void {
  const zip = new AdmZip(archive);
  const root = resolve(target);
  for (const entry of zip.getEntries()) {
    if (entry.isDirectory) continue;
    const slash = entry.entryName.indexOf("/", MODULE_PREFIX.length);
    if (slash < 0 || !entry.entryName.startsWith(MODULE_PREFIX)) {
      throw new Error(`unexpected entry in the toolchain archive: ${entry.entryName}`);
    }
    const name = entry.entryName.slice(slash + 1);
    const path = resolve(root, name);
    if (relative(root, path).startsWith("..") || path === root) {
      throw new Error(`entry escapes the target directory: ${entry.entryName}`);
    }
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, entry.getData());
    const executable = name.startsWith("bin/") || name.startsWith("pkg/tool/");
    chmodSync(path, executable ? 0o755 : 0o644);
  }
}

async function main(args: readonly string[]): Promise<void> {
  const [dir] = args;
  if (dir === undefined || args.length !== 1) {
    process.stderr.write("usage: node scripts/fetch-go.ts DIR\n");
    process.exit(2);
  }
  const platform = goPlatform();
  const target = join(resolve(dir), `go${GO_VERSION}.${platform}`);
  const goBinary = join(target, "bin", "go");
  if (existsSync(goBinary)) {
    process.stdout.write(`${goBinary}\n`);
    return;
  }
  const url = `${proxyBase(process.env["GOPROXY"])}/golang.org/toolchain/@v/v0.0.1-go${GO_VERSION}.${platform}.zip`;
  process.stderr.write(`fetch-go: downloading Go ${GO_VERSION} (${platform}) from ${url}\n`);
  const response = await fetch(url, { signal: AbortSignal.timeout(15 * 60_000) });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const archive = Buffer.from(await response.arrayBuffer());
  const digest = createHash("sha256").update(archive).digest("hex");
  if (digest !== ARCHIVE_SHA256[platform]) {
    throw new Error(`${url}: SHA-256 ${digest}, expected ${ARCHIVE_SHA256[platform] ?? "(none pinned)"}`);
  }
  // Unpacked beside the target and renamed into place, so a half-written toolchain is never used.
  const staging = `${target}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  try {
    unpackToolchain(archive, staging);
    renameSync(staging, target);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    // Another run put the same toolchain in place meanwhile.
    if (!existsSync(goBinary)) throw error;
  }
  process.stdout.write(`${goBinary}\n`);
}

if (import.meta.filename === resolve(process.argv[1] ?? "")) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`fetch-go: error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
