// The validating admission webhook: what the operator wires (see docs in ./README.md).
export {
  InvalidAdmissionReviewError,
  type AdmissionResponse,
  type AdmissionReviewResponse,
  type WebhookErrorCode,
} from "./admission-review.ts";
export { reviewAdmission } from "./review-admission.ts";
export {
  startWebhookServer,
  webhookPath,
  type ServingCertificate,
  type WebhookServer,
  type WebhookServerOptions,
} from "./server.ts";
export {
  startCertificateManager,
  type CertificateManager,
  type CertificateManagerOptions,
} from "./certificate-manager.ts";
export {
  loadCertificateFromSecret,
  type CertificateSource,
  type LoadCertificateFromSecretOptions,
} from "./certificate-secret.ts";
export { issueServingCertificate, type WebhookCertificate } from "./certificate.ts";
export {
  buildValidatingWebhookConfiguration,
  deletionWebhookName,
  validatingWebhookName,
  webhookResources,
  type ValidatingWebhookConfigurationOptions,
} from "./webhook-configuration.ts";
