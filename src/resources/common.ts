// Schema pieces every custom resource shares: API group, object metadata, status, references and name rules.
import { z } from "zod";

/** `status.conditions` holds at most this many entries (the CRDs' `maxItems`). */
export const MAX_STATUS_CONDITIONS = 8;

/** API group and version of every phantomgate custom resource. */
export const apiVersion = "phantomgate.dev/v1alpha1";

/** Kinds of the phantomgate API group. */
export const phantomgateKinds = ["ApiRoute", "ScopePolicy", "AuthServer"] as const;
export type PhantomgateKind = (typeof phantomgateKinds)[number];

// RFC 1123 label and subdomain, the rules Kubernetes applies to namespaces and object names.
const dnsLabelPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dnsSubdomainPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A Kubernetes namespace name (RFC 1123 label). */
export const dnsLabelSchema = z
  .string()
  .max(63)
  .regex(
    dnsLabelPattern,
    "must be a lower-case RFC 1123 label (a-z, 0-9, '-'; starts and ends alphanumeric)",
  );

/** A Kubernetes object name (RFC 1123 subdomain). */
export const dnsSubdomainSchema = z
  .string()
  .max(253)
  .regex(
    dnsSubdomainPattern,
    "must be a lower-case RFC 1123 subdomain (a-z, 0-9, '-', '.'; each part starts and ends alphanumeric)",
  );

/**
 * Object metadata. Kubernetes owns ObjectMeta and the API server adds fields we never read (resourceVersion,
 * managedFields…), so those are accepted as opaque; listing them keeps the object strict, so a typo such as
 * `namepsace` in a manifest file is still an error instead of silently landing in "default".
 */
export const objectMetaSchema = z
  .object({
    name: dnsSubdomainSchema.describe("Object name, unique per kind within the namespace."),
    namespace: dnsLabelSchema.default("default").describe("Namespace of the object."),
    generation: z.number().int().min(0).optional().describe("Set by the API server on every spec change."),
    creationTimestamp: z.iso
      .datetime({ offset: true })
      .optional()
      .describe("Set by the API server; the older of two conflicting routes wins."),
    uid: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    generateName: z.string().optional(),
    resourceVersion: z.string().optional(),
    selfLink: z.string().optional(),
    deletionTimestamp: z.string().optional(),
    deletionGracePeriodSeconds: z.number().int().optional(),
    finalizers: z.array(z.string()).optional(),
    ownerReferences: z.array(z.unknown()).optional(),
    managedFields: z.array(z.unknown()).optional(),
  })
  .strict();
export type ObjectMeta = z.infer<typeof objectMetaSchema>;

/** One status condition, shaped like `metav1.Condition`. */
export const conditionSchema = z
  .object({
    type: z.string().min(1).max(316).describe("Accepted or Programmed (or another controller's condition)."),
    status: z.enum(["True", "False", "Unknown"]).describe("True, False or Unknown."),
    reason: z
      .string()
      .min(1)
      .max(1024)
      .describe(
        "Why, in one CamelCase word: a compile reason or a Programmed reason (docs/status-reasons.md).",
      ),
    message: z
      .string()
      .max(32768)
      .describe("The details: for a rejection, the field path and what is wrong with it."),
    observedGeneration: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("The metadata.generation the condition was computed for."),
    lastTransitionTime: z.iso
      .datetime({ offset: true })
      .describe("When the condition's status last changed."),
  })
  .strict();
export type Condition = z.infer<typeof conditionSchema>;

/** Status written by the operator; compile ignores it. */
/** The fleet as it concerns one object, written by the operator: how many connected gateways serve it. */
export const fleetStatusSchema = z
  .object({
    revision: z
      .string()
      .max(64)
      .optional()
      .describe(
        "The first snapshot revision that contained the object as it is now (the current revision when the " +
          "object is not accepted); absent before the first compile.",
      ),
    programmed: z
      .number()
      .int()
      .min(0)
      .describe("Connected gateways serving a revision that contains the object."),
    gateways: z.number().int().min(0).describe("Connected gateways."),
  })
  .strict();

export const resourceStatusSchema = z
  .object({
    observedGeneration: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("The metadata.generation the operator last wrote this status for."),
    conditions: z
      .array(conditionSchema)
      .max(MAX_STATUS_CONDITIONS)
      .optional()
      .describe(
        "Accepted: whether compile accepted the object (False: the reason and message say why). Programmed: " +
          "whether every connected gateway serves it as it is now.",
      ),
    fleet: fleetStatusSchema
      .optional()
      .describe(
        "The gateways connected to the operator, and how many of them serve the object as it is now.",
      ),
  })
  .strict();
export type ResourceStatus = z.infer<typeof resourceStatusSchema>;

/** Reference to another object of a known kind in the same namespace. */
export const localObjectReferenceSchema = z
  .object({
    name: dnsSubdomainSchema.describe("Name of the referenced object in the same namespace."),
  })
  .strict();
export type LocalObjectReference = z.infer<typeof localObjectReferenceSchema>;

/**
 * Builds the top-level schema of one phantomgate kind: `apiVersion`, `kind`, `metadata`, the given `spec` and
 * the optional `status`.
 */
export function defineResourceSchema<const K extends PhantomgateKind, S extends z.ZodType>(kind: K, spec: S) {
  return z
    .object({
      apiVersion: z.literal(apiVersion),
      kind: z.literal(kind),
      metadata: objectMetaSchema,
      spec,
      status: resourceStatusSchema.optional(),
    })
    .strict();
}
