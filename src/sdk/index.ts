// `phantomgate/sdk`: what an API behind phantomgate needs. Verify the internal JWT into a typed identity, decide
// with scopes (coarse, with the ScopePolicies' implications) and policies over claims and resources (fine-grained),
// and call other internal APIs with the right token: exchange, embed or share, by security domain.
// Framework-agnostic core; `phantomgateFastify` binds it to fastify. See docs/writing-an-api.md.

export {
  createApiClient,
  type ApiClient,
  type ApiClientAuthServer,
  type ApiClientOptions,
  type ApiRequest,
  type ApiResponse,
  type ExchangeRequest,
  type SecurityDomain,
  type ServiceDefinition,
} from "./api-client.ts";
export {
  createJsonLineAuditSink,
  type ApiCallAuditRecord,
  type AuditSink,
  type TokenPattern,
} from "./audit.ts";
export {
  problemResponse,
  SdkError,
  sdkErrorCatalogue,
  type ProblemResponse,
  type SdkErrorCode,
  type SdkErrorOptions,
  type SdkErrorSpec,
} from "./errors.ts";
export { phantomgateFastify, requireScopes, type PhantomgateFastifyOptions } from "./fastify.ts";
export type { Actor, Identity } from "./identity.ts";
export {
  allOf,
  anyOf,
  definePolicy,
  enforce,
  filterAllowed,
  ownedBy,
  scopePolicy,
  type Decision,
  type Policy,
} from "./policies.ts";
export {
  createScopeChecker,
  type GrantedScopes,
  type ScopeChecker,
  type ScopeDefinitionLike,
  type ScopePolicyLike,
  type ScopePolicySpecLike,
  type ScopeRequirement,
} from "./scopes.ts";
export {
  bearerTokenOf,
  createInternalJwtVerifier,
  DEFAULT_ALGORITHMS,
  type InternalJwtVerifier,
  type InternalJwtVerifierOptions,
} from "./verify.ts";
/** The clock type the SDK takes (`{ now(): epochMs }`), and a manual one for tests. */
export { createManualClock, systemClock, type Clock, type ManualClock } from "../tokens/clock.ts";
/** base64url SHA-256 of a token: the only form in which a token may appear in your logs. */
export { fingerprintToken } from "../tokens/fingerprint.ts";
export type { JwsAlgorithm } from "../snapshot/snapshot.ts";
