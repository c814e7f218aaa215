// scripts/fetch-go.ts: which archive it asks for and how it unpacks one. (The download itself is exercised by
// `K8S_TOOLS_GO=fetch scripts/k8s-tools.sh go`; the Kubernetes tests run with whatever Go the machine has.)
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import AdmZip from "adm-zip";
import { afterEach, describe, expect, it } from "vitest";
import { ARCHIVE_SHA256, goPlatform, proxyBase, unpackToolchain } from "../../scripts/fetch-go.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function archive(entries: Record<string, string>): Buffer {
  const zip = new AdmZip();
  for (const [name, content] of Object.entries(entries)) zip.addFile(name, Buffer.from(content));
  return zip.toBuffer();
}

describe("fetch-go", () => {
  it("pins a SHA-256 for every platform it knows, and knows only Linux on amd64 and arm64", () => {
    expect(goPlatform("linux", "x64")).toBe("linux-amd64");
    expect(goPlatform("linux", "arm64")).toBe("linux-arm64");
    for (const platform of ["linux-amd64", "linux-arm64"])
      expect(ARCHIVE_SHA256[platform]).toMatch(/^[0-9a-f]{64}$/);
    expect(() => goPlatform("darwin", "arm64")).toThrow(/install Go >= 1\.26/);
    expect(() => goPlatform("linux", "ia32")).toThrow(/install Go >= 1\.26/);
  });

  it("takes the first proxy of GOPROXY, and proxy.golang.org for none, direct or off", () => {
    expect(proxyBase(undefined)).toBe("https://proxy.golang.org");
    expect(proxyBase("")).toBe("https://proxy.golang.org");
    expect(proxyBase("direct")).toBe("https://proxy.golang.org");
    expect(proxyBase("off")).toBe("https://proxy.golang.org");
    expect(proxyBase("https://goproxy.internal/,https://proxy.golang.org,direct")).toBe(
      "https://goproxy.internal",
    );
    expect(proxyBase("direct|https://mirror.example/go")).toBe("https://mirror.example/go");
  });

  it("unpacks without the module prefix, with bin/ and pkg/tool/ executable and the rest not", () => {
    const dir = mkdtempSync(join(tmpdir(), "fetch-go-"));
    dirs.push(dir);
    const prefix = "golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64/";
    unpackToolchain(
      archive({
        [`${prefix}bin/go`]: "go binary",
        [`${prefix}pkg/tool/linux_amd64/compile`]: "compiler",
        [`${prefix}src/fmt/print.go`]: "package fmt",
        [`${prefix}VERSION`]: "go1.26.8",
      }),
      dir,
    );
    expect(readFileSync(join(dir, "bin/go"), "utf8")).toBe("go binary");
    expect(statSync(join(dir, "bin/go")).mode & 0o777).toBe(0o755);
    expect(statSync(join(dir, "pkg/tool/linux_amd64/compile")).mode & 0o777).toBe(0o755);
    expect(statSync(join(dir, "src/fmt/print.go")).mode & 0o777).toBe(0o644);
    expect(readFileSync(join(dir, "VERSION"), "utf8")).toBe("go1.26.8");
  });

  it("refuses an archive of another module or with an entry that climbs out of the target", () => {
    const dir = mkdtempSync(join(tmpdir(), "fetch-go-"));
    dirs.push(dir);
    expect(() => unpackToolchain(archive({ "example.com/other@v1/bin/go": "x" }), dir)).toThrow(
      /unexpected entry/,
    );
    // adm-zip normalises the names it is given, so the climbing name goes into the archive's bytes instead, at
    // the same length (the archive stays valid).
    const climbing = archive({ "golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64/xxxx": "x" });
    const evil = Buffer.from(
      climbing.toString("latin1").replaceAll("linux-amd64/xxxx", "linux-amd64/../y"),
      "latin1",
    );
    expect(() => unpackToolchain(evil, join(dir, "target"))).toThrow(/escapes the target directory/);
    expect(() => statSync(join(dir, "y"))).toThrow();
  });
});
