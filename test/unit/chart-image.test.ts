// The container image, checked without a Docker engine: the Dockerfile's structure (multi-stage, the final
// stage runs Node.js 24 as a numeric non-root user with no package manager, exec-form entry point), that
// .dockerignore lets in exactly what the Dockerfile copies from the build context, and that the image agrees
// with the chart (user id, ports, entry point). A linter (hadolint) is run by the CI workflow as well.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";

const root = join(import.meta.dirname, "../..");

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** Instructions of a Dockerfile: comments dropped, backslash continuations joined. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const instructions: Instruction[] = [];
  let pending = "";
  let startLine = 0;
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) return;
    if (pending !== "" && line.startsWith("#")) return; // comment inside a continued instruction
    if (pending === "") startLine = index + 1;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      return;
    }
    const whole = pending + line;
    pending = "";
    const space = whole.search(/\s/);
    instructions.push({
      keyword: (space === -1 ? whole : whole.slice(0, space)).toUpperCase(),
      args: space === -1 ? "" : whole.slice(space + 1).trim(),
      line: startLine,
    });
  });
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") {
      const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      if (match === null) throw new Error(`line ${instruction.line}: cannot read FROM ${instruction.args}`);
      const image = match[1] ?? "";
      const resolved = image.replace(/^\$\{(\w+)\}$/, (_m, name: string) => args.get(name) ?? `\${${name}}`);
      stages.push({ from: resolved, name: match[2], instructions: [] });
    } else if (stages.length === 0 && instruction.keyword === "ARG") {
      const [name, value] = instruction.args.split("=", 2);
      if (name !== undefined && value !== undefined) args.set(name, value);
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return { args, stages };
}

const dockerfile = parseDockerfile(readFileSync(join(root, "Dockerfile"), "utf8"));
const finalStage = dockerfile.stages.at(-1);
const values = parseYaml(readFileSync(join(root, "charts/phantomgate/values.yaml"), "utf8")) as {
  podSecurityContext: { runAsUser: number; runAsGroup: number };
  gateway: { ports: { http: number; admin: number } };
  operator: { ports: { snapshot: number; webhook: number; metrics: number } };
};

const final = (): Stage => {
  if (finalStage === undefined) throw new Error("no stage");
  return finalStage;
};
const instructionsOf = (stage: Stage, keyword: string): Instruction[] =>
  stage.instructions.filter((i) => i.keyword === keyword);

describe("Dockerfile", () => {
  it("is multi-stage on Node.js 24 (Debian bookworm slim)", () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of dockerfile.stages)
      expect(stage.from).toMatch(/^node:24-bookworm-slim(@sha256:[a-f0-9]{64})?$/);
  });

  it("installs production dependencies only, without install scripts, in a build stage", () => {
    const runs = dockerfile.stages.flatMap((s) =>
      instructionsOf(s, "RUN").map((r) => ({ stage: s, run: r })),
    );
    const installs = runs.filter(({ run }) => /\bnpm (ci|install)\b/.test(run.args));
    expect(installs.length).toBe(1);
    const install = installs[0]!;
    expect(install.stage).not.toBe(final());
    expect(install.run.args).toMatch(/--omit=dev/);
    expect(install.run.args).toMatch(/--ignore-scripts/);
  });

  it("final stage: no package manager, no build tools, owned by root, runs as a numeric non-root user", () => {
    const runs = instructionsOf(final(), "RUN").map((r) => r.args);
    for (const run of runs) {
      expect(run).not.toMatch(/\bnpm (ci|install)\b/);
      expect(run).not.toMatch(/\b(build-essential|gcc|g\+\+|make|python3)\b/);
    }
    // The package managers of the base image are removed.
    const removal = runs.join(" ");
    for (const path of [
      "/usr/local/lib/node_modules/npm",
      "/usr/local/bin/npm",
      "/usr/local/bin/npx",
      "corepack",
    ]) {
      expect(removal).toContain(path);
    }
    const users = instructionsOf(final(), "USER");
    expect(users.length).toBe(1);
    const [uid, gid] = users[0]!.args.split(":");
    expect(uid).toMatch(/^[1-9][0-9]*$/);
    expect(gid).toMatch(/^[1-9][0-9]*$/);
    // The app is copied from the assembling stage, owned by root (not writable by the runtime user).
    const copies = instructionsOf(final(), "COPY");
    expect(copies.length).toBe(1);
    expect(copies[0]!.args).toMatch(/--from=\S+ --chown=0:0 \/app \/app$/);
  });

  it("matches the chart: user and group, ports, entry point", () => {
    const [uid, gid] = instructionsOf(final(), "USER")[0]!.args.split(":").map(Number);
    expect(uid).toBe(values.podSecurityContext.runAsUser);
    expect(gid).toBe(values.podSecurityContext.runAsGroup);
    const exposed = instructionsOf(final(), "EXPOSE")
      .flatMap((e) => e.args.split(/\s+/))
      .map(Number)
      .sort((a, b) => a - b);
    const chartPorts = [
      values.gateway.ports.http,
      values.gateway.ports.admin,
      values.operator.ports.snapshot,
      values.operator.ports.webhook,
      values.operator.ports.metrics,
    ].sort((a, b) => a - b);
    expect(exposed).toEqual(chartPorts);
    const entrypoint = JSON.parse(instructionsOf(final(), "ENTRYPOINT")[0]!.args) as unknown;
    expect(entrypoint).toEqual(["/usr/local/bin/node", "/app/bin/phantomgate.js"]);
    expect(existsSync(join(root, "bin/phantomgate.js"))).toBe(true);
  });

  it("ships a compile cache filled in the build stage and points the final stage at it", () => {
    const envOf = (stage: Stage): string =>
      instructionsOf(stage, "ENV")
        .map((e) => e.args)
        .join(" ");
    const cacheDir = /NODE_COMPILE_CACHE=(\S+)/.exec(envOf(final()))?.[1];
    expect(cacheDir).toMatch(/^\/app\//);
    const filler = dockerfile.stages.find((stage) =>
      instructionsOf(stage, "RUN").some((run) => /phantomgate\.js compile-cache\b/.test(run.args)),
    );
    expect(filler).toBeDefined();
    expect(filler).not.toBe(final());
    expect(envOf(filler!)).toContain(`NODE_COMPILE_CACHE=${cacheDir ?? ""}`);
    // Same Node.js image for both stages: a cache made by another Node.js version would be ignored.
    expect(filler!.from).toBe(final().from);
  });

  it("has no HEALTHCHECK (Kubernetes probes the admin/metrics ports) and no ADD", () => {
    for (const stage of dockerfile.stages) {
      expect(instructionsOf(stage, "HEALTHCHECK")).toEqual([]);
      expect(instructionsOf(stage, "ADD")).toEqual([]);
    }
  });
});

describe(".dockerignore", () => {
  const lines = readFileSync(join(root, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));

  it("excludes everything by default and lets in exactly what the Dockerfile copies from the context", () => {
    expect(lines[0]).toBe("*");
    const allowed = lines
      .filter((l) => l.startsWith("!"))
      .map((l) => l.slice(1).replace(/\/$/, ""))
      .sort();
    const copiedFromContext = dockerfile.stages
      .flatMap((s) => instructionsOf(s, "COPY"))
      .filter((c) => !c.args.includes("--from="))
      .flatMap((c) =>
        c.args
          .split(/\s+/)
          .filter((a) => !a.startsWith("--"))
          .slice(0, -1),
      )
      .map((source) => source.replace(/^\.\//, "").replace(/\/$/, ""))
      .sort();
    expect([...new Set(copiedFromContext)]).toEqual(allowed);
    for (const source of allowed) expect(existsSync(join(root, source)), source).toBe(true);
  });

  it("keeps node_modules out even inside allowed folders", () => {
    expect(lines).toContain("**/node_modules");
  });
});
