// The compile stage: resource objects in, one snapshot plus a verdict per object out (pure, deterministic).
import { createHash } from "node:crypto";
import type { z } from "zod";
import { apiRouteSchema, type ApiRoute } from "../resources/api-route.ts";
import { authServerSchema, type AuthServer } from "../resources/auth-server.ts";
import { apiVersion as phantomgateApiVersion, phantomgateKinds } from "../resources/common.ts";
import { scopePolicySchema, type ScopePolicy } from "../resources/scope-policy.ts";
import { secretSchema, type Secret } from "../resources/secret.ts";
import {
  compiledAuthServerSchema,
  compiledRouteSchema,
  snapshotSchema,
  type CompiledAuthServer,
  type CompiledRoute,
  type Snapshot,
} from "../snapshot/snapshot.ts";
import { compileApiRoute, RouteClaimIndex, sortRoutesBySpecificity } from "./api-route.ts";
import { compileAuthServer, type AuthServerOutcome, type SecretOutcome } from "./auth-server.ts";
import { fieldProblem, formatFieldPath, selectReason, type CompileReason, type Problem } from "./reasons.ts";
import { compileScopePolicy, type ScopePolicyOutcome } from "./scope-policy.ts";
import { compileSecret } from "./secret.ts";

/** Where an object came from: a file and the document's position in it (0-based). */
export interface SourceOrigin {
  readonly file: string;
  readonly index: number;
}

/** One input object as read (unvalidated), with where it came from when known. */
export interface SourceObject {
  readonly object: unknown;
  readonly origin?: SourceOrigin;
}

/** Everything compile reads, in any order (origins decide which copy of a duplicate wins). */
export interface CompileInput {
  readonly objects: readonly SourceObject[];
  /** The label selector the Secrets among `objects` were listed with, if any: named when one is missing. */
  readonly secretLabelSelector?: string | undefined;
}

/** The verdict on one input object; becomes its Accepted condition and `check` output. */
export interface ObjectResult {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly origin?: SourceOrigin;
  readonly generation?: number;
  readonly accepted: boolean;
  readonly reason: CompileReason;
  /** Human-readable, each starting with the field path it concerns; never contains secret values. */
  readonly messages: string[];
  /** Ids of the snapshot routes this object produced (ApiRoutes only). */
  readonly routeIds: string[];
}

/**
 * `Kind namespace/name` of a verdict for problem lists, with `(no kind)` and `(no name)` for missing parts; a
 * part longer than a Kubernetes name (253) is cut, so a hostile file cannot flood a log line.
 */
export function describeObject(result: Pick<ObjectResult, "kind" | "namespace" | "name">): string {
  const part = (value: string, missing: string): string => (value === "" ? missing : clip(value));
  return `${part(result.kind, "(no kind)")} ${part(result.namespace, "(no namespace)")}/${part(result.name, "(no name)")}`;
}

/** A value from the input as shown in a message: at most 253 characters, the longest Kubernetes name. */
function clip(value: string): string {
  return value.length > 253 ? `${value.slice(0, 253)}…` : value;
}

/** The snapshot for the gateways and one verdict per input object, in file order (else kind/namespace/name). */
export interface CompileResult {
  readonly snapshot: Snapshot;
  readonly perObjectResults: ObjectResult[];
}

type ParsedObject =
  | { readonly kind: "ApiRoute"; readonly value: ApiRoute }
  | { readonly kind: "AuthServer"; readonly value: AuthServer }
  | { readonly kind: "ScopePolicy"; readonly value: ScopePolicy }
  | { readonly kind: "Secret"; readonly value: Secret };

interface Entry {
  readonly source: SourceObject;
  readonly identity: { kind: string; namespace: string; name: string };
  /** `metadata.generation` read even from an invalid object, so status can still name what it judged. */
  readonly generation: number | undefined;
  /** The kind whose schema the object was checked against; unset for kinds compile does not read. */
  readAs?: ParsedObject["kind"];
  parsed?: ParsedObject;
  problems: Problem[];
  routeIds: string[];
}

/** Compiles resource objects into a snapshot. Never throws on bad input: problems go to `perObjectResults`. */
export function compile(input: CompileInput): CompileResult {
  const entries = orderByOrigin(input.objects).map(parseSourceObject);
  rejectDuplicates(entries);
  // Objects of a kind compile reads, except second copies; rejected ones stay visible to their referrers.
  const candidates = (kind: ParsedObject["kind"]) =>
    entries.filter((entry) => entry.readAs === kind && !entry.problems.some((p) => p.reason === "Duplicate"));

  const secrets = new Map<string, SecretOutcome>();
  for (const entry of candidates("Secret")) {
    const values = entry.parsed?.kind === "Secret" ? compileSecret(entry.parsed.value) : undefined;
    secrets.set(objectId(entry), values === undefined ? { accepted: false } : { accepted: true, values });
  }

  const scopePolicies = new Map<string, ScopePolicyOutcome>();
  for (const entry of candidates("ScopePolicy")) {
    if (entry.parsed?.kind !== "ScopePolicy") {
      scopePolicies.set(objectId(entry), { accepted: false, problems: entry.problems });
      continue;
    }
    const outcome = compileScopePolicy(entry.parsed.value);
    if (!outcome.accepted) entry.problems.push(...outcome.problems);
    scopePolicies.set(objectId(entry), outcome);
  }

  const authServers = new Map<string, AuthServerOutcome>();
  const compiledAuthServers: CompiledAuthServer[] = [];
  for (const entry of candidates("AuthServer")) {
    if (entry.parsed?.kind !== "AuthServer") {
      authServers.set(objectId(entry), { accepted: false, problems: entry.problems });
      continue;
    }
    let outcome = compileAuthServer(entry.parsed.value, secrets, input.secretLabelSelector);
    if (outcome.accepted) {
      const problems = verifyCompiled(compiledAuthServerSchema, outcome.authServer);
      if (problems.length > 0) outcome = { accepted: false, problems };
    }
    if (outcome.accepted) compiledAuthServers.push(outcome.authServer);
    else entry.problems.push(...outcome.problems);
    authServers.set(objectId(entry), outcome);
  }

  // Older routes claim first, so a new route can never take a host/path/method away from a serving one.
  const routeEntries = candidates("ApiRoute")
    .filter((entry) => entry.problems.length === 0)
    .sort(compareAge);
  const claimed = new RouteClaimIndex();
  const routes: CompiledRoute[] = [];
  for (const entry of routeEntries) {
    if (entry.parsed?.kind !== "ApiRoute") continue;
    const outcome = compileApiRoute(entry.parsed.value, { scopePolicies, authServers });
    if (!outcome.accepted) {
      entry.problems.push(...outcome.problems);
      continue;
    }
    const problems = [
      ...outcome.routes.flatMap((route) => verifyCompiled(compiledRouteSchema, route)),
      ...claimed.findConflicts(outcome.claims),
    ];
    if (problems.length > 0) {
      entry.problems.push(...problems);
      continue;
    }
    claimed.add(outcome.claims);
    routes.push(...outcome.routes);
    entry.routeIds = outcome.routes.map((route) => route.id);
  }

  const content = {
    authServers: compiledAuthServers.sort((a, b) => compareStrings(a.id, b.id)),
    routes: sortRoutesBySpecificity(routes),
  };
  const snapshot = snapshotSchema.parse({ revision: computeRevision(content), ...content });
  return { snapshot, perObjectResults: entries.sort(compareResultOrder).map(toObjectResult) };
}

/** First 16 hex characters of SHA-256 over the canonical JSON (sorted keys) of the snapshot content. */
export function computeRevision(content: Pick<Snapshot, "authServers" | "routes">): string {
  return createHash("sha256").update(canonicalJson(content)).digest("hex").slice(0, 16);
}

/** JSON with object keys sorted at every level, so equal content always hashes equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, nested: unknown) => {
    if (nested === null || typeof nested !== "object" || Array.isArray(nested)) return nested;
    const record = nested as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(record)
        .sort(compareStrings)
        .map((key) => [key, record[key]]),
    );
  });
}

const schemasByKind = {
  ApiRoute: apiRouteSchema,
  AuthServer: authServerSchema,
  ScopePolicy: scopePolicySchema,
} as const;

function parseSourceObject(source: SourceObject): Entry {
  const raw = source.object;
  const record: Record<string, unknown> = isRecord(raw) ? raw : {};
  const metadata = isRecord(record.metadata) ? record.metadata : {};
  const kind = typeof record.kind === "string" ? record.kind : "";
  const version = typeof record.apiVersion === "string" ? record.apiVersion : "";
  const identity = {
    kind,
    namespace: typeof metadata.namespace === "string" ? metadata.namespace : "default",
    name: typeof metadata.name === "string" ? metadata.name : "",
  };
  const generation =
    typeof metadata.generation === "number" &&
    Number.isSafeInteger(metadata.generation) &&
    metadata.generation >= 0
      ? metadata.generation
      : undefined;
  const entry: Entry = { source, identity, generation, problems: [], routeIds: [] };

  if (!isRecord(raw)) {
    const got = raw === null ? "null" : Array.isArray(raw) ? "a list" : typeof raw;
    entry.problems.push({ reason: "Invalid", message: `a manifest document must be a mapping, got ${got}` });
    return entry;
  }
  if (version === "v1" && kind === "Secret") {
    entry.readAs = "Secret";
    parseInto(entry, secretSchema, (value) => ({ kind: "Secret", value }));
    return entry;
  }
  const phantomgateKind = phantomgateKinds.find((known) => known === kind);
  if (phantomgateKind === undefined || version !== phantomgateApiVersion) {
    entry.problems.push(
      fieldProblem("UnsupportedKind", ["kind"], describeUnsupported(version, kind, record.kind)),
    );
    return entry;
  }
  entry.readAs = phantomgateKind;
  switch (phantomgateKind) {
    case "ApiRoute":
      parseInto(entry, schemasByKind.ApiRoute, (value) => ({ kind: "ApiRoute", value }));
      break;
    case "AuthServer":
      parseInto(entry, schemasByKind.AuthServer, (value) => ({ kind: "AuthServer", value }));
      break;
    case "ScopePolicy":
      parseInto(entry, schemasByKind.ScopePolicy, (value) => ({ kind: "ScopePolicy", value }));
      break;
  }
  return entry;
}

function parseInto<S extends z.ZodType>(
  entry: Entry,
  schema: S,
  wrap: (value: z.output<S>) => ParsedObject,
): void {
  const result = schema.safeParse(entry.source.object);
  if (result.success) entry.parsed = wrap(result.data);
  else
    entry.problems.push(...result.error.issues.flatMap((issue) => describeIssue(issue, entry.source.object)));
}

function describeUnsupported(fullVersion: string, fullKind: string, rawKind: unknown): string {
  const [version, kind] = [clip(fullVersion), clip(fullKind)];
  const supported = `supported: ${phantomgateApiVersion} ${phantomgateKinds.join(", ")}; v1 Secret`;
  if (rawKind !== undefined && rawKind !== null && typeof rawKind !== "string") {
    const got = Array.isArray(rawKind) ? "a list" : typeof rawKind;
    return `kind must be a string, got ${got} (${supported})`;
  }
  if (kind === "") return `missing kind (${supported})`;
  if (version.startsWith("phantomgate.dev/") && phantomgateKinds.some((known) => known === kind)) {
    return `apiVersion ${version} is not supported for ${kind}; use ${phantomgateApiVersion}`;
  }
  return `${version === "" ? "(no apiVersion)" : version} ${kind} is not a kind phantomgate reads (${supported})`;
}

// Zod's messages never include the input value, which matters for Secrets; only the wording is adapted here.
function describeIssue(issue: z.core.$ZodIssue, input: unknown): Problem[] {
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => fieldProblem("Invalid", [...issue.path, key], "unknown field"));
  }
  if (valueAt(input, issue.path) === undefined) {
    if (issue.code === "invalid_type")
      return [fieldProblem("Invalid", issue.path, `required (${issue.expected})`)];
    if (issue.code === "invalid_value") {
      const options = issue.values.map((value) => String(value)).join(", ");
      return [fieldProblem("Invalid", issue.path, `required (one of ${options})`)];
    }
  }
  return [fieldProblem("Invalid", issue.path, issue.message)];
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let value = input;
  for (const segment of path) {
    if (typeof value !== "object" || value === null || !Object.hasOwn(value, segment)) return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

// Which of two copies of one object wins must not depend on how the caller listed files.
function orderByOrigin(objects: readonly SourceObject[]): SourceObject[] {
  const withOrigin = objects.filter((object) => object.origin !== undefined);
  const without = objects.filter((object) => object.origin === undefined);
  withOrigin.sort(
    (a, b) =>
      compareStrings(a.origin?.file ?? "", b.origin?.file ?? "") ||
      (a.origin?.index ?? 0) - (b.origin?.index ?? 0),
  );
  return [...withOrigin, ...without];
}

function rejectDuplicates(entries: readonly Entry[]): void {
  const seen = new Map<string, Entry>();
  for (const entry of entries) {
    const { kind, name } = entry.identity;
    if (name === "" || entry.problems.some((problem) => problem.reason === "UnsupportedKind")) continue;
    const key = `${kind} ${objectId(entry)}`;
    const first = seen.get(key);
    if (first === undefined) {
      seen.set(key, entry);
      continue;
    }
    const where =
      first.source.origin === undefined
        ? "earlier in the input"
        : `in ${describeOrigin(first.source.origin)}`;
    entry.problems = [
      fieldProblem(
        "Duplicate",
        ["metadata", "name"],
        `${kind} ${objectId(entry)} is already defined ${where}`,
      ),
    ];
    delete entry.parsed;
  }
}

function describeOrigin(origin: SourceOrigin): string {
  return `${origin.file} (document ${origin.index + 1})`;
}

function verifyCompiled(schema: z.ZodType, compiled: unknown): Problem[] {
  // Compile builds these from validated input; a failure here is a compile bug, reported instead of thrown.
  const result = schema.safeParse(compiled);
  if (result.success) return [];
  return result.error.issues.map((issue) => ({
    reason: "Invalid" as const,
    message: `internal: compiled form failed validation at ${formatFieldPath(issue.path)}: ${issue.message}`,
  }));
}

function compareAge(a: Entry, b: Entry): number {
  const created = (entry: Entry): number => {
    const timestamp = entry.parsed?.value.metadata.creationTimestamp;
    // An object without a timestamp has not been stored yet (a file, an admission request): it is the newest.
    return timestamp === undefined ? Number.POSITIVE_INFINITY : Date.parse(timestamp);
  };
  const ageOrder = created(a) - created(b);
  return (Number.isNaN(ageOrder) ? 0 : ageOrder) || compareStrings(objectId(a), objectId(b));
}

function compareResultOrder(a: Entry, b: Entry): number {
  const originA = a.source.origin;
  const originB = b.source.origin;
  if (originA !== undefined && originB !== undefined) {
    return compareStrings(originA.file, originB.file) || originA.index - originB.index;
  }
  if (originA !== undefined || originB !== undefined) return originA === undefined ? 1 : -1;
  return (
    compareStrings(a.identity.kind, b.identity.kind) ||
    compareStrings(a.identity.namespace, b.identity.namespace) ||
    compareStrings(a.identity.name, b.identity.name)
  );
}

function toObjectResult(entry: Entry): ObjectResult {
  const messages = [...new Set(entry.problems.map((problem) => problem.message))];
  const reason = selectReason(entry.problems.map((problem) => problem.reason));
  const { generation } = entry;
  return {
    ...entry.identity,
    ...(entry.source.origin === undefined ? {} : { origin: entry.source.origin }),
    ...(generation === undefined ? {} : { generation }),
    accepted: reason === "Accepted",
    reason,
    messages,
    routeIds: entry.routeIds,
  };
}

function objectId(entry: Entry): string {
  return `${entry.identity.namespace}/${entry.identity.name}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
