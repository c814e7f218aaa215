// Coarse authorization inside an API: scope checks with the implications of the same ScopePolicy objects the
// gateway compiles (`write_invoice` ⊃ `read_invoice`), and the fewest scopes that meet a need (for token exchange).
// Policies are validated and compiled by the gateway's own schema and compiler, so both sides agree on what a
// scope means; a scope name no policy defines is a configuration error, never a silent "no".
import { compileScopePolicy } from "../compile/scope-policy.ts";
import { apiVersion } from "../resources/common.ts";
import { requiredScopesSpecSchema } from "../resources/api-route.ts";
import { scopePolicySchema } from "../resources/scope-policy.ts";
import { z } from "zod";
import { SdkError } from "./errors.ts";
import type { Identity } from "./identity.ts";

/** One scope of a ScopePolicy. */
export interface ScopeDefinitionLike {
  readonly name: string;
  readonly description?: string;
  /** Scopes of the same policy that a token with this scope also satisfies. */
  readonly implies?: readonly string[];
}

/** The `spec` of a ScopePolicy. */
export interface ScopePolicySpecLike {
  readonly domain: string;
  readonly scopes: readonly ScopeDefinitionLike[];
}

/**
 * A ScopePolicy as the gateway reads it — the whole object from your manifests (parsed YAML) or just its `spec`.
 */
export type ScopePolicyLike =
  | ScopePolicySpecLike
  | {
      readonly apiVersion?: string;
      readonly kind?: string;
      readonly metadata?: { readonly name?: string; readonly namespace?: string };
      readonly spec: ScopePolicySpecLike;
    };

/**
 * Scopes needed: one scope, a list (all of them), or `allOf`/`anyOf` as in an ApiRoute's `requiredScopes`.
 */
export type ScopeRequirement =
  string | readonly string[] | { readonly allOf?: readonly string[]; readonly anyOf?: readonly string[] };

/** Whose scopes: an {@link Identity} or a plain list of granted scopes. */
export type GrantedScopes = Pick<Identity, "scopes"> | readonly string[];

/** Scope logic over one or more ScopePolicies. Create once; all methods are pure. */
export interface ScopeChecker {
  /** Every scope the policies define, sorted. */
  readonly scopes: readonly string[];
  /** The scope itself, then every scope that implies it. Throws `PG_SDK_CONFIG_INVALID` for an unknown scope. */
  satisfiedBy(scope: string): readonly string[];
  /** Whether `granted` satisfies `scope`, implications included. */
  has(granted: GrantedScopes, scope: string): boolean;
  /** The first unmet scope of `requirement` (for `anyOf`, all its names joined by spaces), or undefined. */
  missing(granted: GrantedScopes, requirement: ScopeRequirement): string | undefined;
  /** Throws `PG_SDK_INSUFFICIENT_SCOPE` (403, naming the scope) unless `granted` meets `requirement`. */
  require(granted: GrantedScopes, requirement: ScopeRequirement): void;
  /**
   * The fewest of the `granted` scopes that together satisfy every scope in `needed`, preferring the narrowest
   * (the needed scope itself over one that implies it). Throws `PG_SDK_INSUFFICIENT_SCOPE` when `granted` cannot
   * satisfy them. Token exchange asks for exactly these, so the callee never gets more than it needs.
   */
  fewest(granted: GrantedScopes, needed: readonly string[]): readonly string[];
  /** Throws `PG_SDK_CONFIG_INVALID` when a requirement names a scope no policy defines (check at start-up). */
  validate(requirement: ScopeRequirement): void;
}

function grantedList(granted: GrantedScopes): readonly string[] {
  return "scopes" in granted ? granted.scopes : granted;
}

/**
 * The requirement as two lists. A requirement that asks for nothing (an empty list, `{}`, `{ anyOf: [] }`), has
 * keys other than `allOf` and `anyOf` (`anyof`: a typo from YAML) or lists that are not lists of scope names is
 * a configuration mistake that would let every token through: refused with `PG_SDK_CONFIG_INVALID`.
 */
function normalise(requirement: ScopeRequirement): { allOf: readonly string[]; anyOf: readonly string[] } {
  const invalid = (why: string) =>
    new SdkError("PG_SDK_CONFIG_INVALID", `scope requirement ${describeRequirement(requirement)}: ${why}`);
  // A scope or a list is `allOf`; the object form is an ApiRoute rule's `requiredScopes`, checked by its schema.
  const given =
    typeof requirement === "string" || Array.isArray(requirement)
      ? { allOf: [requirement].flat() }
      : requirement;
  const parsed = requiredScopesSpecSchema.safeParse(given);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue?.code === "unrecognized_keys")
      throw invalid(`unknown key ${issue.keys.map((key) => `'${key}'`).join(", ")} (allOf, anyOf)`);
    const key = issue?.path[0];
    throw invalid(
      key === "allOf" || key === "anyOf"
        ? `${key} must be a list of scope names`
        : "must be a scope, a list of scopes, or { allOf, anyOf }",
    );
  }
  const { allOf = [], anyOf = [] } = parsed.data;
  if (allOf.length === 0 && anyOf.length === 0)
    throw invalid("asks for no scope (it would let every token through)");
  return { allOf, anyOf };
}

function describeRequirement(requirement: unknown): string {
  try {
    // JSON.stringify gives undefined for undefined or a function, whatever its declared type says.
    const text = JSON.stringify(requirement) as string | undefined;
    return text ?? String(requirement);
  } catch {
    return String(requirement);
  }
}

function compilePolicy(policy: ScopePolicyLike, index: number): ReadonlyMap<string, readonly string[]> {
  const spec = "spec" in policy ? policy.spec : policy;
  const metadata = "spec" in policy ? policy.metadata : undefined;
  const resource = {
    apiVersion,
    kind: "ScopePolicy",
    metadata: { name: metadata?.name ?? "scope-policy", namespace: metadata?.namespace ?? "default" },
    spec,
  };
  const label = `scope policy ${index} (${typeof spec.domain === "string" ? spec.domain : "?"})`;
  const parsed = scopePolicySchema.safeParse(resource);
  if (!parsed.success) {
    throw new SdkError("PG_SDK_CONFIG_INVALID", `${label}: ${z.prettifyError(parsed.error)}`);
  }
  const outcome = compileScopePolicy(parsed.data);
  if (!outcome.accepted) {
    throw new SdkError(
      "PG_SDK_CONFIG_INVALID",
      `${label}: ${outcome.problems.map((p) => p.message).join("; ")}`,
    );
  }
  return outcome.policy.satisfiedBy;
}

/**
 * Creates a {@link ScopeChecker} from ScopePolicies (the same objects you give the gateway). Throws
 * `PG_SDK_CONFIG_INVALID` for an invalid policy, an implication cycle, or a scope defined by two policies.
 *
 * @example
 * ```ts
 * import { createScopeChecker } from "phantomgate/sdk";
 *
 * const scopes = createScopeChecker({
 *   domain: "billing",
 *   scopes: [{ name: "read_invoice" }, { name: "write_invoice", implies: ["read_invoice"] }],
 * });
 * scopes.has(["write_invoice"], "read_invoice");                 // true
 * scopes.require(identity, "write_invoice");                      // throws 403 PG_SDK_INSUFFICIENT_SCOPE unless granted
 * scopes.fewest(["read_invoice", "write_invoice"], ["read_invoice"]); // ["read_invoice"]
 * ```
 */
export function createScopeChecker(policies: ScopePolicyLike | readonly ScopePolicyLike[]): ScopeChecker {
  const list: readonly ScopePolicyLike[] = Array.isArray(policies)
    ? (policies as readonly ScopePolicyLike[])
    : [policies as ScopePolicyLike];
  if (list.length === 0)
    throw new SdkError("PG_SDK_CONFIG_INVALID", "createScopeChecker needs at least one policy");
  const satisfiedBy = new Map<string, readonly string[]>();
  list.forEach((policy, index) => {
    for (const [scope, satisfiers] of compilePolicy(policy, index)) {
      // Implications never cross policies, so one scope in two policies would have two meanings.
      if (satisfiedBy.has(scope)) {
        throw new SdkError("PG_SDK_CONFIG_INVALID", `scope '${scope}' is defined by more than one policy`);
      }
      satisfiedBy.set(scope, satisfiers);
    }
  });
  // How many scopes each scope satisfies: the smaller, the narrower.
  const breadth = new Map<string, number>();
  for (const satisfiers of satisfiedBy.values()) {
    for (const scope of satisfiers) breadth.set(scope, (breadth.get(scope) ?? 0) + 1);
  }

  function satisfiersOf(scope: string): readonly string[] {
    const found = satisfiedBy.get(scope);
    if (found === undefined) {
      throw new SdkError("PG_SDK_CONFIG_INVALID", `scope '${scope}' is not defined by any scope policy`);
    }
    return found;
  }

  function meets(held: ReadonlySet<string>, scope: string): boolean {
    return satisfiersOf(scope).some((satisfier) => held.has(satisfier));
  }

  function validate(requirement: ScopeRequirement): void {
    const { allOf, anyOf } = normalise(requirement);
    for (const scope of [...allOf, ...anyOf]) satisfiersOf(scope);
  }

  /** The first unmet `allOf` scope, or the `anyOf` list none of which is met. */
  function unmetOf(
    granted: GrantedScopes,
    requirement: ScopeRequirement,
  ): { scope: string; anyOf?: readonly string[] } | undefined {
    const { allOf, anyOf } = normalise(requirement);
    validate(requirement);
    const held = new Set(grantedList(granted));
    const unmet = allOf.find((scope) => !meets(held, scope));
    if (unmet !== undefined) return { scope: unmet };
    if (anyOf.length > 0 && !anyOf.some((scope) => meets(held, scope)))
      return { scope: anyOf[0] ?? "", anyOf };
    return undefined;
  }

  function missing(granted: GrantedScopes, requirement: ScopeRequirement): string | undefined {
    const unmet = unmetOf(granted, requirement);
    return unmet === undefined ? undefined : (unmet.anyOf?.join(" ") ?? unmet.scope);
  }

  function fewest(granted: GrantedScopes, needed: readonly string[]): readonly string[] {
    const order = [...new Set(grantedList(granted))];
    const held = new Set(order);
    const needs = [...new Set(needed)];
    for (const need of needs) satisfiersOf(need);
    const chosen = new Set(needs.filter((need) => held.has(need)));
    const unmet = (): string[] => needs.filter((need) => !meets(chosen, need));
    // Greedy cover for what the literal scopes leave open: the held scope meeting most open needs, narrowest first.
    for (let open = unmet(); open.length > 0; open = unmet()) {
      let best: { scope: string; covers: number } | undefined;
      for (const scope of order) {
        if (chosen.has(scope)) continue;
        const covers = open.filter((need) => satisfiersOf(need).includes(scope)).length;
        if (covers === 0) continue;
        const better =
          best === undefined ||
          covers > best.covers ||
          (covers === best.covers && (breadth.get(scope) ?? 0) < (breadth.get(best.scope) ?? 0));
        if (better) best = { scope, covers };
      }
      if (best === undefined) {
        const scope = open[0] ?? "";
        throw new SdkError("PG_SDK_INSUFFICIENT_SCOPE", `granted scopes cannot satisfy ${scope}`, {
          extra: { scope },
        });
      }
      chosen.add(best.scope);
    }
    // Drop scopes another chosen scope already covers (read_invoice next to write_invoice), narrowest first.
    const byBreadth = [...chosen].sort((a, b) => (breadth.get(a) ?? 0) - (breadth.get(b) ?? 0));
    for (const scope of byBreadth) {
      chosen.delete(scope);
      if (unmet().length > 0) chosen.add(scope);
    }
    return Object.freeze(order.filter((scope) => chosen.has(scope)));
  }

  return {
    scopes: Object.freeze([...satisfiedBy.keys()].sort()),
    satisfiedBy: satisfiersOf,
    has: (granted, scope) => meets(new Set(grantedList(granted)), scope),
    missing,
    require(granted, requirement) {
      const unmet = unmetOf(granted, requirement);
      if (unmet === undefined) return;
      if (unmet.anyOf === undefined) {
        throw new SdkError("PG_SDK_INSUFFICIENT_SCOPE", `missing scope ${unmet.scope}`, {
          extra: { scope: unmet.scope },
        });
      }
      // RFC 6750 §3: a challenge's `scope` lists scopes needed together; for alternatives it names one that
      // would do, and the body lists them all.
      throw new SdkError("PG_SDK_INSUFFICIENT_SCOPE", `missing one of the scopes ${unmet.anyOf.join(" ")}`, {
        extra: { scope: unmet.scope, anyOf: unmet.anyOf.join(" ") },
      });
    },
    fewest,
    validate,
  };
}
