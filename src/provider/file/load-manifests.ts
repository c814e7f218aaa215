// Reads Kubernetes-style manifests from files: every YAML/JSON document becomes a source object for compile.
import { readdir, readFile, stat } from "node:fs/promises";
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

/** True for the file names the directory loader reads: `*.yaml`, `*.yml`, `*.json`, not hidden. */
export function isManifestFileName(name: string): boolean {
  // Hidden names are editor lock/backup files and Kubernetes' ConfigMap `..data` machinery, never manifests.
  return !name.startsWith(".") && manifestExtensions.has(extname(name).toLowerCase());
}

/**
 * Loads every manifest file directly in `dir` (not recursive), in file-name order. A file that fails to read
 * or parse becomes a problem and contributes no objects; the other files still load. Rejects only when the
 * directory itself cannot be listed.
 */
export async function loadManifestDirectory(dir: string): Promise<LoadedManifests> {
  const names = (await readdir(dir)).filter(isManifestFileName).sort();
  const objects: SourceObject[] = [];
  const problems: ManifestProblem[] = [];
  for (const name of names) {
    const file = join(dir, name);
    // stat follows symlinks: ConfigMap volumes present every file as a symlink into `..data/`.
    const info = await stat(file).catch(() => undefined);
    if (info === undefined || !info.isFile()) continue;
    const loaded = await loadManifestFile(file);
    objects.push(...loaded.objects);
    problems.push(...loaded.problems);
  }
  return { objects, problems };
}

/** Loads one manifest file (multi-document YAML, or JSON). Never rejects: failures become problems. */
export async function loadManifestFile(file: string): Promise<LoadedManifests> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    return { objects: [], problems: [{ file, message: `cannot read file: ${describeError(error)}` }] };
  }
  return parseManifestText(text, file);
}

/**
 * Parses manifest text into source objects; `file` names their origin. JSON is read as YAML, which it is
 * a subset of. Empty documents (a trailing `---`) are skipped but keep their position in the numbering.
 */
export function parseManifestText(text: string, file: string): LoadedManifests {
  // Plain error messages: the pretty form quotes the offending source line, which may hold a Secret value.
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true, lineCounter });
  const errors = documents.flatMap((document) => document.errors);
  if (errors.length > 0) {
    const problems = errors.map((error) => {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      return {
        file,
        message: `YAML syntax error at line ${line}, column ${col}: ${firstLine(error.message)}`,
      };
    });
    return { objects: [], problems };
  }
  const objects: SourceObject[] = [];
  documents.forEach((document, index) => {
    const object: unknown = document.toJS();
    if (object === null || object === undefined) return;
    objects.push({ object, origin: { file, index } });
  });
  return { objects, problems: [] };
}

function firstLine(message: string): string {
  return message.split("\n", 1)[0] ?? message;
}

function describeError(error: unknown): string {
  if (error instanceof Error && "code" in error && typeof error.code === "string") return error.code;
  return error instanceof Error ? error.message : String(error);
}
