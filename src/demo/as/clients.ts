// The demo AS's fixed catalogue: scopes, resource servers and registered clients (the demo contract in DESIGN.md).
import type { JsonWebKey } from "node:crypto";

import type { ClientMetadata } from "oidc-provider";

import { SIGNING_ALG } from "./signing-keys.ts";

export const DEMO_SCOPES = [
  "read_invoice",
  "write_invoice",
  "high_video_stream",
  "low_video_stream",
  "video_metadata",
] as const;

/** Resource indicator (RFC 8707) that makes client_credentials issue a JWT access token instead of an opaque one. */
export const JWT_API_RESOURCE = "urn:phantomgate:jwt-api";

export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";

/** Clients the gateway uses: they may introspect and revoke any token and exchange tokens. */
export const GATEWAY_CLIENT_IDS: ReadonlySet<string> = new Set(["gateway", "gateway-post", "gateway-jwt"]);

/** Audience of the demo's `billing` security domain (the invoices API and the ledger helper). */
export const BILLING_AUDIENCE = "urn:phantomgate:billing";
/** Audience of the demo's `payments` security domain (the payments API). */
export const PAYMENTS_AUDIENCE = "urn:phantomgate:payments";

/**
 * Resource indicators (RFC 8707) for which client_credentials issues an opaque token with that `aud`: the demo's
 * security domains. Without `resource` a token is opaque and has no audience.
 */
export const OPAQUE_API_RESOURCES: ReadonlySet<string> = new Set([BILLING_AUDIENCE, PAYMENTS_AUDIENCE]);

/**
 * Internal APIs that may exchange tokens (API-to-API calls across security domains), and for which audiences
 * only: an API gets tokens for the services it calls, not for everything. Gateway clients may ask for any audience.
 */
export const API_EXCHANGE_AUDIENCES: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ["invoices-api", new Set([PAYMENTS_AUDIENCE])],
]);

/** A token the AS nests in the tokens it issues for an audience (the "embed" API-to-API pattern). */
export interface EmbeddedTokenRule {
  /** Claim of the outer token that carries the nested JWT. */
  readonly claim: string;
  /** `aud` of the nested JWT. */
  readonly audience: string;
}

/**
 * Flows known in advance: a token exchanged for the payments domain carries, in `ledger_token`, a token for the
 * billing domain with the same subject and scopes, so the payments API can call the ledger helper without an
 * exchange of its own.
 */
export const EMBEDDED_TOKENS: ReadonlyMap<string, readonly EmbeddedTokenRule[]> = new Map([
  [PAYMENTS_AUDIENCE, [{ claim: "ledger_token", audience: BILLING_AUDIENCE }]],
]);

/** Published demo secrets: this AS exists for local demos and tests, never for real clients. */
const SECRETS = {
  "demo-client": "demo-secret",
  "partner-client": "partner-secret",
  gateway: "gateway-secret",
  "gateway-post": "gateway-secret",
  "invoices-api": "invoices-secret",
} as const;

function appClient(clientId: "demo-client" | "partner-client"): ClientMetadata {
  return {
    client_id: clientId,
    client_secret: SECRETS[clientId],
    grant_types: ["client_credentials"],
    response_types: [],
    redirect_uris: [],
    // oidc-provider accepts client_secret_post from a client_secret_basic client too (both prove the same secret).
    token_endpoint_auth_method: "client_secret_basic",
    scope: DEMO_SCOPES.join(" "),
  };
}

function gatewayClient(
  clientId: "gateway" | "gateway-post" | "gateway-jwt",
  auth: Pick<ClientMetadata, "token_endpoint_auth_method" | "client_secret" | "jwks">,
): ClientMetadata {
  return {
    client_id: clientId,
    ...auth,
    grant_types: [TOKEN_EXCHANGE_GRANT],
    response_types: [],
    redirect_uris: [],
    // RFC 9701 signed introspection responses (every client has this alg by default; stated here because the gateway relies on it).
    introspection_signed_response_alg: SIGNING_ALG,
  };
}

/** An internal API's client: it only exchanges tokens (see API_EXCHANGE_AUDIENCES for which audiences). */
function apiClient(clientId: "invoices-api"): ClientMetadata {
  return {
    client_id: clientId,
    client_secret: SECRETS[clientId],
    grant_types: [TOKEN_EXCHANGE_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: "client_secret_basic",
  };
}

/** Client registrations; `gateway-jwt` (private_key_jwt) exists only when its public keys are given. */
export function demoClients(gatewayClientJwks: { keys: JsonWebKey[] } | undefined): ClientMetadata[] {
  const clients = [
    appClient("demo-client"),
    appClient("partner-client"),
    gatewayClient("gateway", {
      token_endpoint_auth_method: "client_secret_basic",
      client_secret: SECRETS.gateway,
    }),
    gatewayClient("gateway-post", {
      token_endpoint_auth_method: "client_secret_post",
      client_secret: SECRETS["gateway-post"],
    }),
    apiClient("invoices-api"),
  ];
  if (gatewayClientJwks !== undefined) {
    clients.push(
      gatewayClient("gateway-jwt", {
        token_endpoint_auth_method: "private_key_jwt",
        jwks: gatewayClientJwks,
      }),
    );
  }
  return clients;
}
