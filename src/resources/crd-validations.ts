// What the CRDs add to the schemas generated from zod: CEL rules (x-kubernetes-validations) that mirror the
// single-object `.superRefine`s of src/resources, so the API server itself refuses what compile would mark
// Invalid, with the same messages; plus the bounds and list types those rules and the status need.
//
// Cross-object rules (unknown references, conflicting routes, implication cycles) stay with compile and the
// admission webhook. Written for Kubernetes 1.33+, which judges new rules by the previous minor's CEL
// environment: two-variable comprehensions (1.32) and `format` (1.29) are the newest features used. CRD rules
// have no `cel.bind`, so `[x].all(v, …)` evaluates `x` once and names it; messages use `format` because
// concatenating `string(i)` makes the cost estimate unbounded.
//
// The server is stricter than compile only in corners: URLs are parsed the Go way (no surrounding spaces, no
// `http:host` without slashes) and backend URLs are limited to 2048 characters.
import { claimsMintCannotForward } from "../snapshot/snapshot.ts";
import type { PhantomgateKind } from "./common.ts";

/** One `x-kubernetes-validations` entry. */
export interface CelRule {
  /** Must be true for the object to be stored; `self` is the schema node the rule sits on. */
  readonly rule: string;
  /** Shown when the rule fails (and when `messageExpression` cannot be evaluated). */
  readonly message: string;
  /** A CEL string expression for a message naming the offending value or index. */
  readonly messageExpression?: string;
  /** The field the error is reported on, relative to `self` (e.g. `.audience`). */
  readonly fieldPath?: string;
  /** How the error is reported: `Required value: …`, `Forbidden: …` or `Invalid value: …`. */
  readonly reason?: "FieldValueInvalid" | "FieldValueRequired" | "FieldValueForbidden";
}

/** Additions to one schema node of a CRD. */
export interface CrdSchemaAddition {
  readonly rules?: readonly CelRule[];
  /**
   * Schema keywords merged into the node. `maxLength` here bounds strings zod leaves unbounded so that the
   * CEL cost estimate of a rule on them stays under the API server's limit (it assumes 3 MiB otherwise).
   */
  readonly keywords?: Readonly<Record<string, unknown>>;
}

/**
 * Additions per node, keyed by path from the root of `openAPIV3Schema`: `.` separates properties, `[]` steps
 * into list items (`spec.rules[].authentication`). A path that does not exist fails the generator.
 */
export type CrdSchemaAdditions = Readonly<Record<string, CrdSchemaAddition>>;

/** Upper bound of a backend URL in the CRD only (compile has none); far above any real origin. */
export const maxBackendUrlLength = 2048;

const celString = (value: string): string => `'${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
const celStringList = (values: Iterable<string>): string => `[${[...values].map(celString).join(", ")}]`;

const modesWithAudience = celStringList(["exchange", "mint", "jwt"]);
const httpSchemes = celStringList(["http", "https"]);

/** `isURL` and `url()` parse like Go's url.ParseRequestURI, as the `uri` format check next to them does. */
const httpUrlRule: CelRule = {
  rule: `!isURL(self) || url(self).getScheme() in ${httpSchemes}`,
  message: "must be an http(s) URL",
};

// JavaScript's \s and control characters (the path check in api-route.ts) as one RE2 class: RE2's \s is ASCII
// only; JavaScript's is ASCII whitespace, the Unicode separators (\p{Z}) and U+FEFF.
const whitespaceOrControl = "[\\x00-\\x20\\x7f\\p{Z}\\x{feff}]";

/** Conditions are keyed by type, so server-side apply merges one condition at a time. */
const statusAdditions: CrdSchemaAdditions = {
  "status.conditions": {
    keywords: { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] },
  },
};

const apiRouteAdditions: CrdSchemaAdditions = {
  spec: {
    rules: [
      {
        rule:
          "has(self.authServerRef) || " +
          "self.rules.all(r, r.authentication.mode == 'none' || has(r.authentication.authServerRef))",
        message:
          "rules[].authentication.authServerRef: required for every mode but none (or set spec.authServerRef)",
        messageExpression:
          "self.rules.transformList(i, r, " +
          "r.authentication.mode != 'none' && !has(r.authentication.authServerRef), " +
          "'rules[%d].authentication.authServerRef: required for mode %s (or set spec.authServerRef)'" +
          ".format([i, r.authentication.mode]))[0]",
      },
    ],
  },
  "spec.hostnames[]": {
    rules: [
      { rule: "!self.matches('[^.]{64}')", message: "each DNS label must be at most 63 characters" },
      { rule: "!self.matches('^[0-9.]+$')", message: "must be a DNS name, not an IP address" },
    ],
  },
  "spec.rules[]": {
    rules: [
      {
        rule:
          "self.authentication.mode != 'none' || !has(self.requiredScopes) || " +
          "((!has(self.requiredScopes.allOf) || size(self.requiredScopes.allOf) == 0) && " +
          "(!has(self.requiredScopes.anyOf) || size(self.requiredScopes.anyOf) == 0))",
        message: "a public route (mode none) cannot require scopes",
        fieldPath: ".requiredScopes",
        reason: "FieldValueForbidden",
      },
    ],
  },
  "spec.rules[].matches[].path.value": {
    rules: [
      {
        rule: "!self.contains('%')",
        message: "must not contain percent-encodings ('%'); write the decoded path",
      },
      { rule: "!self.contains('\\\\')", message: "must not contain '\\'" },
      {
        rule: "!self.contains(';')",
        message: "must not contain ';': requests with path parameters are refused, so it could never match",
      },
      { rule: "!self.matches('(^|/)[.][.]?(/|$)')", message: "must not contain '.' or '..' segments" },
      {
        rule: "!self.contains('?') && !self.contains('#')",
        message: "must not contain a query ('?') or fragment ('#')",
      },
      {
        rule: "!self.contains('*')",
        message: "must not contain '*': paths are literal, use type PathPrefix to match everything below",
      },
      {
        rule: `!self.matches(r'${whitespaceOrControl}')`,
        message: "must not contain whitespace or control characters",
      },
    ],
  },
  "spec.rules[].authentication": {
    rules: [
      {
        rule: `!(self.mode in ${modesWithAudience}) || has(self.audience)`,
        message: "required for modes exchange, mint and jwt",
        messageExpression: "'required for mode ' + self.mode",
        fieldPath: ".audience",
        reason: "FieldValueRequired",
      },
      {
        // phantom may name the audience of the JWT the gateway mints when its AuthServer answers with facts.
        rule: `self.mode in ${modesWithAudience} || self.mode == 'phantom' || !has(self.audience)`,
        message: "only used by modes exchange, mint, jwt and phantom",
        messageExpression: "'not used by mode ' + self.mode + ' (only exchange, mint, jwt and phantom)'",
        fieldPath: ".audience",
        reason: "FieldValueForbidden",
      },
      {
        rule: `!has(self.acceptedAudiences) || self.mode in ${celStringList(["phantom", "exchange", "mint"])}`,
        message: "only used by modes phantom, exchange and mint",
        messageExpression:
          "self.mode == 'jwt' ? 'not used by mode jwt, which accepts the audience in `audience`' : " +
          "'not used by mode ' + self.mode + ' (only phantom, exchange and mint)'",
        fieldPath: ".acceptedAudiences",
        reason: "FieldValueForbidden",
      },
      ...(["forwardClaims", "mintTtlSeconds"] as const).map((field): CelRule => ({
        rule: `self.mode == 'mint' || !has(self.${field})`,
        message: "only used by mode mint",
        messageExpression: "'only used by mode mint, not ' + self.mode",
        fieldPath: `.${field}`,
        reason: "FieldValueForbidden",
      })),
      {
        rule: "self.mode != 'none' || !has(self.authServerRef)",
        message: "not used by mode none",
        fieldPath: ".authServerRef",
        reason: "FieldValueForbidden",
      },
    ],
  },
  // Duplicates are found by the API server's set check ("Duplicate value"), without CEL cost.
  "spec.rules[].authentication.acceptedAudiences": {
    keywords: { "x-kubernetes-list-type": "set" },
  },
  "spec.rules[].authentication.forwardClaims[]": {
    rules: [
      {
        rule: `!(self in ${celStringList(claimsMintCannotForward)})`,
        message: "cannot be forwarded: the gateway sets it when minting, or it would undo the narrowing",
        messageExpression: `"'" + self + "' cannot be forwarded: the gateway sets it when minting, or it would undo the narrowing"`,
      },
    ],
  },
  "spec.rules[].backendRefs[]": {
    rules: [
      { rule: "has(self.url) != has(self.name)", message: "set exactly one of url or name" },
      {
        rule: "!has(self.name) || has(self.port)",
        message: "required with name",
        fieldPath: ".port",
        reason: "FieldValueRequired",
      },
      ...(["namespace", "port"] as const).map((field): CelRule => ({
        rule: `!has(self.url) || !has(self.${field})`,
        message: "only used with name, not with url",
        fieldPath: `.${field}`,
        reason: "FieldValueForbidden",
      })),
    ],
  },
  "spec.rules[].backendRefs[].url": {
    keywords: { maxLength: maxBackendUrlLength },
    rules: [
      httpUrlRule,
      {
        // url() has no getters for userinfo and fragment: those are matched in the text.
        rule:
          "!isURL(self) || (url(self).getEscapedPath() in ['', '/'] && " +
          "size(url(self).getQuery()) == 0 && !self.matches('^[^/]*//[^/?#]*@') && !self.matches('#.'))",
        message: "must be an origin only (scheme, host, optional port): no path, query, fragment or userinfo",
      },
    ],
  },
  ...statusAdditions,
};

const scopeNameMap = "self.scopes.transformMapEntry(i, s, {s.name: true})";

const scopePolicyAdditions: CrdSchemaAdditions = {
  // Duplicate names are found by the API server's list-map check (no CEL cost: a pairwise comparison of 256
  // names of 128 characters exceeds the per-call limit). It also lets server-side apply merge scopes by name.
  "spec.scopes": {
    keywords: { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"] },
  },
  spec: {
    rules: [
      {
        // A map makes each implied scope one lookup; searching the list of names would exceed the per-call
        // cost limit on large policies. With duplicate names the map cannot be built: next to the Duplicate
        // value error the server then also reports that this rule failed with "insert failed".
        rule:
          `[${scopeNameMap}].all(names, ` +
          "self.scopes.all(s, !has(s.implies) || s.implies.all(n, n in names)))",
        message: "implied scopes must be defined in this policy",
        messageExpression:
          `[${scopeNameMap}].map(names, self.scopes.transformList(i, s, ` +
          "has(s.implies) && !s.implies.all(n, n in names), s.implies.transformList(j, n, !(n in names), " +
          `"scopes[%d].implies[%d]: implied scope '%s' is not defined in this policy".format([i, j, n]))[0]` +
          "))[0][0]",
      },
    ],
  },
  ...statusAdditions,
};

const authServerAdditions: CrdSchemaAdditions = {
  spec: {
    rules: [
      ...(["introspection", "jwks"] as const).map((endpoint): CelRule => ({
        rule:
          "!has(self.discovery) || self.discovery || " +
          `(has(self.endpoints) && has(self.endpoints.${endpoint}))`,
        message: "required when discovery is false",
        fieldPath: `.endpoints.${endpoint}`,
        reason: "FieldValueRequired",
      })),
      {
        rule:
          "(has(self.discovery) && !self.discovery) || " +
          `(isURL(self.issuer) && url(self.issuer).getScheme() in ${httpSchemes})`,
        message: "must be an http(s) URL when discovery is true (metadata is fetched below it)",
        fieldPath: ".issuer",
      },
    ],
  },
  "spec.endpoints.introspection": { rules: [httpUrlRule] },
  "spec.endpoints.token": { rules: [httpUrlRule] },
  "spec.endpoints.jwks": { rules: [httpUrlRule] },
  "spec.clientAuthentication.clientSecret": {
    rules: [
      { rule: "has(self.value) != has(self.secretRef)", message: "set exactly one of value or secretRef" },
    ],
  },
  ...statusAdditions,
};

/** The additions of each kind's CRD. */
export const crdSchemaAdditions: Readonly<Record<PhantomgateKind, CrdSchemaAdditions>> = {
  ApiRoute: apiRouteAdditions,
  ScopePolicy: scopePolicyAdditions,
  AuthServer: authServerAdditions,
};
