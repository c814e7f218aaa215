// Compiles a ScopePolicy: rejects implication cycles and computes, per scope, every scope that satisfies it.
import type { ScopePolicy } from "../resources/scope-policy.ts";
import { fieldProblem, type Problem } from "./reasons.ts";

/** The scopes of one accepted policy and, for each, the token scopes that satisfy it. */
export interface CompiledScopePolicy {
  /** `namespace/name`. */
  readonly id: string;
  /** Every scope the policy defines, sorted. */
  readonly scopes: readonly string[];
  /** Scope → itself first, then every scope that implies it transitively (sorted). */
  readonly satisfiedBy: ReadonlyMap<string, readonly string[]>;
}

/** The compiled policy, or why it is excluded (its routes then report UnknownScopePolicy). */
export type ScopePolicyOutcome =
  | { readonly accepted: true; readonly policy: CompiledScopePolicy }
  | { readonly accepted: false; readonly problems: readonly Problem[] };

/** Compiles one ScopePolicy whose single-object rules the schema already checked. */
export function compileScopePolicy(policy: ScopePolicy): ScopePolicyOutcome {
  const implies = new Map<string, readonly string[]>();
  for (const scope of policy.spec.scopes) implies.set(scope.name, [...new Set(scope.implies ?? [])]);

  const problems = findImplicationCycles(policy, implies);
  if (problems.length > 0) return { accepted: false, problems };

  // Walk the implication edges backwards: whoever reaches a scope that way satisfies it.
  const impliedBy = new Map<string, string[]>();
  for (const [scope, targets] of implies) {
    for (const target of targets) impliedBy.set(target, [...(impliedBy.get(target) ?? []), scope]);
  }
  const satisfiedBy = new Map<string, readonly string[]>();
  for (const scope of implies.keys()) {
    const found = new Set<string>();
    const pending = [...(impliedBy.get(scope) ?? [])];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      if (found.has(next)) continue;
      found.add(next);
      pending.push(...(impliedBy.get(next) ?? []));
    }
    satisfiedBy.set(scope, [scope, ...[...found].sort()]);
  }
  const id = `${policy.metadata.namespace}/${policy.metadata.name}`;
  return { accepted: true, policy: { id, scopes: [...implies.keys()].sort(), satisfiedBy } };
}

function findImplicationCycles(
  policy: ScopePolicy,
  implies: ReadonlyMap<string, readonly string[]>,
): Problem[] {
  const problems: Problem[] = [];
  const reported = new Set<string>();
  const done = new Set<string>();
  const indexOf = new Map(policy.spec.scopes.map((scope, index) => [scope.name, index]));

  const visit = (scope: string, stack: string[]): void => {
    const onStack = stack.indexOf(scope);
    if (onStack >= 0) {
      const cycle = stack.slice(onStack);
      const key = [...cycle].sort().join(" ");
      if (!reported.has(key)) {
        reported.add(key);
        const first = cycle[0] ?? scope;
        problems.push(
          fieldProblem(
            "Invalid",
            ["spec", "scopes", indexOf.get(first) ?? 0, "implies"],
            `implication cycle ${[...cycle, first].join(" → ")}`,
          ),
        );
      }
      return;
    }
    if (done.has(scope)) return;
    stack.push(scope);
    for (const target of implies.get(scope) ?? []) visit(target, stack);
    stack.pop();
    done.add(scope);
  };
  for (const scope of implies.keys()) visit(scope, []);
  return problems;
}
