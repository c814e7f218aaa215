// The AuthServer custom resource: where an authorization server lives and how the gateway talks to it.
import { z } from "zod";
import {
  clientAuthMethodSchema,
  introspectionResponseSchema,
  jwsAlgorithmSchema,
} from "../snapshot/snapshot.ts";
import { defineResourceSchema, dnsSubdomainSchema } from "./common.ts";
import { secretKeySchema } from "./secret.ts";

const httpUrlSchema = z.url({ protocol: /^https?$/, error: "must be an http(s) URL" });

/** A key in a Secret of the same namespace. */
export const secretKeyReferenceSchema = z
  .object({
    name: dnsSubdomainSchema.describe("Name of the Secret in the AuthServer's namespace."),
    key: secretKeySchema.describe("Key within the Secret's data."),
  })
  .strict();
export type SecretKeyReference = z.infer<typeof secretKeyReferenceSchema>;

const clientSecretSchema = z
  .object({
    value: z.string().min(1).optional().describe("The secret inline; for files on a developer machine only."),
    secretRef: secretKeyReferenceSchema
      .optional()
      .describe("The secret from a Secret in the same namespace."),
  })
  .strict()
  .superRefine((secret, ctx) => {
    if ((secret.value === undefined) === (secret.secretRef === undefined)) {
      ctx.addIssue({ code: "custom", message: "set exactly one of value or secretRef" });
    }
  })
  .describe("Client secret, or for private_key_jwt the private JWK as JSON.");

const authServerSpecSchema = z
  .object({
    issuer: z.string().min(1).describe("Issuer identifier; tokens must carry it as `iss`."),
    discovery: z
      .boolean()
      .default(true)
      .describe("Fetch the issuer's metadata for endpoints not given explicitly."),
    endpoints: z
      .object({
        introspection: httpUrlSchema.optional().describe("RFC 7662 introspection endpoint."),
        token: httpUrlSchema.optional().describe("Token endpoint, used by exchange mode (RFC 8693)."),
        jwks: httpUrlSchema.optional().describe("JWK Set of the issuer's signing keys."),
      })
      .strict()
      .prefault({})
      .describe("Endpoints given explicitly; they win over discovered ones."),
    clientAuthentication: z
      .object({
        method: clientAuthMethodSchema
          .default("client_secret_basic")
          .describe("How the gateway authenticates at the token and introspection endpoints."),
        clientId: z.string().min(1).describe("The gateway's own client id at the authorization server."),
        clientSecret: clientSecretSchema,
      })
      .strict()
      .describe("The gateway's own client credentials at the authorization server."),
    introspection: z
      .object({
        responseType: introspectionResponseSchema
          .default("jwt")
          .describe("json (RFC 7662), jwt (the token as a JWT) or token-introspection+jwt (RFC 9701)."),
      })
      .strict()
      .prefault({})
      .describe("How tokens are introspected."),
    allowedAlgorithms: z
      .array(jwsAlgorithmSchema)
      .min(1)
      .max(10)
      .default(["RS256", "PS256", "ES256", "EdDSA"])
      .describe("JWS algorithms accepted on tokens and signed responses from this server."),
    clockSkewSeconds: z
      .number()
      .int()
      .min(0)
      .max(600)
      .default(30)
      .describe("Tolerance when checking exp, nbf and iat, in seconds."),
    // No default: a CRD default would write the field into every stored AuthServer, which an operator from before
    // the field (strict schemas) would then refuse while the CRDs are upgraded ahead of it.
    requireAccessTokenTyp: z
      .boolean()
      .optional()
      .describe(
        "Accept a JWT as an access token (jwt mode, and the JWT an introspection answer of responseType jwt " +
          "carries) only with the header typ at+jwt (RFC 9068). Absent or false also accepts typ JWT or none, " +
          "as many servers issue; other types (ID tokens marked as such, RFC 9701 answers) are refused either way.",
      ),
    cache: z
      .object({
        maxTtlSeconds: z
          .number()
          .int()
          .min(0)
          .default(300)
          .describe("Upper bound for caching an active token."),
        negativeTtlSeconds: z
          .number()
          .int()
          .min(0)
          .default(5)
          .describe("How long an inactive result is cached."),
        maxEntries: z
          .number()
          .int()
          .min(1)
          .default(100_000)
          .describe("Most tokens cached at once for this auth server."),
      })
      .strict()
      .prefault({})
      .describe("Caching of token facts from this server."),
    timeouts: z
      .object({
        connectMs: z
          .number()
          .int()
          .min(1)
          .max(3_600_000)
          .default(1000)
          .describe("Connection timeout, in milliseconds (at most an hour)."),
        responseMs: z
          .number()
          .int()
          .min(1)
          .max(3_600_000)
          .default(2000)
          .describe("Response timeout, in milliseconds (at most an hour)."),
      })
      .strict()
      .prefault({})
      .describe("Timeouts of calls to this server."),
    jwksCooldownMs: z
      .number()
      .int()
      .min(1000)
      .max(3_600_000)
      .default(10_000)
      .describe(
        "Minimum interval between JWKS refetches triggered by an unknown key id; at least 1000, so tokens with made-up key ids cannot turn into a stream of calls to the server, and at most an hour.",
      ),
  })
  .strict()
  .superRefine((spec, ctx) => {
    if (!spec.discovery) {
      for (const endpoint of ["introspection", "jwks"] as const) {
        if (spec.endpoints[endpoint] === undefined) {
          ctx.addIssue({
            code: "custom",
            path: ["endpoints", endpoint],
            message: "required when discovery is false",
          });
        }
      }
    } else if (!URL.canParse(spec.issuer) || !/^https?:$/.test(new URL(spec.issuer).protocol)) {
      ctx.addIssue({
        code: "custom",
        path: ["issuer"],
        message: "must be an http(s) URL when discovery is true (metadata is fetched below it)",
      });
    }
  });

/** An AuthServer object. */
export const authServerSchema = defineResourceSchema("AuthServer", authServerSpecSchema);
export type AuthServer = z.infer<typeof authServerSchema>;
export type AuthServerSpec = AuthServer["spec"];
