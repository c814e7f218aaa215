// The closed set of reasons compile gives per object (the reason of the Accepted status condition), and the
// shape of one problem message.
import { z } from "zod";

/**
 * Why an object was accepted or rejected. Closed: status writers, the admission webhook and `check` switch
 * on it, and the docs list every value.
 */
export const compileReasonSchema = z.enum([
  "Accepted",
  "Invalid",
  "Conflicted",
  "Duplicate",
  "UnsupportedKind",
  "UnknownScopePolicy",
  "UnknownScope",
  "UnknownAuthServer",
  "IncompatibleAuthServer",
  "SecretNotFound",
]);
export type CompileReason = z.infer<typeof compileReasonSchema>;

/** One sentence per reason, for docs and `--help` output. */
export const compileReasonDescriptions: Readonly<Record<CompileReason, string>> = {
  Accepted: "The object is valid and part of the snapshot.",
  Invalid: "The object breaks a schema or single-object rule (field path in the message).",
  Conflicted:
    "An older ApiRoute already claims the same hostname, path and method; the older one keeps serving.",
  Duplicate: "Another object of the same kind, namespace and name came earlier in the input.",
  UnsupportedKind: "The apiVersion/kind is not one compile reads.",
  UnknownScopePolicy: "A referenced ScopePolicy does not exist in the namespace or was itself rejected.",
  UnknownScope: "A required scope is not defined by any ScopePolicy the route references.",
  UnknownAuthServer: "A referenced AuthServer does not exist in the namespace or was itself rejected.",
  IncompatibleAuthServer:
    "The referenced AuthServer lacks what the rule's mode needs (e.g. a token endpoint).",
  SecretNotFound: "The Secret or key holding the AuthServer's client secret does not exist or is empty.",
};

// Which reason an object carries when several problems apply: the one a user should fix first.
const precedence: readonly CompileReason[] = [
  "UnsupportedKind",
  "Duplicate",
  "Invalid",
  "SecretNotFound",
  "UnknownScopePolicy",
  "UnknownAuthServer",
  "IncompatibleAuthServer",
  "UnknownScope",
  "Conflicted",
];

/** The reason to report for a set of problems: the first by precedence, or Accepted when there are none. */
export function selectReason(reasons: Iterable<CompileReason>): CompileReason {
  const present = new Set(reasons);
  return precedence.find((reason) => present.has(reason)) ?? "Accepted";
}

/** One problem with an object: why it is rejected, and a message that starts with the offending field path. */
export interface Problem {
  readonly reason: Exclude<CompileReason, "Accepted">;
  readonly message: string;
}

/** Formats a field path the way kubectl prints one: `spec.rules[0].matches[1].path`. */
export function formatFieldPath(path: readonly PropertyKey[]): string {
  let formatted = "";
  for (const segment of path) {
    if (typeof segment === "number") formatted += `[${segment}]`;
    else formatted += formatted === "" ? String(segment) : `.${String(segment)}`;
  }
  return formatted;
}

/** Builds a problem whose message names its field path. */
export function fieldProblem(
  reason: Problem["reason"],
  path: readonly PropertyKey[],
  message: string,
): Problem {
  const field = formatFieldPath(path);
  return { reason, message: field === "" ? message : `${field}: ${message}` };
}
