// `phantomgate check`: compiles manifests offline and prints the routes and every problem, for CI and humans.
import { realpath, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { compile, describeObject, type ObjectResult, type SourceObject } from "../../compile/compile.ts";
import { listManifestFiles, loadManifestFile, type ManifestProblem } from "../../provider/file/index.ts";
import type { CompiledRoute, RequiredScopes, Snapshot } from "../../snapshot/snapshot.ts";
import type { Command, CommandIo } from "../command.ts";

const help = [
  "Usage: phantomgate check -f DIR|FILE [-f ...] [--output text|json]",
  "",
  "Compiles ApiRoute, ScopePolicy, AuthServer and Secret manifests offline, exactly as the gateway and the",
  "operator would, and prints the compiled routes (most specific first) and every problem.",
  "",
  "Flags:",
  "  -f, --filename DIR|FILE   Manifests to check: a directory (its *.yaml, *.yml, *.json) or one file.",
  "                            Repeat to combine several.",
  "  -o, --output text|json    Output format (default text). JSON never contains client secrets; documents",
  "                            in a file are counted from 1, as in the text output.",
  "  -h, --help                Show this help.",
  "",
  "Exit status: 0 no problems; 1 a file did not parse or an object was rejected; 2 usage error.",
  "",
].join("\n");

/** A usage problem: wrong flags or a path that cannot be read. */
class UsageError extends Error {}

interface CheckOptions {
  readonly paths: readonly string[];
  readonly output: "text" | "json";
}

interface CheckReport {
  readonly snapshot: Snapshot;
  readonly results: readonly ObjectResult[];
  readonly fileProblems: readonly ManifestProblem[];
  /** The `name` of each named ApiRoute rule, by `namespace/name#index` (its source, whatever its routes' ids). */
  readonly ruleNames: ReadonlyMap<string, string>;
}

/** `phantomgate check -f DIR|FILE [--output text|json]`. */
export const checkCommand: Command = {
  name: "check",
  help,
  async run(argv, io) {
    let options: CheckOptions | "help";
    let report: CheckReport;
    try {
      options = parseCheckArgs(argv);
      if (options === "help") {
        io.stdout.write(help);
        return 0;
      }
      report = await checkManifests(options.paths);
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      io.stderr.write(`phantomgate check: ${error.message}\nRun 'phantomgate check --help' for the flags.\n`);
      return 2;
    }
    if (options.output === "json") writeJson(report, io);
    else writeText(report, io);
    const rejected = report.results.some((result) => !result.accepted);
    return rejected || report.fileProblems.length > 0 ? 1 : 0;
  },
};

function parseCheckArgs(argv: readonly string[]): CheckOptions | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        filename: { type: "string", short: "f", multiple: true },
        output: { type: "string", short: "o", default: "text" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  if (values.help) return "help";
  if (values.output !== "text" && values.output !== "json") {
    throw new UsageError(`--output must be text or json, not '${values.output}'`);
  }
  const paths = values.filename ?? [];
  if (paths.length === 0) throw new UsageError("missing -f DIR|FILE");
  return { paths, output: values.output };
}

async function checkManifests(paths: readonly string[]): Promise<CheckReport> {
  const objects: SourceObject[] = [];
  const fileProblems: ManifestProblem[] = [];
  // Each file once, however it was named (twice, or as a directory and a file in it): a file read twice would
  // report its objects as duplicates of themselves.
  const files: string[] = [];
  const seen = new Set<string>();
  const add = async (file: string) => {
    const identity = await realpath(file).catch(() => resolve(file));
    if (seen.has(identity)) return;
    seen.add(identity);
    files.push(file);
  };
  for (const path of paths) {
    const info = await stat(path).catch((error: unknown) => {
      const code = error instanceof Error && "code" in error ? String(error.code) : "unreadable";
      throw new UsageError(`cannot read ${path}: ${code}`);
    });
    if (!info.isDirectory()) {
      await add(path);
      continue;
    }
    const listed = await listManifestFiles(path).catch((error: unknown) => {
      throw new UsageError(`cannot list ${path}: ${error instanceof Error ? error.message : String(error)}`);
    });
    for (const problem of listed.problems) fileProblems.push(problem);
    for (const file of listed.files) await add(file);
  }
  for (const file of files) {
    const loaded = await loadManifestFile(file);
    // One push per element: spreading 100,000+ documents into push() overflows the stack.
    for (const object of loaded.objects) objects.push(object);
    for (const problem of loaded.problems) fileProblems.push(problem);
  }
  const { snapshot, perObjectResults } = compile({ objects });
  return { snapshot, results: perObjectResults, fileProblems, ruleNames: namedRules(objects) };
}

/**
 * The names users gave ApiRoute rules, read from the manifests as written (the snapshot keeps only the rule's
 * index). The first object of a namespace/name wins, as in compile.
 */
function namedRules(objects: readonly SourceObject[]): Map<string, string> {
  const names = new Map<string, string>();
  const seen = new Set<string>();
  for (const { object } of objects) {
    if (typeof object !== "object" || object === null) continue;
    const { kind, metadata, spec } = object as { kind?: unknown; metadata?: unknown; spec?: unknown };
    if (kind !== "ApiRoute" || typeof metadata !== "object" || metadata === null) continue;
    const { name, namespace } = metadata as { name?: unknown; namespace?: unknown };
    if (typeof name !== "string") continue;
    const id = `${typeof namespace === "string" ? namespace : "default"}/${name}`;
    if (seen.has(id)) continue;
    seen.add(id);
    const rules = (spec as { rules?: unknown } | null | undefined)?.rules;
    if (!Array.isArray(rules)) continue;
    rules.forEach((rule: unknown, index) => {
      const ruleName = (rule as { name?: unknown } | null)?.name;
      if (typeof ruleName === "string" && ruleName !== "") names.set(`${id}#${index}`, ruleName);
    });
  }
  return names;
}

/** The rule name of a route, when its rule has one. */
function ruleNameOf(route: CompiledRoute, names: ReadonlyMap<string, string>): string | undefined {
  return names.get(`${route.source.namespace}/${route.source.name}#${route.source.rule}`);
}

/**
 * Named rules whose routes' ids carry the index instead of the name (compile falls back to it for a name two rules
 * of a route share, or one of digits only): their metrics and audit labels change when rules are reordered.
 */
function unusedRuleNames(routes: readonly CompiledRoute[], names: ReadonlyMap<string, string>): string[] {
  const notes = new Set<string>();
  for (const route of routes) {
    const name = ruleNameOf(route, names);
    const prefix = `${route.source.namespace}/${route.source.name}#`;
    // The id's rule part ends where a match (`.N`) or host (`@host`) suffix starts; names hold neither.
    const key = /^[^.@]*/.exec(route.id.slice(prefix.length))?.[0];
    if (name !== undefined && key !== name) {
      notes.add(`${prefix}${route.source.rule}: name "${name}"`);
    }
  }
  return [...notes].sort();
}

function writeText(report: CheckReport, io: CommandIo): void {
  const { snapshot, results, fileProblems } = report;
  const lines: string[] = [
    `Compiled ${plural(snapshot.routes.length, "route")} from ${plural(results.length, "object")} ` +
      `(revision ${snapshot.revision}).`,
    "",
  ];
  if (snapshot.routes.length > 0) {
    lines.push(
      ...formatTable([
        ["ID", "RULE", "HOSTS", "PATH", "METHODS", "MODE", "SCOPES", "BACKENDS"],
        ...snapshot.routes.map((route) => describeRouteRow(route, report.ruleNames)),
      ]),
      "",
    );
  }
  const notes = unusedRuleNames(snapshot.routes, report.ruleNames);
  if (notes.length > 0) {
    lines.push(
      "Rule names not used in route ids (a name two rules of a route share, or one of digits only):",
      ...notes.map((note) => `  ${note}`),
      "",
    );
  }
  const rejected = results.filter((result) => !result.accepted);
  const problemCount = fileProblems.length + rejected.length;
  if (problemCount === 0) {
    lines.push("No problems.");
  } else {
    lines.push(`${plural(problemCount, "problem")}:`);
    for (const problem of fileProblems) lines.push(`  ${problem.file}: ${problem.message}`);
    for (const result of rejected) {
      const where = result.origin === undefined ? "" : `${describeOrigin(result.origin)}: `;
      lines.push(`  ${where}${describeObject(result)}: ${result.reason}`);
      for (const message of result.messages) lines.push(`    ${message}`);
    }
  }
  io.stdout.write(`${lines.map(printable).join("\n")}\n`);
}

/**
 * Control characters escaped (`\u001b`): names, file names and messages come from the files checked, and a
 * raw escape sequence or newline in them would rewrite the terminal or forge lines in a CI log.
 */
function printable(line: string): string {
  return line.replace(
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is escaped
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function writeJson(report: CheckReport, io: CommandIo): void {
  const { snapshot, results, fileProblems } = report;
  const problems = [
    ...fileProblems.map((problem) => ({ file: problem.file, message: problem.message })),
    ...results
      .filter((result) => !result.accepted)
      .flatMap((result) =>
        result.messages.map((message) => ({
          ...(result.origin === undefined
            ? {}
            : { file: result.origin.file, document: result.origin.index + 1 }),
          kind: result.kind,
          namespace: result.namespace,
          name: result.name,
          reason: result.reason,
          message,
        })),
      ),
  ];
  const output = {
    ok: problems.length === 0,
    revision: snapshot.revision,
    routes: snapshot.routes.map((route) => {
      const ruleName = ruleNameOf(route, report.ruleNames);
      return ruleName === undefined ? route : { ...route, ruleName };
    }),
    // The compiled client secret stays out: check output lands in CI logs.
    authServers: snapshot.authServers.map(({ client, ...authServer }) => ({
      ...authServer,
      client: { id: client.id, method: client.method },
    })),
    problems,
    objects: results,
  };
  io.stdout.write(`${JSON.stringify(output, null, 2)}\n`);
}

function describeRouteRow(route: CompiledRoute, names: ReadonlyMap<string, string>): string[] {
  const { audience, acceptedAudiences } = route.auth;
  const details = [
    ...(audience === undefined ? [] : [`aud ${audience}`]),
    ...(acceptedAudiences === undefined ? [] : [`accepts aud ${acceptedAudiences.join(" | ")}`]),
  ];
  const mode = details.length === 0 ? route.auth.mode : `${route.auth.mode} (${details.join("; ")})`;
  const backends =
    route.backends.length === 1
      ? route.backends.map((backend) => backend.origin)
      : route.backends.map((backend) => `${backend.origin} (weight ${backend.weight})`);
  return [
    route.id,
    ruleNameOf(route, names) ?? "-",
    route.hostnames.length === 0 ? "*" : route.hostnames.join(","),
    `${route.path.type === "Exact" ? "exact" : "prefix"} ${route.path.value}`,
    route.methods.length === 0 ? "*" : route.methods.join(","),
    mode,
    describeScopes(route.requiredScopes),
    backends.join(", "),
  ];
}

/** `a & b & (c | d)`: every allOf scope and at least one anyOf scope; `-` when nothing is required. */
function describeScopes(required: RequiredScopes): string {
  const parts = required.allOf.map((requirement) => requirement.scope);
  const anyOf = required.anyOf.map((requirement) => requirement.scope);
  if (anyOf.length === 1) parts.push(...anyOf);
  if (anyOf.length > 1) parts.push(`(${anyOf.join(" | ")})`);
  return parts.length === 0 ? "-" : parts.join(" & ");
}

function formatTable(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, index) => {
      widths[index] = Math.max(widths[index] ?? 0, cell.length);
    });
  }
  return rows.map((row) =>
    row
      .map((cell, index) => (index === row.length - 1 ? cell : cell.padEnd(widths[index] ?? 0)))
      .join("  ")
      .trimEnd(),
  );
}

function describeOrigin(origin: { readonly file: string; readonly index: number }): string {
  return `${origin.file} (document ${origin.index + 1})`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
