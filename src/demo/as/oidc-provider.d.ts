// Hand-written typings for the slice of oidc-provider 9 the demo authorization server uses (the package ships none).
declare module "oidc-provider" {
  import type { JsonWebKey } from "node:crypto";
  import type { IncomingMessage, ServerResponse } from "node:http";

  /** A registered client as oidc-provider resolved it. */
  export interface OidcClient {
    readonly clientId: string;
    readonly clientAuthMethod: string;
  }

  /** A stored token (AccessToken, ClientCredentials…) as `Model.find` returns it. */
  export interface OidcToken {
    readonly kind: string;
    readonly jti: string;
    readonly clientId?: string;
    readonly accountId?: string;
    readonly scope?: string;
    readonly exp?: number;
    readonly iat?: number;
    readonly aud?: string | string[];
    readonly isValid: boolean;
  }

  /** `ctx.oidc`: the provider's per-request state (present once oidc-provider's router took the request). */
  export interface OidcRequestState {
    readonly route?: string;
    readonly client?: OidcClient;
    readonly params?: Readonly<Record<string, unknown>>;
    /** The parsed request body before oidc-provider filtered the parameters. */
    readonly body?: Readonly<Record<string, unknown>>;
  }

  /** The part of Koa's context the middleware here touches. */
  export interface KoaContext {
    readonly req: IncomingMessage;
    readonly path: string;
    readonly method: string;
    status: number;
    body: unknown;
    type: string;
    accepts(...types: string[]): string | false;
    readonly oidc: OidcRequestState;
  }

  export type KoaMiddleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

  export interface TokenModel {
    find(value: string, options?: { ignoreExpiration?: boolean }): Promise<OidcToken | undefined>;
  }

  /** oidc-provider's storage adapter interface; payloads are opaque records. */
  export interface Adapter {
    upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  export interface AdapterPayload {
    readonly grantId?: string;
    readonly userCode?: string;
    readonly uid?: string;
    consumed?: number;
    readonly [claim: string]: unknown;
  }

  export interface ClientMetadata {
    client_id: string;
    client_secret?: string;
    grant_types: string[];
    response_types: string[];
    redirect_uris: string[];
    token_endpoint_auth_method: string;
    scope?: string;
    jwks?: { keys: JsonWebKey[] };
    introspection_signed_response_alg?: string;
  }

  export interface ResourceServerInfo {
    scope: string;
    audience?: string;
    accessTokenTTL?: number;
    accessTokenFormat?: "opaque" | "jwt";
    jwt?: { sign?: { alg: string } };
  }

  type TtlFunction = (ctx: KoaContext, token: OidcToken, client: OidcClient) => number;

  export interface Configuration {
    adapter: (modelName: string) => Adapter;
    clients: ClientMetadata[];
    jwks: { keys: JsonWebKey[] };
    scopes: string[];
    clientDefaults: Partial<ClientMetadata> & { id_token_signed_response_alg: string };
    clientBasedCORS: (ctx: KoaContext, origin: string, client: OidcClient) => boolean;
    findAccount: (ctx: KoaContext, sub: string) => Promise<undefined>;
    renderError: (ctx: KoaContext, out: Record<string, unknown>, error: Error) => Promise<void>;
    extraTokenClaims: (ctx: KoaContext, token: OidcToken) => Promise<Record<string, unknown> | undefined>;
    ttl: Record<string, number | TtlFunction>;
    features: {
      devInteractions: { enabled: boolean };
      clientCredentials: { enabled: boolean };
      introspection: {
        enabled: boolean;
        allowedPolicy: (ctx: KoaContext, client: OidcClient, token: OidcToken) => Promise<boolean>;
      };
      jwtIntrospection: { enabled: boolean };
      revocation: {
        enabled: boolean;
        allowedPolicy: (ctx: KoaContext, client: OidcClient, token: OidcToken) => Promise<boolean>;
      };
      resourceIndicators: {
        enabled: boolean;
        defaultResource: (
          ctx: KoaContext,
          client: OidcClient,
          oneOf?: string[],
        ) => Promise<string | string[] | undefined>;
        useGrantedResource: (ctx: KoaContext, model: unknown) => Promise<boolean>;
        getResourceServerInfo: (
          ctx: KoaContext,
          resource: string,
          client: OidcClient,
        ) => Promise<ResourceServerInfo>;
      };
      userinfo: { enabled: boolean };
    };
  }

  /** oidc-provider's OAuth errors: `error` is the RFC code, `error_description` what the client reads. */
  export interface OidcError extends Error {
    readonly error: string;
    error_description?: string;
    readonly status: number;
  }

  export const errors: {
    readonly InvalidRequest: new (description?: string) => OidcError;
    readonly InvalidGrant: new () => OidcError;
    readonly InvalidScope: new (description: string, scope?: string) => OidcError;
    readonly InvalidTarget: new (description?: string) => OidcError;
  };

  export default class Provider {
    constructor(issuer: string, configuration: Configuration);
    readonly issuer: string;
    readonly AccessToken: TokenModel;
    readonly ClientCredentials: TokenModel;
    use(middleware: KoaMiddleware): this;
    callback(): (req: IncomingMessage, res: ServerResponse) => Promise<void>;
    registerGrantType(
      name: string,
      handler: (ctx: KoaContext) => Promise<void>,
      parameters?: readonly string[],
    ): void;
    pathFor(name: string): string;
    urlFor(name: string): string;
    on(event: "server_error", listener: (ctx: KoaContext, error: Error) => void): this;
    on(event: "error", listener: (error: Error) => void): this;
  }
}
