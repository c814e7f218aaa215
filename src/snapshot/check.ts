// Checking a snapshot that arrives from outside the process (the operator's stream, the last-known-good file).
//
// `snapshotSchema` (zod) stays the one definition of the snapshot; this module derives a JSON Schema from it and
// compiles that with ajv. The reason is cost at the size the operator ships: zod builds a full copy of every
// object it parses, so a 10,000-route snapshot took ~65 ms and ~25 MiB of garbage to check, while ajv's compiled
// validator only reads the parsed JSON and hands the same object back. The snapshot schema has no defaults or
// transforms, so "valid" means the input already is the value zod would have returned.
// test/unit/snapshot-check.test.ts keeps the two validators in agreement on valid and broken snapshots.
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { z } from "zod";
import { snapshotSchema, type Snapshot } from "./snapshot.ts";

export interface SnapshotIssue {
  /** Dotted path into the snapshot, e.g. `routes.3.backends.0.origin`; empty for the root. */
  readonly path: string;
  readonly message: string;
}

export type SnapshotCheck =
  | { readonly ok: true; readonly snapshot: Snapshot }
  | { readonly ok: false; readonly issues: readonly SnapshotIssue[] };

let validator: ValidateFunction | undefined;

/** The compiled validator, built on first use (a few milliseconds) and kept. */
function compiled(): ValidateFunction {
  if (validator === undefined) {
    const schema = z.toJSONSchema(snapshotSchema, { target: "draft-2020-12", unrepresentable: "throw" });
    // allErrors off: the first problem is reported and validation stops there, like a parse failure should.
    const ajv = new Ajv2020({ strict: true, allErrors: false, validateFormats: false });
    validator = ajv.compile(schema);
  }
  return validator;
}

function pointerToPath(pointer: string): string[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((segment) => segment.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function toIssue(error: ErrorObject): SnapshotIssue {
  const path = pointerToPath(error.instancePath);
  const params = error.params as Record<string, unknown>;
  let message = error.message ?? error.keyword;
  if (error.keyword === "additionalProperties" && typeof params["additionalProperty"] === "string") {
    message = `unrecognized key "${params["additionalProperty"]}"`;
  } else if (error.keyword === "required" && typeof params["missingProperty"] === "string") {
    path.push(params["missingProperty"]);
    message = "required";
  } else if (error.keyword === "enum" && Array.isArray(params["allowedValues"])) {
    message = `must be one of ${(params["allowedValues"] as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
  }
  return { path: path.join("."), message };
}

/**
 * Validates `value` as a snapshot without copying it: its shape, then what a shape cannot say and compile always
 * ensures (a snapshot from a misbehaving operator, or an edited last-known-good file, could break it): route and
 * auth server ids are unique, and every route names an auth server the snapshot holds.
 */
export function checkSnapshot(value: unknown): SnapshotCheck {
  const validate = compiled();
  if (!validate(value)) return { ok: false, issues: (validate.errors ?? []).map(toIssue) };
  const snapshot = value as Snapshot;
  const issues = referenceIssues(snapshot);
  return issues.length === 0 ? { ok: true, snapshot } : { ok: false, issues };
}

/** Duplicate ids and routes naming an auth server the snapshot lacks (the first three). */
export function referenceIssues(snapshot: Snapshot): SnapshotIssue[] {
  const issues: SnapshotIssue[] = [];
  const authServers = new Set<string>();
  for (const [index, authServer] of snapshot.authServers.entries()) {
    if (authServers.has(authServer.id))
      issues.push({ path: `authServers.${index}.id`, message: `duplicate auth server id ${authServer.id}` });
    authServers.add(authServer.id);
  }
  const routes = new Set<string>();
  for (const [index, route] of snapshot.routes.entries()) {
    if (routes.has(route.id))
      issues.push({ path: `routes.${index}.id`, message: `duplicate route id ${route.id}` });
    routes.add(route.id);
    const named = route.auth.authServer;
    if (route.auth.mode !== "none" && (named === undefined || !authServers.has(named)))
      issues.push({
        path: `routes.${index}.auth.authServer`,
        message: named === undefined ? "required for this mode" : `no auth server ${named} in the snapshot`,
      });
    if (issues.length >= 3) break;
  }
  return issues;
}

/** `path: message` of the first few issues, for logs, NACK reasons and `/readyz`. */
export function describeSnapshotIssues(issues: readonly SnapshotIssue[], max = 3): string {
  if (issues.length === 0) return "(root): invalid";
  return issues
    .slice(0, max)
    .map((issue) => `${issue.path === "" ? "(root)" : issue.path}: ${issue.message}`)
    .join("; ");
}
