// Reads Kubernetes-style manifests from files: every YAML/JSON document becomes a source object for compile.
import { isUtf8 } from "node:buffer";
import { lstat, open, readdir, stat } from "node:fs/promises";
import { extname, join } from "node:path";
import { LineCounter, parseAllDocuments } from "yaml";
import type { SourceObject } from "../../compile/compile.ts";

/** A file that could not be read or parsed; its objects are left out entirely. */
export interface ManifestProblem {
  readonly file: string;
  readonly message: string;
}

/** The objects of every file that parsed, and a problem for every file that did not. */
export interface LoadedManifests {
  readonly objects: SourceObject[];
  readonly problems: ManifestProblem[];
}

const manifestExtensions = new Set([".yaml", ".yml", ".json"]);

/** Largest manifest file read (16 MiB); parsing takes ~40 times its size in memory and blocks while it runs. */
export const maxManifestFileBytes = 16 * 1024 * 1024;

/** YAML syntax errors reported per file; a binary file would otherwise give one for nearly every line. */
const maxSyntaxErrorsPerFile = 10;

/** True for the file names the directory loader reads: `*.yaml`, `*.yml`, `*.json`, not hidden. */
export function isManifestFileName(name: string): boolean {
  // Hidden names are editor lock/backup files and Kubernetes' ConfigMap `..data` machinery, never manifests.
  return !name.startsWith(".") && manifestExtensions.has(extname(name).toLowerCase());
}

/** The manifest files directly in a directory, and a problem for every entry named like one that is not. */
export interface ManifestFiles {
  readonly files: string[];
  readonly problems: ManifestProblem[];
}

/**
 * Lists the manifest files directly in `dir` (not recursive), in file-name order. An entry named like a
 * manifest that cannot be read as a file is a problem, never a silent gap: a dangling symlink, a device or a
 * pipe, a name that is not UTF-8 (it could not be opened by the name the listing gives). So is a directory
 * without any manifest file. Subdirectories are skipped. Rejects only when the directory itself cannot be listed.
 */
export async function listManifestFiles(dir: string): Promise<ManifestFiles> {
  const entries = await readdir(dir, { encoding: "buffer" });
  const files: string[] = [];
  const problems: ManifestProblem[] = [];
  const names: string[] = [];
  for (const entry of entries) {
    const name = entry.toString("utf8");
    if (!isManifestFileName(name)) continue;
    if (!isUtf8(entry)) {
      problems.push({ file: join(dir, name), message: "the file name is not UTF-8; rename the file" });
      continue;
    }
    names.push(name);
  }
  names.sort();
  for (const name of names) {
    const file = join(dir, name);
    // stat follows symlinks: ConfigMap volumes present every file as a symlink into `..data/`. A file gone
    // since the listing is skipped (the watcher brings the next load); a dangling link or a loop is a problem.
    let info;
    try {
      info = await stat(file);
    } catch (error) {
      if (errorCode(error) !== "ENOENT") {
        problems.push({ file, message: `cannot read file: ${describeError(error)}` });
      } else if (
        await lstat(file).then(
          () => true,
          () => false,
        )
      ) {
        problems.push({ file, message: "symbolic link to a file that does not exist" });
      }
      continue;
    }
    // Subdirectories are not read, whatever their name (as `kubectl apply -f DIR` without -R).
    if (info.isDirectory()) continue;
    if (!info.isFile()) {
      problems.push({ file, message: "not a regular file" });
      continue;
    }
    files.push(file);
  }
  if (files.length === 0 && problems.length === 0) {
    problems.push({ file: dir, message: "no manifest files (*.yaml, *.yml, *.json) in this directory" });
  }
  return { files, problems };
}

/**
 * Loads every manifest file directly in `dir` (see {@link listManifestFiles}). A file that fails to read or
 * parse becomes a problem and contributes no objects; the other files still load. Rejects only when the
 * directory itself cannot be listed.
 */
export async function loadManifestDirectory(dir: string): Promise<LoadedManifests> {
  const listed = await listManifestFiles(dir);
  const objects: SourceObject[] = [];
  const problems: ManifestProblem[] = [...listed.problems];
  for (const file of listed.files) {
    const loaded = await loadManifestFile(file);
    // One push per element: spreading a file of 100,000+ documents into push() overflows the stack.
    for (const object of loaded.objects) objects.push(object);
    for (const problem of loaded.problems) problems.push(problem);
  }
  return { objects, problems };
}

/** Loads one manifest file (multi-document YAML, or JSON). Never rejects: failures become problems. */
export async function loadManifestFile(file: string): Promise<LoadedManifests> {
  const fail = (message: string): LoadedManifests => ({ objects: [], problems: [{ file, message }] });
  let bytes: Buffer;
  try {
    const read = await readAtMost(file, maxManifestFileBytes);
    if (read === undefined) {
      return fail(
        `file is larger than ${maxManifestFileBytes / (1024 * 1024)} MiB; split it into smaller files`,
      );
    }
    bytes = read;
  } catch (error) {
    return fail(`cannot read file: ${describeError(error)}`);
  }
  // Decoding would turn invalid bytes into U+FFFD silently, changing names or secret values without a word.
  if (!isUtf8(bytes)) return fail(`not UTF-8 text (first invalid byte on line ${firstNonUtf8Line(bytes)})`);
  return parseManifestText(bytes.toString("utf8"), file);
}

/** The file's bytes, or undefined when it holds more than `limit` (read in chunks: devices report no size). */
async function readAtMost(file: string, limit: number): Promise<Buffer | undefined> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    if (size > limit) return undefined;
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      // Sized from stat, so a regular file takes one read and one more that finds its end; what reports no size
      // (a device, a pipe) is read 64 KiB at a time. Never more than one byte past the limit.
      const chunk = Buffer.allocUnsafe(Math.min(limit + 1 - total, Math.max(size + 1 - total, 64 * 1024)));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) return Buffer.concat(chunks, total);
      chunks.push(chunk.subarray(0, bytesRead));
      total += bytesRead;
      if (total > limit) return undefined;
    }
  } finally {
    await handle.close();
  }
}

function firstNonUtf8Line(bytes: Buffer): number {
  let line = 1;
  let start = 0;
  for (;;) {
    const end = bytes.indexOf(0x0a, start);
    if (!isUtf8(bytes.subarray(start, end === -1 ? bytes.length : end)) || end === -1) return line;
    line += 1;
    start = end + 1;
  }
}

/**
 * Parses manifest text into source objects; `file` names their origin. JSON is read as YAML, which it is
 * a subset of. Empty documents (a trailing `---`) are skipped but keep their position in the numbering.
 */
export function parseManifestText(text: string, file: string): LoadedManifests {
  // Plain error messages: the pretty form quotes the offending source line, which may hold a Secret value.
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true, lineCounter });
  // Warnings count as errors: an unknown tag (`!env X`) would otherwise be read as the plain string after it.
  const errors = documents.flatMap((document) => [...document.errors, ...document.warnings]);
  if (errors.length > 0) {
    const problems = errors.slice(0, maxSyntaxErrorsPerFile).map((error) => {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      return {
        file,
        message: `YAML ${error.name === "YAMLWarning" ? "problem" : "syntax error"} at line ${line}, column ${col}: ${describeYamlError(error.message)}`,
      };
    });
    const more = errors.length - problems.length;
    if (more > 0) problems.push({ file, message: `${more} more YAML syntax errors not shown` });
    return { objects: [], problems };
  }
  const objects: SourceObject[] = [];
  for (const [index, document] of documents.entries()) {
    let object: unknown;
    try {
      object = document.toJS();
    } catch (error) {
      // An alias bomb ("billion laughs") stops here: yaml refuses to expand excessive aliases.
      const message = error instanceof Error ? error.message : String(error);
      return { objects: [], problems: [{ file, message: `document ${index + 1}: ${message}` }] };
    }
    if (object === null || object === undefined) continue;
    objects.push({ object, origin: { file, index } });
  }
  return { objects, problems: [] };
}

/**
 * The first line of a yaml error message without the source text some messages end with ("Not a YAML
 * token: <text>"), which may be a Secret value; the line and column still point at it.
 */
function describeYamlError(message: string): string {
  const line = message.split("\n", 1)[0] ?? message;
  return line.replace(/(?<=\w): .*$/, "");
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && "code" in error && typeof error.code === "string" ? error.code : undefined;
}

function describeError(error: unknown): string {
  return errorCode(error) ?? (error instanceof Error ? error.message : String(error));
}
