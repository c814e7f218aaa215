// The ScopePolicy custom resource: one scope domain, its scopes and which scope implies which.
import { z } from "zod";
import { defineResourceSchema } from "./common.ts";

/** An OAuth scope token (RFC 6749 §3.3: printable ASCII without space, '"' and '\'). */
export const scopeNameSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(
    /^[\x21\x23-\x5B\x5D-\x7E]+$/,
    "must be an RFC 6749 scope token (printable ASCII, no space, '\"' or '\\')",
  );

const scopeSchema = z
  .object({
    name: scopeNameSchema.describe("The scope as it appears in access tokens."),
    description: z.string().max(1024).optional().describe("What the scope grants, for people."),
    implies: z
      .array(scopeNameSchema)
      .max(64)
      .optional()
      .describe("Scopes of this policy that a token with this scope also satisfies."),
  })
  .strict();

const scopePolicySpecSchema = z
  .object({
    domain: z
      .string()
      .min(1)
      .max(63)
      .regex(/^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$/, "must be lower-case alphanumerics with '-', '_' or '.'")
      .describe("The scope domain, e.g. billing."),
    scopes: z.array(scopeSchema).min(1).max(256).describe("The scopes of this domain; names are unique."),
  })
  .strict()
  .superRefine((spec, ctx) => {
    // Cycles are left to compile: they need a graph walk that will not become a CEL rule.
    const firstIndex = new Map<string, number>();
    spec.scopes.forEach((scope, index) => {
      const first = firstIndex.get(scope.name);
      if (first === undefined) {
        firstIndex.set(scope.name, index);
      } else {
        ctx.addIssue({
          code: "custom",
          path: ["scopes", index, "name"],
          message: `duplicate scope '${scope.name}' (already defined at scopes[${first}])`,
        });
      }
    });
    spec.scopes.forEach((scope, index) => {
      (scope.implies ?? []).forEach((implied, impliedIndex) => {
        if (!firstIndex.has(implied)) {
          ctx.addIssue({
            code: "custom",
            path: ["scopes", index, "implies", impliedIndex],
            message: `implied scope '${implied}' is not defined in this policy`,
          });
        }
      });
    });
  });

/** A ScopePolicy object. */
export const scopePolicySchema = defineResourceSchema("ScopePolicy", scopePolicySpecSchema);
export type ScopePolicy = z.infer<typeof scopePolicySchema>;
export type ScopePolicySpec = ScopePolicy["spec"];
