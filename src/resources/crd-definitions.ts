// The CustomResourceDefinitions of the phantomgate.dev API group, built from the zod schemas: names, printer
// columns and the structural schema with its CEL rules. `make crds` writes them to crds/; a test checks drift.
import { stringify } from "yaml";
import { z } from "zod";
import { apiRouteSchema } from "./api-route.ts";
import { authServerSchema } from "./auth-server.ts";
import { apiVersion, resourceStatusSchema, type PhantomgateKind } from "./common.ts";
import { orderSchemaKeys, toStructuralSchema, type SchemaNode } from "./crd-structural.ts";
import { crdSchemaAdditions, type CrdSchemaAdditions } from "./crd-validations.ts";
import { scopePolicySchema } from "./scope-policy.ts";

const [group, version] = apiVersion.split("/") as [string, string];

/** The command that regenerates the files, named in their header and in drift errors. */
export const crdGenerateCommand = "make crds";

interface PrinterColumn {
  readonly name: string;
  readonly type: "string" | "integer" | "number" | "boolean" | "date";
  readonly jsonPath: string;
  readonly description: string;
  /** 0: `kubectl get`; 1: only with `-o wide`. */
  readonly priority?: number;
}

interface KindDefinition {
  readonly kind: PhantomgateKind;
  readonly plural: string;
  /** Short names checked against the built-in resources of Kubernetes 1.35 (`kubectl api-resources`). */
  readonly shortNames: readonly string[];
  readonly description: string;
  readonly spec: z.ZodType;
  readonly printerColumns: readonly PrinterColumn[];
}

const conditionStatus = (type: string): string => `.status.conditions[?(@.type=="${type}")].status`;

const ageColumn: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "Time since the object was created.",
};

// A printer column shows only the first value a JSONPath finds, so per-rule columns show the first rule.
const kinds: readonly KindDefinition[] = [
  {
    kind: "ApiRoute",
    plural: "apiroutes",
    shortNames: ["ar", "pgar"],
    description:
      "ApiRoute routes hostnames and paths to backends and says, per rule, how the gateway handles the " +
      "caller's token (phantom, exchange, mint, jwt or none) and which coarse scopes it requires.",
    spec: apiRouteSchema.shape.spec,
    printerColumns: [
      { name: "Hosts", type: "string", jsonPath: ".spec.hostnames", description: "Hostnames; [] is any." },
      {
        name: "Paths",
        type: "string",
        jsonPath: ".spec.rules[*].matches[*].path.value",
        description: "Path of the first match of the first rule.",
      },
      {
        name: "Auth",
        type: "string",
        jsonPath: ".spec.rules[*].authentication.mode",
        description: "Token mode of the first rule.",
      },
      {
        name: "Scopes",
        type: "string",
        jsonPath: ".spec.rules[*].requiredScopes.allOf",
        description: "The allOf scopes of the first rule that has an allOf.",
      },
      {
        name: "Programmed",
        type: "string",
        jsonPath: conditionStatus("Programmed"),
        description: "Whether the gateways serve the route's current generation.",
      },
      ageColumn,
      {
        name: "Accepted",
        type: "string",
        jsonPath: conditionStatus("Accepted"),
        description: "Whether compile accepted the route.",
        priority: 1,
      },
    ],
  },
  {
    kind: "ScopePolicy",
    plural: "scopepolicies",
    shortNames: ["sp", "pgsp"],
    description:
      "ScopePolicy defines one scope domain: its coarse scopes and which scope implies which. ApiRoutes may " +
      "require only scopes of the ScopePolicies they reference.",
    spec: scopePolicySchema.shape.spec,
    printerColumns: [
      { name: "Domain", type: "string", jsonPath: ".spec.domain", description: "The scope domain." },
      {
        name: "Scopes",
        type: "string",
        jsonPath: ".spec.scopes[*].name",
        description: "Name of the first scope.",
      },
      {
        name: "Accepted",
        type: "string",
        jsonPath: conditionStatus("Accepted"),
        description: "Whether compile accepted the policy.",
      },
      ageColumn,
    ],
  },
  {
    kind: "AuthServer",
    plural: "authservers",
    shortNames: ["as", "pgas"],
    description:
      "AuthServer describes an OAuth 2.0 authorization server: its issuer and endpoints, and the client " +
      "credentials the gateway uses to introspect and exchange tokens there.",
    spec: authServerSchema.shape.spec,
    printerColumns: [
      { name: "Issuer", type: "string", jsonPath: ".spec.issuer", description: "Issuer identifier." },
      {
        name: "Accepted",
        type: "string",
        jsonPath: conditionStatus("Accepted"),
        description: "Whether compile accepted the auth server (its Secret included).",
      },
      ageColumn,
      {
        name: "Discovery",
        type: "boolean",
        jsonPath: ".spec.discovery",
        description: "Whether endpoints come from the issuer's metadata.",
        priority: 1,
      },
    ],
  },
];

/** One generated CRD: the file it belongs in (relative to the repository root) and its content. */
export interface CrdFile {
  readonly path: string;
  readonly content: string;
}

/** Builds the CustomResourceDefinition object of each kind, in a fixed order. */
export function buildCustomResourceDefinitions(): Record<string, unknown>[] {
  return kinds.map((definition) => buildCustomResourceDefinition(definition));
}

/** The YAML files of `crds/`, byte for byte as `make crds` writes them. */
export function renderCrdFiles(): CrdFile[] {
  return kinds.map((definition) => ({
    path: `crds/${group}_${definition.plural}.yaml`,
    content: renderCrdYaml(buildCustomResourceDefinition(definition)),
  }));
}

function renderCrdYaml(crd: Record<string, unknown>): string {
  const header =
    `# Generated by scripts/generate-crds.ts (\`${crdGenerateCommand}\`) from the zod schemas in src/resources/ ` +
    "and the\n# CEL rules in src/resources/crd-validations.ts. Do not edit: change those and regenerate.\n";
  return header + stringify(crd, { lineWidth: 0, aliasDuplicateObjects: false });
}

function buildCustomResourceDefinition(definition: KindDefinition): Record<string, unknown> {
  const { kind, plural } = definition;
  const openAPIV3Schema = toStructuralSchema({
    type: "object",
    description: definition.description,
    required: ["spec"],
    properties: {
      apiVersion: {
        type: "string",
        description: "Versioned schema of this representation of an object; always " + apiVersion + ".",
      },
      kind: { type: "string", description: `The REST resource this object represents; always ${kind}.` },
      metadata: { type: "object" },
      spec: {
        ...toJsonSchema(definition.spec),
        description: `What the ${kind} should be; compile checks it together with the objects it references.`,
      },
      status: {
        ...toJsonSchema(resourceStatusSchema),
        description: "Written by the operator: conditions Accepted and Programmed, per generation.",
      },
    },
  });
  applyAdditions(openAPIV3Schema, crdSchemaAdditions[kind], kind);
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${plural}.${group}`,
      labels: { "app.kubernetes.io/part-of": "phantomgate" },
    },
    spec: {
      group,
      names: {
        kind,
        listKind: `${kind}List`,
        plural,
        singular: kind.toLowerCase(),
        shortNames: [...definition.shortNames],
        categories: ["phantomgate"],
      },
      scope: "Namespaced",
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: definition.printerColumns.map((column) => ({
            name: column.name,
            type: column.type,
            jsonPath: column.jsonPath,
            description: column.description,
            ...(column.priority === undefined ? {} : { priority: column.priority }),
          })),
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}

/** The accepted input of a schema: defaults are what the API server will fill in. */
function toJsonSchema(schema: z.ZodType): SchemaNode {
  return z.toJSONSchema(schema, {
    io: "input",
    target: "openapi-3.0",
    unrepresentable: "throw",
    reused: "inline",
    cycles: "throw",
  });
}

function applyAdditions(root: SchemaNode, additions: CrdSchemaAdditions, kind: string): void {
  for (const [path, addition] of Object.entries(additions)) {
    const node = resolveSchemaPath(root, path, kind);
    const extra: SchemaNode = { ...addition.keywords };
    if (addition.rules !== undefined && addition.rules.length > 0) {
      extra["x-kubernetes-validations"] = addition.rules.map((rule) => ({ ...rule }));
    }
    for (const key of Object.keys(extra)) {
      // Also when zod gains a bound the CRD used to add: then the addition is obsolete, not a second source.
      if (node[key] !== undefined)
        throw new Error(`${kind} ${path}: '${key}' is already set by the zod schema`);
    }
    const merged = orderSchemaKeys({ ...node, ...extra });
    for (const key of Object.keys(node)) Reflect.deleteProperty(node, key);
    Object.assign(node, merged);
  }
}

function resolveSchemaPath(root: SchemaNode, path: string, kind: string): SchemaNode {
  let node = root;
  for (const segment of path.split(".")) {
    const name = segment.endsWith("[]") ? segment.slice(0, -2) : segment;
    const properties = node["properties"] as Record<string, SchemaNode> | undefined;
    let next = properties?.[name];
    if (next !== undefined && segment.endsWith("[]")) next = next["items"] as SchemaNode | undefined;
    if (next === undefined)
      throw new Error(`${kind}: schema path '${path}' does not exist (at '${segment}')`);
    node = next;
  }
  return node;
}
