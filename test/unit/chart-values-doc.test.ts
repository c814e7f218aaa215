// docs/values.md, charts/phantomgate/values.yaml and values.schema.json describe the same keys: every key the
// schema defines (down to structured objects; free-form maps such as labels are one key) has a default in
// values.yaml and a row in the docs, and the docs name no key the schema does not know.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";

const root = join(import.meta.dirname, "../..");
const chart = join(root, "charts/phantomgate");

interface SchemaNode {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
}

const schema = JSON.parse(readFileSync(join(chart, "values.schema.json"), "utf8")) as SchemaNode & {
  $defs: Record<string, SchemaNode>;
};
const values = parseYaml(readFileSync(join(chart, "values.yaml"), "utf8")) as Record<string, unknown>;
const docs = readFileSync(join(root, "docs/values.md"), "utf8");

function resolve(node: SchemaNode): SchemaNode {
  if (node.$ref === undefined) return node;
  const name = node.$ref.replace("#/$defs/", "");
  const target = schema.$defs[name];
  if (target === undefined) throw new Error(`unresolved ${node.$ref}`);
  return resolve(target);
}

/** Key paths down to the leaves of structured objects (properties + additionalProperties: false). */
function schemaKeys(node: SchemaNode, prefix: string): string[] {
  const resolved = resolve(node);
  const structured = resolved.properties !== undefined && resolved.additionalProperties === false;
  if (!structured || resolved.properties === undefined) return [prefix];
  return Object.entries(resolved.properties).flatMap(([key, child]) =>
    schemaKeys(child, prefix === "" ? key : `${prefix}.${key}`),
  );
}

const keys = schemaKeys(schema, "").sort();
const documented = [...docs.matchAll(/^\| `([A-Za-z0-9_.]+)` +\|/gm)].map((m) => m[1] ?? "").sort();

/** Whether values.yaml sets the key (null counts: some defaults are null on purpose). */
function hasDefault(path: string): boolean {
  let node: unknown = values;
  for (const part of path.split(".")) {
    if (typeof node !== "object" || node === null || !(part in node)) return false;
    node = (node as Record<string, unknown>)[part];
  }
  return true;
}

describe("chart values, schema and docs/values.md", () => {
  it("the schema is strict at the top level", () => {
    expect(schema.additionalProperties).toBe(false);
    expect(keys.length).toBeGreaterThan(80);
  });

  it("every schema key has a default in values.yaml", () => {
    expect(keys.filter((key) => !hasDefault(key))).toEqual([]);
  });

  it("docs/values.md has one row per key and no row for an unknown key", () => {
    expect(documented.filter((key) => !keys.includes(key))).toEqual([]);
    expect(keys.filter((key) => !documented.includes(key))).toEqual([]);
    expect(new Set(documented).size).toBe(documented.length);
  });
});
