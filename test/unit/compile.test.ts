// Focused compile properties the golden files cannot show: determinism, robustness, secrecy, schema export.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";
import { describe, expect, it } from "vitest";
import { normalizePath } from "../../src/compile/api-route.ts";
import {
  canonicalJson,
  compile,
  computeRevision,
  describeObject,
  type SourceObject,
} from "../../src/compile/compile.ts";
import { compileReasonDescriptions, compileReasonSchema } from "../../src/compile/reasons.ts";
import { apiRouteSchema } from "../../src/resources/api-route.ts";
import { authServerSchema } from "../../src/resources/auth-server.ts";
import { scopePolicySchema } from "../../src/resources/scope-policy.ts";
import { parseManifestText } from "../../src/provider/file/index.ts";
import { snapshotSchema } from "../../src/snapshot/snapshot.ts";
import { createRandom } from "../helpers/random.ts";

const root = resolve(import.meta.dirname, "../..");

function loadYaml(file: string): SourceObject[] {
  const loaded = parseManifestText(readFileSync(file, "utf8"), file);
  expect(loaded.problems).toEqual([]);
  return loaded.objects;
}

function loadExamples(): SourceObject[] {
  return readdirSync(join(root, "examples"))
    .filter((file) => file.endsWith(".yaml"))
    .sort()
    .flatMap((file) => loadYaml(join(root, "examples", file)));
}

function loadAllGoldenInputs(): SourceObject[] {
  const dir = join(root, "test/golden");
  return readdirSync(dir)
    .filter((file) => file.endsWith(".in.yaml"))
    .sort()
    .flatMap((file) => loadYaml(join(dir, file)));
}

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

function withoutOrigins(objects: readonly SourceObject[]): SourceObject[] {
  return objects.map((object) => ({ object: object.object }));
}

describe("compile determinism", () => {
  it("gives the same snapshot and results for any input order", () => {
    const objects = withoutOrigins(loadExamples());
    const expected = compile({ objects });
    const random = createRandom(7);
    for (let round = 0; round < 20; round++) {
      const shuffled = compile({ objects: shuffle(objects, random) });
      expect(shuffled.snapshot).toEqual(expected.snapshot);
      expect(shuffled.perObjectResults).toEqual(expected.perObjectResults);
    }
  });

  it("keeps the revision when files are listed in another order", () => {
    const objects = loadAllGoldenInputs().filter(
      (object) => !String(object.origin?.file).includes("unsupported"),
    );
    const expected = compile({ objects }).snapshot.revision;
    const random = createRandom(42);
    for (let round = 0; round < 10; round++) {
      expect(compile({ objects: shuffle(objects, random) }).snapshot.revision).toBe(expected);
    }
  });

  it("hashes content, not key order, and changes with the content", () => {
    const { snapshot } = compile({ objects: loadExamples() });
    const reordered = JSON.parse(canonicalJson(snapshot)) as typeof snapshot;
    expect(computeRevision({ routes: reordered.routes, authServers: reordered.authServers })).toBe(
      snapshot.revision,
    );
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[2,{"e":0,"f":1}]},"b":1}',
    );

    const objects = loadExamples().map((source) => structuredClone(source));
    const echo = objects.find((source) => JSON.stringify(source.object).includes('"name":"echo"'));
    (echo!.object as { spec: { rules: { timeouts?: unknown }[] } }).spec.rules[0]!.timeouts = {
      requestMs: 5,
    };
    expect(compile({ objects }).snapshot.revision).not.toBe(snapshot.revision);
  });

  it("lets the first copy of a duplicated object win by file order, whatever the input order", () => {
    const policy = (domain: string, file: string): SourceObject => ({
      object: {
        apiVersion: "phantomgate.dev/v1alpha1",
        kind: "ScopePolicy",
        metadata: { name: "p" },
        spec: { domain, scopes: [{ name: "s" }] },
      },
      origin: { file, index: 0 },
    });
    const results = compile({
      objects: [policy("second", "b.yaml"), policy("first", "a.yaml")],
    }).perObjectResults;
    expect(results.map((result) => [result.origin?.file, result.reason])).toEqual([
      ["a.yaml", "Accepted"],
      ["b.yaml", "Duplicate"],
    ]);
  });
});

describe("route ids", () => {
  it("name a rule's routes by the rule's name when only that rule has it and it is not all digits, else by its index", () => {
    const rule = (name: string | undefined, path: string) => `
    - ${name === undefined ? "" : `name: "${name}"\n      `}matches:
        - path: { type: PathPrefix, value: ${path} }
        - path: { type: PathPrefix, value: ${path}-too }
      authentication: { mode: none }
      backendRefs: [{ url: "http://127.0.0.1:9101" }]`;
    const route = `apiVersion: phantomgate.dev/v1alpha1
kind: ApiRoute
metadata: { name: named, namespace: default }
spec:
  rules:${rule("read", "/a")}${rule("twice", "/b")}${rule("twice", "/c")}${rule("7", "/d")}${rule(undefined, "/e")}
`;
    const objects = [
      ...loadExamples().filter((object) => (object.object as { kind?: unknown }).kind !== "ApiRoute"),
      ...parseManifestText(route, "named.yaml").objects,
    ];
    const { snapshot, perObjectResults } = compile({ objects });
    expect(perObjectResults.find((result) => result.name === "named")?.accepted).toBe(true);
    const ids = snapshot.routes
      .filter((r) => r.source.name === "named")
      .map((r) => `${r.id} <- rule ${r.source.rule}`)
      .sort();
    expect(ids).toEqual([
      "default/named#1.0 <- rule 1",
      "default/named#1.1 <- rule 1",
      "default/named#2.0 <- rule 2",
      "default/named#2.1 <- rule 2",
      "default/named#3.0 <- rule 3",
      "default/named#3.1 <- rule 3",
      "default/named#4.0 <- rule 4",
      "default/named#4.1 <- rule 4",
      "default/named#read.0 <- rule 0",
      "default/named#read.1 <- rule 0",
    ]);
  });
});

describe("compile robustness", () => {
  const garbage: unknown[] = [
    undefined,
    null,
    42,
    "text",
    [],
    {},
    { apiVersion: 1, kind: {} },
    { apiVersion: "phantomgate.dev/v1alpha1", kind: "ApiRoute" },
    { apiVersion: "phantomgate.dev/v1alpha1", kind: "ApiRoute", metadata: "x", spec: null },
    {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "ApiRoute",
      metadata: { name: 5, namespace: [] },
      spec: [],
    },
    {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "AuthServer",
      metadata: { name: "a" },
      spec: { issuer: {} },
    },
    {
      apiVersion: "phantomgate.dev/v1alpha1",
      kind: "ScopePolicy",
      metadata: { name: "p" },
      spec: { scopes: 1 },
    },
    { apiVersion: "v1", kind: "Secret", metadata: { name: "s" }, data: { k: 5 } },
    JSON.parse('{"__proto__": {"polluted": true}, "kind": "ApiRoute"}') as unknown,
  ];

  it("reports garbage instead of throwing", () => {
    const { snapshot, perObjectResults } = compile({ objects: garbage.map((object) => ({ object })) });
    expect(snapshotSchema.parse(snapshot)).toEqual(snapshot);
    expect(perObjectResults).toHaveLength(garbage.length);
    expect(perObjectResults.every((result) => !result.accepted && result.messages.length > 0)).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("names objects without kind or name readably, and cuts over-long names and kinds in messages", () => {
    const long = "a".repeat(100_000);
    const { perObjectResults } = compile({
      objects: [
        { object: ["a", "list"] },
        { object: { apiVersion: "phantomgate.dev/v1alpha1", kind: "ApiRoute", metadata: { name: long } } },
        { object: { apiVersion: "phantomgate.dev/v1alpha1", kind: long, metadata: { name: "x" } } },
      ],
    });
    const described = perObjectResults.map(describeObject);
    expect(described).toContain("(no kind) default/(no name)");
    expect(described).toContain(`ApiRoute default/${"a".repeat(253)}…`);
    expect(described).toContain(`${"a".repeat(253)}… default/x`);
    for (const result of perObjectResults) {
      for (const message of result.messages) expect(message.length).toBeLessThan(1000);
    }
  });

  it("says the kind is not a string rather than missing when it is a number or a list", () => {
    const { perObjectResults } = compile({
      objects: [
        { object: { apiVersion: "phantomgate.dev/v1alpha1", kind: 5, metadata: { name: "n" } } },
        { object: { apiVersion: "phantomgate.dev/v1alpha1", kind: ["ApiRoute"], metadata: { name: "l" } } },
        { object: { apiVersion: "phantomgate.dev/v1alpha1", metadata: { name: "m" } } },
      ],
    });
    const byName = new Map(perObjectResults.map((r) => [r.name, [r.reason, r.messages[0]?.split(" (")[0]]]));
    expect(byName.get("n")).toEqual(["UnsupportedKind", "kind: kind must be a string, got number"]);
    expect(byName.get("l")).toEqual(["UnsupportedKind", "kind: kind must be a string, got a list"]);
    expect(byName.get("m")).toEqual(["UnsupportedKind", "kind: missing kind"]);
  });

  it("survives random mutations of valid manifests, and bad objects never block good ones", () => {
    const base = loadExamples();
    const baseline = compile({ objects: base });
    const random = createRandom(1234);
    const values: unknown[] = [
      null,
      -1,
      0,
      1.5,
      "",
      "/",
      "//x/../",
      "*",
      [],
      {},
      [{}],
      true,
      "GET",
      "x".repeat(300),
    ];
    for (let round = 0; round < 300; round++) {
      const objects = base.map((source) => structuredClone(source));
      const target = objects[Math.floor(random() * objects.length)]!;
      const targetIsRoute = (target.object as { kind?: unknown }).kind === "ApiRoute";
      const targetName = (target.object as { metadata: { name: string } }).metadata.name;
      mutateRandomly(target.object, random, values);
      const result = compile({ objects });
      expect(() => snapshotSchema.parse(result.snapshot)).not.toThrow();
      if (!targetIsRoute) continue;
      // A broken route never takes the other routes down with it.
      const others = (routes: readonly { source: { name: string } }[]) =>
        routes.filter((route) => route.source.name !== targetName);
      expect(others(result.snapshot.routes)).toEqual(others(baseline.snapshot.routes));
    }
  });

  it("treats an object without creationTimestamp as the newest in a conflict", () => {
    const route = (name: string, creationTimestamp?: string): SourceObject => ({
      object: {
        apiVersion: "phantomgate.dev/v1alpha1",
        kind: "ApiRoute",
        metadata: { name, ...(creationTimestamp === undefined ? {} : { creationTimestamp }) },
        spec: {
          rules: [
            {
              matches: [{ path: { value: "/x" } }],
              authentication: { mode: "none" },
              backendRefs: [{ url: "http://a" }],
            },
          ],
        },
      },
    });
    const results = compile({
      objects: [route("a-new"), route("z-old", "2020-01-01T00:00:00Z")],
    }).perObjectResults;
    expect(results.map((result) => [result.name, result.reason])).toEqual([
      ["a-new", "Conflicted"],
      ["z-old", "Accepted"],
    ]);
  });
});

describe("compile secrecy", () => {
  const marker = "SUPERSECRET-marker-9f8e7d";

  it("never puts a client secret into a message, whatever else is wrong", () => {
    const authServer = (name: string, spec: Record<string, unknown>): SourceObject => ({
      object: { apiVersion: "phantomgate.dev/v1alpha1", kind: "AuthServer", metadata: { name }, spec },
    });
    const objects: SourceObject[] = [
      authServer("both", {
        issuer: "https://as",
        clientAuthentication: {
          clientId: "gw",
          clientSecret: { value: marker, secretRef: { name: "s", key: "k" } },
        },
      }),
      authServer("jwk", {
        issuer: "https://as",
        clientAuthentication: { method: "private_key_jwt", clientId: "gw", clientSecret: { value: marker } },
      }),
      authServer("unknown-field", {
        issuer: "https://as",
        clientAuthentication: { clientId: "gw", clientSecret: { value: marker, [marker]: marker } },
      }),
      authServer("bad-method", {
        issuer: "https://as",
        clientAuthentication: { method: marker, clientId: "gw", clientSecret: { value: marker } },
      }),
      {
        object: {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: "s" },
          data: { k: `${marker}!` },
          stringData: { k: 5, other: marker },
        },
      },
    ];
    const { perObjectResults } = compile({ objects });
    expect(perObjectResults.every((result) => !result.accepted)).toBe(true);
    const messages = perObjectResults.flatMap((result) => result.messages);
    expect(messages.length).toBeGreaterThan(0);
    // Unknown keys are named by design; only values must stay out.
    expect(
      messages.filter((message) => !message.includes(`clientSecret.${marker}: unknown field`)).join("\n"),
    ).not.toContain(marker);
  });
});

describe("compile helpers and schemas", () => {
  it.each([
    ["/", "/"],
    ["//", "/"],
    ["/a/", "/a"],
    ["//a///b//", "/a/b"],
    ["/a/b", "/a/b"],
  ])("normalizePath(%j) is %j", (input, expected) => {
    expect(normalizePath(input)).toBe(expected);
  });

  it.each([
    ["/", "/"],
    ["/admin/", "/admin/"],
    ["//admin//", "/admin/"],
    ["/admin", "/admin"],
  ])("normalizePath(%j, Exact) is %j: the trailing slash is kept, as on a request", (input, expected) => {
    expect(normalizePath(input, "Exact")).toBe(expected);
  });

  it("keeps the reasons enum and its descriptions in step", () => {
    expect(Object.keys(compileReasonDescriptions).sort()).toEqual([...compileReasonSchema.options].sort());
  });

  it("converts every resource schema to JSON Schema (for CRD generation)", () => {
    for (const schema of [apiRouteSchema, authServerSchema, scopePolicySchema]) {
      const jsonSchema = z.toJSONSchema(schema, { io: "input" });
      expect(jsonSchema).toMatchObject({ type: "object", additionalProperties: false });
    }
    const route = JSON.stringify(z.toJSONSchema(apiRouteSchema, { io: "input" }));
    expect(route).toContain('"default":30000');
  });

  it("gives every snapshot route a unique id and lists them on their object", () => {
    const { snapshot, perObjectResults } = compile({ objects: loadAllGoldenInputs() });
    const ids = snapshot.routes.map((route) => route.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(perObjectResults.flatMap((result) => result.routeIds).sort()).toEqual([...ids].sort());
  });
});

function mutateRandomly(value: unknown, random: () => number, values: readonly unknown[]): void {
  const containers: (Record<string, unknown> | unknown[])[] = [];
  const collect = (node: unknown): void => {
    if (typeof node !== "object" || node === null) return;
    containers.push(node as Record<string, unknown> | unknown[]);
    for (const child of Object.values(node)) collect(child);
  };
  collect(value);
  const container = containers[Math.floor(random() * containers.length)];
  if (container === undefined) return;
  const keys = Object.keys(container);
  const key = keys[Math.floor(random() * keys.length)];
  if (key === undefined) return;
  const replacement = structuredClone(values[Math.floor(random() * values.length)]);
  if (random() < 0.2 && !Array.isArray(container)) {
    // eslint-disable-next-line @typescript-eslint/no-dynamic-delete -- removing a random field is the point
    delete container[key];
  } else {
    (container as Record<string, unknown>)[key] = replacement;
  }
}

describe("AuthServer bounds", () => {
  it("refuses timeouts and a JWKS cooldown past an hour (a Node timer would fire at once instead)", () => {
    const example = loadExamples().find(
      (source) => (source.object as { kind?: unknown }).kind === "AuthServer",
    );
    const object = example?.object as { spec: Record<string, unknown> } | undefined;
    expect(object).toBeDefined();
    const withSpec = (change: Record<string, unknown>) => ({
      ...object,
      spec: { ...object?.spec, ...change },
    });
    expect(authServerSchema.safeParse(withSpec({})).success).toBe(true);
    for (const change of [
      { timeouts: { responseMs: 2_147_483_648 } },
      { timeouts: { connectMs: 3_600_001 } },
      { jwksCooldownMs: 3_600_001 },
    ]) {
      const result = authServerSchema.safeParse(withSpec(change));
      expect(result.success, JSON.stringify(change)).toBe(false);
      expect(JSON.stringify(result.error?.issues), JSON.stringify(change)).toContain("3600000");
    }
    expect(authServerSchema.safeParse(withSpec({ timeouts: { responseMs: 3_600_000 } })).success).toBe(true);
  });
});

describe("mint forwardClaims", () => {
  it("refuses claims the gateway sets or that would undo the narrowing (scp, cnf, act), and allows sub, client_id, scope", () => {
    const examples = loadExamples();
    const mintRoute = examples.find((source) => JSON.stringify(source.object).includes('"mode":"mint"'));
    expect(mintRoute).toBeDefined();
    const withClaims = (claims: string[]) => {
      const copy = structuredClone(mintRoute?.object) as {
        spec: { rules: { authentication?: { mode?: string; forwardClaims?: string[] } }[] };
      };
      for (const rule of copy.spec.rules) {
        if (rule.authentication?.mode === "mint") rule.authentication.forwardClaims = claims;
      }
      return copy;
    };
    expect(apiRouteSchema.safeParse(withClaims(["sub", "client_id", "scope", "tenant"])).success).toBe(true);
    for (const claim of ["scp", "cnf", "act", "exp"]) {
      const result = apiRouteSchema.safeParse(withClaims(["sub", claim]));
      expect(result.success, claim).toBe(false);
      expect(JSON.stringify(result.error?.issues), claim).toContain(`'${claim}' cannot be forwarded`);
    }
  });
});
