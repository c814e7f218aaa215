// Turns the JSON Schema that zod emits into a structural schema as apiextensions.k8s.io/v1 accepts it: no refs,
// no `additionalProperties: false`, unions only in the value-validation form, keys ordered for readable diffs.

/** A schema node of a CRD's `openAPIV3Schema` (JSONSchemaProps), loosely typed. */
export type SchemaNode = Record<string, unknown>;

/** Formats the API server validates (apiextensions-apiserver `supportedVersionedFormats`, 1.0 set). */
const supportedFormats = new Set([
  "bsonobjectid",
  "uri",
  "email",
  "hostname",
  "ipv4",
  "ipv6",
  "cidr",
  "mac",
  "uuid",
  "uuid3",
  "uuid4",
  "uuid5",
  "isbn",
  "isbn10",
  "isbn13",
  "creditcard",
  "ssn",
  "hexcolor",
  "rgbcolor",
  "byte",
  "password",
  "date",
  "duration",
  "datetime",
  "date-time",
]);

/** Keys in the order they are written; anything else is an error, so a new zod construct is noticed here. */
const keyOrder = [
  "description",
  "type",
  "format",
  "enum",
  "default",
  "nullable",
  "minimum",
  "exclusiveMinimum",
  "maximum",
  "exclusiveMaximum",
  "multipleOf",
  "minLength",
  "maxLength",
  "pattern",
  "minItems",
  "maxItems",
  "minProperties",
  "maxProperties",
  "required",
  "properties",
  "additionalProperties",
  "items",
  "allOf",
  "anyOf",
  "oneOf",
  "not",
  "x-kubernetes-preserve-unknown-fields",
  "x-kubernetes-int-or-string",
  "x-kubernetes-embedded-resource",
  "x-kubernetes-list-type",
  "x-kubernetes-list-map-keys",
  "x-kubernetes-map-type",
  "x-kubernetes-validations",
] as const;
const knownKeys = new Set<string>(keyOrder);

/** Keys dropped without a trace: JSON Schema bookkeeping and annotations Kubernetes does not take. */
const droppedKeys = new Set(["$schema", "$id", "id", "title", "examples", "readOnly", "writeOnly"]);

/** Problems are thrown with the schema path, e.g. `spec.rules[].matches`. */
export class StructuralSchemaError extends Error {
  constructor(path: string, message: string) {
    super(`${path === "" ? "<root>" : path}: ${message}`);
    this.name = "StructuralSchemaError";
  }
}

/**
 * Converts one JSON Schema (zod's `toJSONSchema` output, draft or OpenAPI 3.0 target) into a structural schema.
 * `$ref`s are inlined; constructs that have no structural form throw {@link StructuralSchemaError}.
 */
export function toStructuralSchema(jsonSchema: SchemaNode, path = ""): SchemaNode {
  const definitions = {
    ...asRecord(jsonSchema["definitions"]),
    ...asRecord(jsonSchema["$defs"]),
  };
  return convertNode(jsonSchema, path, definitions, []);
}

function convertNode(
  input: SchemaNode,
  path: string,
  definitions: Readonly<Record<string, unknown>>,
  refStack: readonly string[],
): SchemaNode {
  const ref = input["$ref"];
  if (typeof ref === "string") {
    if (refStack.includes(ref)) throw new StructuralSchemaError(path, `recursive schema (${ref})`);
    return convertNode(inlineRef(input, ref, path, definitions), path, definitions, [...refStack, ref]);
  }
  const out: SchemaNode = {};
  for (const [key, value] of Object.entries(input)) {
    if (droppedKeys.has(key) || key === "definitions" || key === "$defs") continue;
    if (key === "const") {
      out["enum"] = [value];
      continue;
    }
    if (!knownKeys.has(key)) throw new StructuralSchemaError(path, `'${key}' has no structural form`);
    out[key] = value;
  }

  if (Array.isArray(out["anyOf"]) || Array.isArray(out["oneOf"])) mergeUnion(out, path);

  if (typeof out["format"] === "string") {
    if (!supportedFormats.has(out["format"])) {
      // e.g. zod's `starts_with`: the API server would only warn and ignore it; the pattern next to it checks.
      delete out["format"];
    } else if (out["format"] === "date-time") {
      // The format check covers zod's long date-time regular expression.
      delete out["pattern"];
    }
  }

  if (isRecord(out["properties"])) {
    const properties: SchemaNode = {};
    for (const [name, child] of Object.entries(out["properties"])) {
      const childPath = join(path, name);
      properties[name] = convertNode(asSchema(child, childPath), childPath, definitions, refStack);
    }
    out["properties"] = properties;
    // Kubernetes forbids additionalProperties next to properties; unknown fields are pruned (and refused by
    // kubectl's strict field validation) instead.
    delete out["additionalProperties"];
    if (out["type"] === undefined) out["type"] = "object";
  } else if (out["additionalProperties"] === false) {
    delete out["additionalProperties"];
  } else if (isRecord(out["additionalProperties"])) {
    out["additionalProperties"] = convertNode(
      out["additionalProperties"],
      `${path}{}`,
      definitions,
      refStack,
    );
  }

  if (out["items"] !== undefined) {
    if (Array.isArray(out["items"])) throw new StructuralSchemaError(path, "tuples have no structural form");
    out["items"] = convertNode(asSchema(out["items"], `${path}[]`), `${path}[]`, definitions, refStack);
  }

  if (Array.isArray(out["required"]) && out["required"].length === 0) delete out["required"];

  // An empty schema (z.unknown(), z.any()) accepts anything: the only place unknown fields are kept.
  if (out["type"] === undefined && out["anyOf"] === undefined && out["oneOf"] === undefined) {
    if (Object.keys(out).every((key) => key === "description")) {
      out["x-kubernetes-preserve-unknown-fields"] = true;
    } else {
      throw new StructuralSchemaError(path, "every node needs a type");
    }
  }
  return orderSchemaKeys(out);
}

/**
 * Structural schemas allow `anyOf`/`oneOf` only as extra value validation: the branches may not declare types,
 * descriptions, defaults or properties the outer schema lacks. Unions of string enums become one enum; unions
 * of objects become one object with every property, keeping only which properties each branch requires.
 */
function mergeUnion(out: SchemaNode, path: string): void {
  const unionKey = Array.isArray(out["anyOf"]) ? "anyOf" : "oneOf";
  const branches = (out[unionKey] as unknown[]).map((b, i) => asSchema(b, `${path}.${unionKey}[${i}]`));
  Reflect.deleteProperty(out, unionKey);
  const types = new Set(branches.map((b) => b["type"]));
  if (types.size !== 1) {
    throw new StructuralSchemaError(path, `a union of ${[...types].join("/")} has no structural form`);
  }
  const [type] = types;
  if (type === "string" && branches.every((b) => Array.isArray(b["enum"]) && Object.keys(b).length <= 2)) {
    out["type"] = "string";
    out["enum"] = [...new Set(branches.flatMap((b) => b["enum"] as unknown[]))];
    return;
  }
  if (type === "object") {
    const properties: SchemaNode = {};
    for (const branch of branches) {
      for (const [name, schema] of Object.entries(asRecord(branch["properties"]))) {
        const existing = properties[name];
        if (existing !== undefined && JSON.stringify(existing) !== JSON.stringify(schema)) {
          throw new StructuralSchemaError(path, `union branches disagree on property '${name}'`);
        }
        properties[name] = schema;
      }
    }
    out["type"] = "object";
    out["properties"] = properties;
    out[unionKey] = branches.map((b) => ({ required: Array.isArray(b["required"]) ? b["required"] : [] }));
    return;
  }
  throw new StructuralSchemaError(path, `a union of ${String(type)} schemas has no structural form`);
}

/** The referenced schema, with the siblings of `$ref` (description, default) winning over its own. */
function inlineRef(
  node: SchemaNode,
  ref: string,
  path: string,
  definitions: Readonly<Record<string, unknown>>,
): SchemaNode {
  const match = /^#\/(?:definitions|\$defs)\/(.+)$/.exec(ref);
  const target = match?.[1] === undefined ? undefined : definitions[decodeURIComponent(match[1])];
  if (!isRecord(target)) throw new StructuralSchemaError(path, `cannot resolve ${ref}`);
  const { $ref: _ref, ...siblings } = node;
  return { ...target, ...siblings };
}

/** The node with its keys in the order CRD files list them (description first, rules last). */
export function orderSchemaKeys(node: SchemaNode): SchemaNode {
  const ordered: SchemaNode = {};
  for (const key of keyOrder) if (node[key] !== undefined) ordered[key] = node[key];
  return ordered;
}

function join(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function asRecord(value: unknown): Record<string, unknown> {
  return isRecord(value) ? value : {};
}

function asSchema(value: unknown, path: string): SchemaNode {
  if (!isRecord(value)) throw new StructuralSchemaError(path, "expected a schema object");
  return value;
}
