// The ApiRoute custom resource: hostnames, path/method matches, token mode, required scopes and backends.
import { z } from "zod";
import { authModeSchema, claimsMintCannotForward } from "../snapshot/snapshot.ts";
import { defineResourceSchema, dnsLabelSchema, localObjectReferenceSchema } from "./common.ts";
import { scopeNameSchema } from "./scope-policy.ts";

/** Claims copied into a minted JWT when a mint rule does not list its own. */
export const defaultForwardClaims: readonly string[] = ["sub", "client_id", "scope"];
/** Lifetime of a minted JWT when a mint rule does not set one. */
export const defaultMintTtlSeconds = 60;
/** Body limit of a rule that does not set one: 10 MiB. */
export const defaultMaxBodyBytes = 10 * 1024 * 1024;

/** HTTP methods a match may name. */
export const httpMethodSchema = z.enum([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
  "TRACE",
  "CONNECT",
]);
export type HttpMethod = z.infer<typeof httpMethodSchema>;

// Upper case is allowed here and folded by compile; JSON Schema drops regex flags, hence the explicit classes.
const hostnamePattern =
  /^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$/;

const hostnameSchema = z
  .string()
  .min(1)
  .max(253)
  .regex(hostnamePattern, "must be a DNS name, optionally prefixed with '*.' (no port, no trailing dot)")
  .superRefine((hostname, ctx) => {
    if (hostname.split(".").some((label) => label.length > 63)) {
      ctx.addIssue({ code: "custom", message: "each DNS label must be at most 63 characters" });
    }
    if (/^[0-9.]+$/.test(hostname)) {
      ctx.addIssue({ code: "custom", message: "must be a DNS name, not an IP address" });
    }
  })
  .describe("Exact host, or '*.'-wildcard matching one or more leading labels.");

// Configured paths must already be in the form the firewall normalises requests to; anything it would reject
// or rewrite (dot segments, encodings, backslashes) could never match, or would match something unexpected.
const pathValueSchema = z
  .string()
  .min(1)
  .max(1024)
  .startsWith("/", "must start with '/'")
  .superRefine((value, ctx) => {
    const problems: string[] = [];
    if (value.includes("%"))
      problems.push("must not contain percent-encodings ('%'); write the decoded path");
    if (value.includes("\\")) problems.push("must not contain '\\'");
    if (value.includes(";")) {
      problems.push(
        "must not contain ';': requests with path parameters are refused, so it could never match",
      );
    }
    if (value.split("/").some((segment) => segment === "." || segment === "..")) {
      problems.push("must not contain '.' or '..' segments");
    }
    if (/[?#]/.test(value)) problems.push("must not contain a query ('?') or fragment ('#')");
    if (value.includes("*")) {
      problems.push("must not contain '*': paths are literal, use type PathPrefix to match everything below");
    }
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is rejected
    if (/[\s\x00-\x1f\x7f]/.test(value)) problems.push("must not contain whitespace or control characters");
    for (const message of problems) ctx.addIssue({ code: "custom", message });
  });

const matchSchema = z
  .object({
    path: z
      .object({
        type: z
          .enum(["Exact", "PathPrefix"])
          .default("PathPrefix")
          .describe("PathPrefix matches the path and everything below it, segment-wise."),
        value: pathValueSchema.describe(
          "Literal path starting with '/', in the form the gateway normalises requests to " +
            "(no '.' or '..' segments, percent-encodings, '*', query or fragment).",
        ),
      })
      .strict()
      .describe("The request path to match."),
    methods: z
      .array(httpMethodSchema)
      .max(9)
      .optional()
      .describe("Methods this match accepts; absent or empty means every method."),
  })
  .strict();

const authenticationSchema = z
  .object({
    mode: authModeSchema.describe(
      "phantom: introspect, forward the JWT; exchange: RFC 8693 token exchange; mint: gateway-signed JWT; " +
        "jwt: validate a JWT locally; none: public route.",
    ),
    authServerRef: localObjectReferenceSchema
      .optional()
      .describe("AuthServer of this rule; defaults to spec.authServerRef."),
    audience: z
      .string()
      .min(1)
      .max(253)
      .optional()
      .describe(
        "Upstream JWT audience (exchange, mint) or accepted token audience (jwt); required for those. " +
          "phantom: the audience of the JWT the gateway mints when the AuthServer answers with facts " +
          "(responseType json or token-introspection+jwt); required then.",
      ),
    acceptedAudiences: z
      .array(z.string().min(1).max(253))
      .min(1)
      .max(16)
      .optional()
      .describe(
        "phantom, exchange, mint: the client's token must name one of these in its `aud` (from introspection), " +
          "else 401 PG_ERR_TOKEN_AUDIENCE; checked on every request, a token without `aud` is refused. " +
          "Absent: any audience. (jwt checks `audience`.)",
      ),
    forwardClaims: z
      .array(z.string().min(1).max(128))
      .max(32)
      .optional()
      .describe(
        "mint only: claims copied into the minted JWT; default sub, client_id, scope (scope narrowed to the route). " +
          "Not iss, aud, exp, iat, nbf, jti (the gateway sets them), nor scp, cnf, act (they would undo the narrowing).",
      ),
    mintTtlSeconds: z
      .number()
      .int()
      .min(1)
      .max(3600)
      .optional()
      .describe("mint only: lifetime of the minted JWT; default 60."),
  })
  .strict()
  .superRefine((authentication, ctx) => {
    const { mode } = authentication;
    const needsAudience = mode === "exchange" || mode === "mint" || mode === "jwt";
    if (needsAudience && authentication.audience === undefined) {
      ctx.addIssue({ code: "custom", path: ["audience"], message: `required for mode ${mode}` });
    }
    if (!needsAudience && mode !== "phantom" && authentication.audience !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["audience"],
        message: `not used by mode ${mode} (only exchange, mint, jwt and phantom)`,
      });
    }
    if (authentication.acceptedAudiences !== undefined) {
      if (mode === "none" || mode === "jwt") {
        ctx.addIssue({
          code: "custom",
          path: ["acceptedAudiences"],
          message:
            mode === "jwt"
              ? "not used by mode jwt, which accepts the audience in `audience`"
              : "not used by mode none (only phantom, exchange and mint)",
        });
      }
      const seen = new Set<string>();
      authentication.acceptedAudiences.forEach((audience, index) => {
        if (seen.has(audience)) {
          ctx.addIssue({
            code: "custom",
            path: ["acceptedAudiences", index],
            message: `duplicate audience '${audience}'`,
          });
        }
        seen.add(audience);
      });
    }
    if (mode !== "mint") {
      for (const field of ["forwardClaims", "mintTtlSeconds"] as const) {
        if (authentication[field] !== undefined) {
          ctx.addIssue({ code: "custom", path: [field], message: `only used by mode mint, not ${mode}` });
        }
      }
    }
    (authentication.forwardClaims ?? []).forEach((claim, index) => {
      if (claimsMintCannotForward.has(claim)) {
        ctx.addIssue({
          code: "custom",
          path: ["forwardClaims", index],
          message: `'${claim}' cannot be forwarded: the gateway sets it when minting, or it would undo the narrowing`,
        });
      }
    });
    if (mode === "none" && authentication.authServerRef !== undefined) {
      ctx.addIssue({ code: "custom", path: ["authServerRef"], message: "not used by mode none" });
    }
  });

const backendRefSchema = z
  .object({
    url: z
      .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
      .optional()
      .describe("An http(s) origin (scheme, host, port; no path), for file mode and external backends."),
    name: dnsLabelSchema.optional().describe("A Kubernetes Service name."),
    namespace: dnsLabelSchema.optional().describe("Namespace of the Service; defaults to the route's."),
    port: z.number().int().min(1).max(65535).optional().describe("Service port; required with name."),
    weight: z.number().int().min(1).max(1_000_000).default(1).describe("Relative share of requests."),
  })
  .strict()
  .superRefine((ref, ctx) => {
    if ((ref.url === undefined) === (ref.name === undefined)) {
      ctx.addIssue({ code: "custom", message: "set exactly one of url or name" });
    }
    if (ref.name !== undefined && ref.port === undefined) {
      ctx.addIssue({ code: "custom", path: ["port"], message: "required with name" });
    }
    if (ref.url !== undefined) {
      for (const field of ["namespace", "port"] as const) {
        if (ref[field] !== undefined) {
          ctx.addIssue({ code: "custom", path: [field], message: "only used with name, not with url" });
        }
      }
      // Refinements also run after a failed format check, so the URL may not parse here.
      const url = URL.canParse(ref.url) ? new URL(ref.url) : undefined;
      const isOrigin =
        url === undefined ||
        (url.pathname === "/" &&
          url.search === "" &&
          url.hash === "" &&
          url.username === "" &&
          url.password === "");
      if (!isOrigin) {
        ctx.addIssue({
          code: "custom",
          path: ["url"],
          message:
            "must be an origin only (scheme, host, optional port): no path, query, fragment or userinfo",
        });
      }
    }
  });

const requiredScopeListSchema = z.array(scopeNameSchema).max(32);

/** A rule's `requiredScopes` (also what the SDK takes as a scope requirement). */
export const requiredScopesSpecSchema = z
  .object({
    allOf: requiredScopeListSchema.optional().describe("The token needs every one of these."),
    anyOf: requiredScopeListSchema.optional().describe("The token needs at least one of these."),
  })
  .strict();

const ruleSchema = z
  .object({
    name: dnsLabelSchema
      .optional()
      .describe(
        "Optional name for the rule. Its routes' ids (the route label of metrics and the audit trail) use it, namespace/name#rule-name, instead of the rule's index, so reordering rules keeps them; a name two rules share, or one of digits only, leaves those rules at their index.",
      ),
    matches: z
      .array(matchSchema)
      .min(1)
      .max(16)
      .describe("Requests this rule takes; any one match suffices."),
    authentication: authenticationSchema.describe("How the gateway handles the caller's token on this rule."),
    requiredScopes: requiredScopesSpecSchema
      .optional()
      .describe("Scopes from the route's ScopePolicies; a scope's implying scopes satisfy it too."),
    backendRefs: z
      .array(backendRefSchema)
      .min(1)
      .max(16)
      .describe("Where matching requests go, shared by weight."),
    timeouts: z
      .object({
        requestMs: z
          .number()
          .int()
          .min(1)
          .max(3_600_000)
          .default(30_000)
          .describe(
            "Time for the backend to answer once the request is sent, in milliseconds; also the longest a streamed request body may be silent, and the time before --min-body-rate applies to it.",
          ),
      })
      .strict()
      .prefault({})
      .describe("Timeouts of the exchange with the backend."),
    limits: z
      .object({
        maxBodyBytes: z
          .number()
          .int()
          .min(0)
          .default(defaultMaxBodyBytes)
          .describe("Largest request body forwarded, in bytes; default 10 MiB."),
      })
      .strict()
      .prefault({})
      .describe("Request limits."),
  })
  .strict()
  .superRefine((rule, ctx) => {
    const scopeCount = (rule.requiredScopes?.allOf?.length ?? 0) + (rule.requiredScopes?.anyOf?.length ?? 0);
    if (rule.authentication.mode === "none" && scopeCount > 0) {
      ctx.addIssue({
        code: "custom",
        path: ["requiredScopes"],
        message: "a public route (mode none) cannot require scopes",
      });
    }
  });

const apiRouteSpecSchema = z
  .object({
    hostnames: z
      .array(hostnameSchema)
      .max(16)
      .default([])
      .describe("Hosts this route serves; empty means any."),
    scopePolicyRefs: z
      .array(localObjectReferenceSchema)
      .max(16)
      .default([])
      .describe("ScopePolicies whose scopes the rules may require."),
    authServerRef: localObjectReferenceSchema.optional().describe("Default AuthServer of the rules."),
    rules: z
      .array(ruleSchema)
      .min(1)
      .max(64)
      .describe("Routing rules; across routes the most specific host, path and method wins."),
  })
  .strict()
  .superRefine((spec, ctx) => {
    spec.rules.forEach((rule, index) => {
      const { mode, authServerRef } = rule.authentication;
      if (mode !== "none" && authServerRef === undefined && spec.authServerRef === undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["rules", index, "authentication", "authServerRef"],
          message: `required for mode ${mode} (or set spec.authServerRef)`,
        });
      }
    });
  });

/** An ApiRoute object. */
export const apiRouteSchema = defineResourceSchema("ApiRoute", apiRouteSpecSchema);
export type ApiRoute = z.infer<typeof apiRouteSchema>;
export type ApiRouteSpec = ApiRoute["spec"];
export type ApiRouteRule = ApiRouteSpec["rules"][number];
export type BackendRef = ApiRouteRule["backendRefs"][number];
