// Compiles an ApiRoute into snapshot routes, and owns route claims (overlap detection) and route order.
import {
  defaultForwardClaims,
  defaultMintTtlSeconds,
  type ApiRoute,
  type ApiRouteRule,
  type BackendRef,
} from "../resources/api-route.ts";
import type { CompiledBackend, CompiledRoute, ScopeRequirement } from "../snapshot/snapshot.ts";
import type { AuthServerOutcome } from "./auth-server.ts";
import { fieldProblem, formatFieldPath, selectReason, type Problem } from "./reasons.ts";
import type { ScopePolicyOutcome } from "./scope-policy.ts";

/** What a route may refer to, by `namespace/name`. */
export interface RouteContext {
  readonly scopePolicies: ReadonlyMap<string, ScopePolicyOutcome>;
  readonly authServers: ReadonlyMap<string, AuthServerOutcome>;
}

/** One host/path/method claim of a rule match; two overlapping claims cannot both be served. */
export interface RouteClaim {
  /** `namespace/name` of the ApiRoute. */
  readonly owner: string;
  /** Field path of the match, e.g. `spec.rules[0].matches[1]`. */
  readonly field: string;
  /** Lower-case hostnames of the rule; empty means any host. */
  readonly hostnames: readonly string[];
  readonly pathType: "Exact" | "PathPrefix";
  readonly pathValue: string;
  /** Upper-case methods; empty means every method. */
  readonly methods: readonly string[];
}

/** An accepted route's snapshot entries and claims, or why it is excluded. */
export type ApiRouteOutcome =
  | {
      readonly accepted: true;
      readonly routes: readonly CompiledRoute[];
      readonly claims: readonly RouteClaim[];
    }
  | { readonly accepted: false; readonly problems: readonly Problem[] };

interface ResolvedPolicies {
  /** False when a reference is broken: a required scope may live in the missing policy. */
  readonly complete: boolean;
  readonly ids: readonly string[];
  readonly satisfiedBy: ReadonlyMap<string, readonly string[]>;
  readonly upstreamScopes: readonly string[];
}

/**
 * Compiles one ApiRoute whose single-object rules the schema already checked. All-or-nothing: a route with
 * any problem is excluded as a whole, so a half-applied route never serves.
 */
export function compileApiRoute(route: ApiRoute, context: RouteContext): ApiRouteOutcome {
  const { namespace, name } = route.metadata;
  const problems: Problem[] = [];
  const policies = resolveScopePolicies(route, context, problems);
  const hostnames = [...new Set(route.spec.hostnames.map((hostname) => hostname.toLowerCase()))].sort();

  const routes: CompiledRoute[] = [];
  const claims: RouteClaim[] = [];
  const ruleKeys = ruleIdKeys(route.spec.rules);
  route.spec.rules.forEach((rule, ruleIndex) => {
    const rulePath = ["spec", "rules", ruleIndex];
    const auth = compileAuthentication(route, rule, rulePath, context, problems);
    if (auth.mode === "exchange" && route.spec.scopePolicyRefs.length === 0) {
      // RFC 8693 without `scope` gets whatever the AS grants by default, usually all of the subject's scopes.
      problems.push(
        fieldProblem(
          "Invalid",
          [...rulePath, "authentication", "mode"],
          "exchange narrows the exchanged token to the scopes of spec.scopePolicyRefs; reference at least one ScopePolicy",
        ),
      );
    }
    const requiredScopes = {
      allOf: compileScopeList(
        rule.requiredScopes?.allOf,
        [...rulePath, "requiredScopes", "allOf"],
        policies,
        problems,
      ),
      anyOf: compileScopeList(
        rule.requiredScopes?.anyOf,
        [...rulePath, "requiredScopes", "anyOf"],
        policies,
        problems,
      ),
    };
    const backends = rule.backendRefs.map((ref) => compileBackend(ref, namespace));

    rule.matches.forEach((match, matchIndex) => {
      const path = { type: match.path.type, value: normalizePath(match.path.value, match.path.type) };
      const methods = [...new Set(match.methods ?? [])].sort();
      claims.push({
        owner: `${namespace}/${name}`,
        field: formatFieldPath([...rulePath, "matches", matchIndex]),
        hostnames,
        pathType: path.type,
        pathValue: path.value,
        methods,
      });
      const matchSuffix = rule.matches.length > 1 ? `.${matchIndex}` : "";
      for (const group of groupHostnames(hostnames)) {
        routes.push({
          id: `${namespace}/${name}#${ruleKeys[ruleIndex] ?? String(ruleIndex)}${matchSuffix}${group.suffix}`,
          source: { namespace, name, rule: ruleIndex },
          hostnames: group.hostnames,
          path,
          methods,
          // A public route has no token, so nothing can be passed upstream.
          auth: { ...auth, upstreamScopes: auth.mode === "none" ? [] : [...policies.upstreamScopes] },
          requiredScopes,
          backends,
          timeouts: { requestMs: rule.timeouts.requestMs },
          limits: { maxBodyBytes: rule.limits.maxBodyBytes },
        });
      }
    });
  });

  problems.push(...findSelfConflicts(claims));
  if (problems.length > 0) return { accepted: false, problems };
  return { accepted: true, routes, claims };
}

/** Claims of accepted routes, indexed by path so conflict checks stay linear in the number of routes. */
export class RouteClaimIndex {
  readonly #byPath = new Map<string, RouteClaim[]>();

  /** Records the claims of a route that was accepted. */
  add(claims: readonly RouteClaim[]): void {
    for (const claim of claims) {
      const key = claimPathKey(claim);
      const existing = this.#byPath.get(key);
      if (existing === undefined) this.#byPath.set(key, [claim]);
      else existing.push(claim);
    }
  }

  /**
   * Problems for every claim that overlaps a claim recorded earlier (an older route). The older route keeps
   * the claim, as in Gateway API, so adding a route can never take traffic away from a working one.
   */
  findConflicts(claims: readonly RouteClaim[]): Problem[] {
    const problems: Problem[] = [];
    for (const claim of claims) {
      const older = this.#byPath
        .get(claimPathKey(claim))
        ?.find((candidate) => claimsOverlap(claim, candidate));
      if (older !== undefined) {
        problems.push({
          reason: "Conflicted",
          message:
            `${claim.field}: ${describeOverlap(claim, older)} is already claimed by the older ApiRoute ` +
            `${older.owner} (${older.field})`,
        });
      }
    }
    return problems;
  }
}

/**
 * Orders routes most specific first, so the first route that matches a request is the right one: exact host,
 * then longer wildcard, then any host; then Exact path, then longer prefix; then routes naming methods.
 */
export function sortRoutesBySpecificity(routes: readonly CompiledRoute[]): CompiledRoute[] {
  return [...routes].sort(compareRoutes);
}

/**
 * Collapses repeated slashes, as the gateway does to every request path. A prefix also drops its trailing slash
 * (except for the root): `PathPrefix /api/` matches like `/api`. An `Exact` path keeps it, since the gateway
 * keeps a request's trailing slash: `Exact /admin/` matches `/admin/` only, and `Exact /admin` matches `/admin`
 * only.
 */
export function normalizePath(value: string, type: "Exact" | "PathPrefix" = "PathPrefix"): string {
  const collapsed = value.replace(/\/{2,}/g, "/");
  if (type === "Exact") return collapsed;
  return collapsed.length > 1 && collapsed.endsWith("/") ? collapsed.slice(0, -1) : collapsed;
}

function resolveScopePolicies(route: ApiRoute, context: RouteContext, problems: Problem[]): ResolvedPolicies {
  const { namespace } = route.metadata;
  const ids: string[] = [];
  const satisfiedBy = new Map<string, Set<string>>();
  const upstreamScopes = new Set<string>();
  let complete = true;
  route.spec.scopePolicyRefs.forEach((ref, index) => {
    const id = `${namespace}/${ref.name}`;
    if (ids.includes(id)) return;
    ids.push(id);
    const path = ["spec", "scopePolicyRefs", index];
    const outcome = context.scopePolicies.get(id);
    if (outcome === undefined) {
      complete = false;
      problems.push(fieldProblem("UnknownScopePolicy", path, `ScopePolicy ${id} not found`));
      return;
    }
    if (!outcome.accepted) {
      complete = false;
      const reason = selectReason(outcome.problems.map((problem) => problem.reason));
      problems.push(
        fieldProblem("UnknownScopePolicy", path, `ScopePolicy ${id} is not accepted (${reason})`),
      );
      return;
    }
    for (const scope of outcome.policy.scopes) upstreamScopes.add(scope);
    // A scope name defined by two referenced policies is one scope in the token: either definition satisfies it.
    for (const [scope, satisfying] of outcome.policy.satisfiedBy) {
      const merged = satisfiedBy.get(scope) ?? new Set<string>();
      for (const s of satisfying) merged.add(s);
      satisfiedBy.set(scope, merged);
    }
  });
  return {
    complete,
    ids,
    satisfiedBy: new Map(
      [...satisfiedBy].map(([scope, satisfying]) => [
        scope,
        [scope, ...[...satisfying].filter((s) => s !== scope).sort()],
      ]),
    ),
    upstreamScopes: [...upstreamScopes].sort(),
  };
}

function compileScopeList(
  scopes: readonly string[] | undefined,
  path: readonly PropertyKey[],
  policies: ResolvedPolicies,
  problems: Problem[],
): ScopeRequirement[] {
  const requirements = new Map<string, ScopeRequirement>();
  (scopes ?? []).forEach((scope, index) => {
    if (requirements.has(scope)) return;
    const satisfiedBy = policies.satisfiedBy.get(scope);
    if (satisfiedBy !== undefined) {
      requirements.set(scope, { scope, satisfiedBy: [...satisfiedBy] });
    } else if (policies.complete) {
      problems.push(
        fieldProblem("UnknownScope", [...path, index], describeUnknownScope(scope, policies.ids)),
      );
    }
  });
  return [...requirements.values()].sort((a, b) => compareStrings(a.scope, b.scope));
}

function describeUnknownScope(scope: string, policyIds: readonly string[]): string {
  if (policyIds.length === 0) {
    return `scope '${scope}' is not defined: the route references no ScopePolicy (spec.scopePolicyRefs)`;
  }
  const policies = policyIds.length === 1 ? "ScopePolicy" : "any of the ScopePolicies";
  return `scope '${scope}' is not defined in ${policies} ${policyIds.join(", ")}`;
}

function compileAuthentication(
  route: ApiRoute,
  rule: ApiRouteRule,
  rulePath: readonly PropertyKey[],
  context: RouteContext,
  problems: Problem[],
): Omit<CompiledRoute["auth"], "upstreamScopes"> {
  const { mode, audience, acceptedAudiences } = rule.authentication;
  const isMint = mode === "mint";
  // phantom mints too when its AuthServer answers with facts rather than a JWT: with mint's default claims.
  const mints = isMint || mode === "phantom";
  const auth = {
    mode,
    ...(audience === undefined ? {} : { audience }),
    ...(acceptedAudiences === undefined ? {} : { acceptedAudiences: [...acceptedAudiences] }),
    // The schema allows forwardClaims on mint rules only, so phantom always gets the defaults.
    forwardClaims: mints ? [...new Set(rule.authentication.forwardClaims ?? defaultForwardClaims)] : [],
    mintTtlSeconds: (isMint ? rule.authentication.mintTtlSeconds : undefined) ?? defaultMintTtlSeconds,
  };
  if (mode === "none") return auth;

  const ruleRef = rule.authentication.authServerRef;
  const ref = ruleRef ?? route.spec.authServerRef;
  const path =
    ruleRef === undefined ? ["spec", "authServerRef"] : [...rulePath, "authentication", "authServerRef"];
  // The schema guarantees a reference for every mode but none.
  if (ref === undefined) return auth;
  const id = `${route.metadata.namespace}/${ref.name}`;
  const outcome = context.authServers.get(id);
  if (outcome === undefined) {
    problems.push(fieldProblem("UnknownAuthServer", path, `AuthServer ${id} not found`));
  } else if (!outcome.accepted) {
    const reason = selectReason(outcome.problems.map((problem) => problem.reason));
    problems.push(fieldProblem("UnknownAuthServer", path, `AuthServer ${id} is not accepted (${reason})`));
  } else if (
    mode === "exchange" &&
    !outcome.authServer.discovery &&
    outcome.authServer.endpoints.token === undefined
  ) {
    problems.push(
      fieldProblem(
        "IncompatibleAuthServer",
        [...rulePath, "authentication", "mode"],
        `exchange needs a token endpoint, but AuthServer ${id} has discovery off and no spec.endpoints.token`,
      ),
    );
  } else if (
    mode === "phantom" &&
    outcome.authServer.introspectionResponse !== "jwt" &&
    audience === undefined
  ) {
    problems.push(
      fieldProblem(
        "IncompatibleAuthServer",
        [...rulePath, "authentication", "audience"],
        `AuthServer ${id} answers introspection with facts (responseType ${outcome.authServer.introspectionResponse}), ` +
          "so the gateway mints the JWT for phantom mode and needs its audience",
      ),
    );
  }
  return { ...auth, authServer: id };
}

function compileBackend(ref: BackendRef, routeNamespace: string): CompiledBackend {
  // The schema guarantees either an origin URL or a Service name with a port.
  const origin =
    ref.url === undefined
      ? `http://${ref.name ?? ""}.${ref.namespace ?? routeNamespace}.svc:${ref.port ?? 0}`
      : new URL(ref.url).origin;
  return { origin, weight: ref.weight };
}

/**
 * What names each rule in its routes' ids (`namespace/name#key`, the label of metrics and the audit trail): the
 * rule's `name` when the route gives it to that rule only, so that reordering rules keeps dashboards right; the
 * rule's index otherwise (no name, a name two rules share, or a name of digits, which would read as an index).
 */
function ruleIdKeys(rules: readonly { readonly name?: string | undefined }[]): string[] {
  const uses = new Map<string, number>();
  for (const rule of rules) if (rule.name !== undefined) uses.set(rule.name, (uses.get(rule.name) ?? 0) + 1);
  return rules.map((rule, index) =>
    rule.name !== undefined && uses.get(rule.name) === 1 && !/^\d+$/.test(rule.name)
      ? rule.name
      : String(index),
  );
}

// A rule whose hostnames differ in specificity becomes one entry per hostname: the order of entries is what
// picks the most specific match, and one entry can sit at only one place in that order.
function groupHostnames(hostnames: readonly string[]): { hostnames: string[]; suffix: string }[] {
  const classes = new Set(hostnames.map((hostname) => (hostname.startsWith("*.") ? hostname.length : 0)));
  if (classes.size <= 1) return [{ hostnames: [...hostnames], suffix: "" }];
  return hostnames.map((hostname) => ({ hostnames: [hostname], suffix: `@${hostname}` }));
}

function findSelfConflicts(claims: readonly RouteClaim[]): Problem[] {
  const problems: Problem[] = [];
  claims.forEach((claim, index) => {
    const earlier = claims.slice(0, index).find((candidate) => claimsOverlap(claim, candidate));
    if (earlier !== undefined) {
      problems.push({
        reason: "Invalid",
        message: `${claim.field}: ${describeOverlap(claim, earlier)} is already claimed by ${earlier.field} of this route`,
      });
    }
  });
  return problems;
}

function claimPathKey(claim: RouteClaim): string {
  return `${claim.pathType} ${claim.pathValue}`;
}

function claimsOverlap(a: RouteClaim, b: RouteClaim): boolean {
  return (
    a.pathType === b.pathType &&
    a.pathValue === b.pathValue &&
    sharedHostnames(a, b) !== undefined &&
    (a.methods.length === 0 ||
      b.methods.length === 0 ||
      a.methods.some((method) => b.methods.includes(method)))
  );
}

/** Hostnames both claims serve; `[]` when both serve any host; undefined when they share none. */
function sharedHostnames(a: RouteClaim, b: RouteClaim): string[] | undefined {
  if (a.hostnames.length === 0 && b.hostnames.length === 0) return [];
  const shared = a.hostnames.filter((hostname) => b.hostnames.includes(hostname));
  return shared.length > 0 ? shared : undefined;
}

function describeOverlap(a: RouteClaim, b: RouteClaim): string {
  const hosts = sharedHostnames(a, b) ?? [];
  const hostText = hosts.length === 0 ? "any host" : `host ${hosts.join(", ")}`;
  const methods =
    a.methods.length === 0
      ? b.methods
      : b.methods.length === 0
        ? a.methods
        : a.methods.filter((m) => b.methods.includes(m));
  const methodText = methods.length === 0 ? "every method" : methods.join(", ");
  return `${hostText}, ${a.pathType} ${a.pathValue}, ${methodText}`;
}

function compareRoutes(a: CompiledRoute, b: CompiledRoute): number {
  return (
    hostSpecificity(b) - hostSpecificity(a) ||
    pathSpecificity(b) - pathSpecificity(a) ||
    compareStrings(a.path.value, b.path.value) ||
    Number(b.methods.length > 0) - Number(a.methods.length > 0) ||
    compareStrings(a.id, b.id)
  );
}

// Hostnames of one entry share a specificity (see groupHostnames): exact beats every wildcard, a longer
// wildcard suffix beats a shorter one, and any host comes last.
function hostSpecificity(route: CompiledRoute): number {
  const first = route.hostnames[0];
  if (first === undefined) return 0;
  return first.startsWith("*.") ? first.length : 1_000;
}

function pathSpecificity(route: CompiledRoute): number {
  return (route.path.type === "Exact" ? 10_000 : 0) + route.path.value.length;
}

/** Code-unit order, independent of the locale the compiler runs in. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
