// The admission.k8s.io/v1 AdmissionReview wire format: parsing a request and shaping a response.
import { z } from "zod";

/** The only AdmissionReview version the webhook registers for (`admissionReviewVersions: ["v1"]`). */
export const admissionReviewApiVersion = "admission.k8s.io/v1";

const groupVersionKindSchema = z
  .object({ group: z.string(), version: z.string(), kind: z.string().min(1) })
  .loose();

// The API server sends many more fields (userInfo, options, requestKind…): kept loose, read only what is used.
const admissionRequestSchema = z
  .object({
    uid: z.string().min(1),
    kind: groupVersionKindSchema,
    operation: z.enum(["CREATE", "UPDATE", "DELETE", "CONNECT"]),
    namespace: z.string().optional(),
    name: z.string().optional(),
    subResource: z.string().optional(),
    object: z.unknown().optional(),
    oldObject: z.unknown().optional(),
    dryRun: z.boolean().optional(),
  })
  .loose();

const admissionReviewSchema = z
  .object({
    apiVersion: z.literal(admissionReviewApiVersion),
    kind: z.literal("AdmissionReview"),
    request: admissionRequestSchema,
  })
  .loose();

/** The parts of an AdmissionRequest the webhook reads. */
export type AdmissionRequest = z.infer<typeof admissionRequestSchema>;
export type AdmissionOperation = AdmissionRequest["operation"];

/** `metav1.Status` as a denial carries it; kubectl prints `Error from server (<reason>): … <message>`. */
export interface AdmissionStatus {
  readonly code: number;
  readonly reason: string;
  readonly message: string;
}

/** The `response` of an AdmissionReview. */
export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly status?: AdmissionStatus;
  /** Shown by kubectl as `Warning: …` lines, also when the request is allowed. */
  readonly warnings?: readonly string[];
}

/** The AdmissionReview the webhook answers with. */
export interface AdmissionReviewResponse {
  readonly apiVersion: typeof admissionReviewApiVersion;
  readonly kind: "AdmissionReview";
  readonly response: AdmissionResponse;
}

/** Error codes of the webhook, for callers to switch on. */
export type WebhookErrorCode = "PG_WEBHOOK_INVALID_REVIEW";

/** A request the webhook cannot answer as an AdmissionReview (the server answers 400). */
export class InvalidAdmissionReviewError extends Error {
  readonly code: WebhookErrorCode = "PG_WEBHOOK_INVALID_REVIEW";
  override readonly name = "InvalidAdmissionReviewError";
}

/** Reads an AdmissionReview request; throws {@link InvalidAdmissionReviewError} for anything else. */
export function parseAdmissionReview(review: unknown): AdmissionRequest {
  const parsed = admissionReviewSchema.safeParse(review);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, 5)
      .map((issue) => `${issue.path.map(String).join(".") || "(root)"}: ${issue.message}`);
    throw new InvalidAdmissionReviewError(
      `not an ${admissionReviewApiVersion} AdmissionReview request: ${issues.join("; ")}`,
    );
  }
  return parsed.data.request;
}

/** Wraps a response in the AdmissionReview envelope. */
export function toAdmissionReview(response: AdmissionResponse): AdmissionReviewResponse {
  return { apiVersion: admissionReviewApiVersion, kind: "AdmissionReview", response };
}
