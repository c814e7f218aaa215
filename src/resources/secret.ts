// The subset of a Kubernetes v1 Secret that file mode reads: AuthServer client secrets live in one.
import { z } from "zod";
import { objectMetaSchema } from "./common.ts";

/** Key of a Secret's `data` or `stringData` (the characters Kubernetes allows). */
export const secretKeySchema = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[-._a-zA-Z0-9]+$/, "must consist of alphanumerics, '-', '_' or '.'");

/** A Secret object (core/v1). Values are never echoed in validation messages. */
export const secretSchema = z
  .object({
    apiVersion: z.literal("v1"),
    kind: z.literal("Secret"),
    metadata: objectMetaSchema,
    type: z.string().optional(),
    immutable: z.boolean().optional(),
    data: z.record(secretKeySchema, z.base64()).optional().describe("Base64-encoded values."),
    stringData: z
      .record(secretKeySchema, z.string())
      .optional()
      .describe("Plain values; win over data for the same key, as in Kubernetes."),
  })
  .strict();
export type Secret = z.infer<typeof secretSchema>;
