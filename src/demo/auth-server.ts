// The demo authorization server: oidc-provider set up for the demo contract (clients, scopes, introspection formats, token exchange) on loopback.
import type { JsonWebKey } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import Provider, {
  errors,
  type Configuration,
  type KoaContext,
  type OidcClient,
  type OidcToken,
} from "oidc-provider";

import {
  DEMO_SCOPES,
  GATEWAY_CLIENT_IDS,
  JWT_API_RESOURCE,
  OPAQUE_API_RESOURCES,
  TOKEN_EXCHANGE_GRANT,
  demoClients,
} from "./as/clients.ts";
import { negotiateIntrospectionFormat } from "./as/introspection-formats.ts";
import { MemoryStore } from "./as/memory-store.ts";
import { RequestGate } from "./as/request-gate.ts";
import { SIGNING_ALG, SigningKeyRing } from "./as/signing-keys.ts";
import { TOKEN_EXCHANGE_PARAMETERS, createTokenExchangeHandler } from "./as/token-exchange.ts";

export { DEMO_SCOPES, JWT_API_RESOURCE, OPAQUE_API_RESOURCES, TOKEN_EXCHANGE_GRANT } from "./as/clients.ts";

export interface DemoAuthServerOptions {
  /** Default 0 (ephemeral); the host is always 127.0.0.1. */
  port?: number;
  /** Default `http://127.0.0.1:${actualPort}`. A path component is honoured (endpoints are served under it). */
  issuer?: string;
  /** Lifetime of access tokens from client_credentials and token exchange; default 3600. */
  accessTokenTtlSeconds?: number;
  /** Public keys for the private_key_jwt client `gateway-jwt` (the client exists only when this is given). */
  gatewayClientJwks?: { keys: JsonWebKey[] };
}

export interface DemoAuthServer {
  readonly issuer: string;
  readonly port: number;
  /** Absolute URL. */
  readonly jwksUri: string;
  readonly introspectionEndpoint: string;
  readonly tokenEndpoint: string;
  readonly revocationEndpoint: string;
  /** Adds a new signing key (new kid) and makes it the one used from now on; old keys stay published unless `dropOld`. Returns the new kid. */
  rotateSigningKey(options?: { dropOld?: boolean }): Promise<string>;
  /**
   * Counts of calls served, for tests (e.g. single-flight: exactly 1 introspection). `introspections`,
   * `tokenRequests` and `jwksRequests` count requests arriving at those endpoints (before any delay, whatever
   * the outcome); `tokenRequests` includes exchanges. `exchanges` counts token-exchange requests whose client
   * authenticated. The object is live; tests may reset a counter by assigning 0.
   */
  readonly stats: { introspections: number; tokenRequests: number; exchanges: number; jwksRequests: number };
  /** Makes every endpoint answer slowly (ms) or not at all until reset (for timeout tests); 0 = normal. `Infinity` holds requests until the next call. */
  setDelayMs(ms: number): void;
  close(): Promise<void>;
}

const HOST = "127.0.0.1";
const DEFAULT_ACCESS_TOKEN_TTL_SECONDS = 3600;
/** Lifetimes for artefacts this AS never issues (no end-users); set so oidc-provider does not nag about defaults. */
const UNUSED_ARTEFACT_TTL_SECONDS = 600;

const epochSeconds = (): number => Math.floor(Date.now() / 1000);

/** Starts the demo AS and resolves once it is listening. */
export async function startDemoAuthServer(options: DemoAuthServerOptions = {}): Promise<DemoAuthServer> {
  const accessTokenTtlSeconds = options.accessTokenTtlSeconds ?? DEFAULT_ACCESS_TOKEN_TTL_SECONDS;
  if (!Number.isSafeInteger(accessTokenTtlSeconds) || accessTokenTtlSeconds < 1) {
    throw new RangeError("accessTokenTtlSeconds must be a positive integer");
  }
  const requestedPort = options.port ?? 0;
  if (!Number.isSafeInteger(requestedPort) || requestedPort < 0 || requestedPort > 65_535) {
    throw new RangeError("port must be an integer between 0 and 65535");
  }

  const keys = await SigningKeyRing.create();
  const store = new MemoryStore();
  const gate = new RequestGate();
  const stats = { introspections: 0, tokenRequests: 0, exchanges: 0, jwksRequests: 0 };

  // Listen before building the provider: the default issuer names the port the OS picked.
  const server = createServer();
  const port = await listen(server, requestedPort);
  const issuer = options.issuer ?? `http://${HOST}:${port}`;
  const mountPath = URL.parse(issuer)?.pathname.replace(/\/$/, "") ?? "";

  const settings: ProviderSettings = {
    issuer,
    mountPath,
    keys,
    store,
    accessTokenTtlSeconds,
    gatewayClientJwks: options.gatewayClientJwks,
    onExchange: () => {
      stats.exchanges += 1;
    },
  };
  let provider: Provider;
  try {
    provider = buildProvider(settings);
  } catch (error) {
    server.close();
    throw error;
  }
  // Rotation swaps in a new provider over the same store: oidc-provider cannot change its keystore live, and the
  // socket, clients and issued tokens must outlive the swap.
  let handle = provider.callback();

  const endpoints = {
    jwksUri: provider.urlFor("jwks"),
    introspectionEndpoint: provider.urlFor("introspection"),
    tokenEndpoint: provider.urlFor("token"),
    revocationEndpoint: provider.urlFor("revocation"),
  };
  const counters = new Map<string, keyof typeof stats>([
    [provider.pathFor("introspection"), "introspections"],
    [provider.pathFor("token"), "tokenRequests"],
    [provider.pathFor("jwks"), "jwksRequests"],
  ]);

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const path = pathnameOf(req.url);
    const counter = counters.get(path);
    if (counter !== undefined) stats[counter] += 1;
    void gate
      .pass()
      .then(async (proceed) => {
        if (!proceed) {
          res.destroy();
          return;
        }
        if (!stripMountPath(req, path, mountPath)) {
          res.writeHead(404).end();
          return;
        }
        await handle(req, res);
      })
      .catch((error: unknown) => {
        logServerError(error);
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
  });

  let closing: Promise<void> | undefined;
  return {
    issuer,
    port,
    ...endpoints,
    stats,
    async rotateSigningKey(rotation = {}) {
      const kid = await keys.rotate(rotation);
      handle = buildProvider(settings).callback();
      return kid;
    },
    setDelayMs(ms) {
      gate.setDelayMs(ms);
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        gate.close();
        server.close(() => {
          resolve();
        });
        // Keep-alive sockets from test clients would otherwise hold close() open.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

interface ProviderSettings {
  readonly issuer: string;
  /** The issuer's path without a trailing slash ("" for none): endpoints live under it. */
  readonly mountPath: string;
  readonly keys: SigningKeyRing;
  readonly store: MemoryStore;
  readonly accessTokenTtlSeconds: number;
  readonly gatewayClientJwks: { keys: JsonWebKey[] } | undefined;
  readonly onExchange: () => void;
}

/** One oidc-provider instance over the shared store, signing with the key ring's current keys. */
function buildProvider(settings: ProviderSettings): Provider {
  const provider = new Provider(settings.issuer, providerConfiguration(settings));
  provider.registerGrantType(
    TOKEN_EXCHANGE_GRANT,
    createTokenExchangeHandler(provider, {
      keys: settings.keys,
      issuer: settings.issuer,
      accessTokenTtlSeconds: settings.accessTokenTtlSeconds,
      onExchange: settings.onExchange,
      now: epochSeconds,
    }),
    TOKEN_EXCHANGE_PARAMETERS,
  );
  provider.use(
    negotiateIntrospectionFormat({
      // Koa sees paths with the issuer's path already stripped (see stripMountPath).
      introspectionPath: provider.pathFor("introspection").slice(settings.mountPath.length),
      issuer: settings.issuer,
      keys: settings.keys,
      now: epochSeconds,
    }),
  );
  provider.on("server_error", (_ctx, error) => {
    logServerError(error);
  });
  return provider;
}

function providerConfiguration(settings: ProviderSettings): Configuration {
  const ttl = settings.accessTokenTtlSeconds;
  const mayActOnAnyToken = async (_ctx: KoaContext, client: OidcClient, token: OidcToken): Promise<boolean> =>
    Promise.resolve(GATEWAY_CLIENT_IDS.has(client.clientId) || token.clientId === client.clientId);
  return {
    adapter: (modelName) => settings.store.adapterFor(modelName),
    clients: demoClients(settings.gatewayClientJwks),
    jwks: settings.keys.privateJwks(),
    scopes: [...DEMO_SCOPES],
    clientDefaults: {
      grant_types: ["client_credentials"],
      response_types: [],
      token_endpoint_auth_method: "client_secret_basic",
      // The key ring holds EC keys only; oidc-provider's RS256 defaults would find no key (client validation fails).
      id_token_signed_response_alg: SIGNING_ALG,
      introspection_signed_response_alg: SIGNING_ALG,
    },
    // Machine clients only: no browser origin is ever allowed.
    clientBasedCORS: () => false,
    findAccount: async () => Promise.resolve(undefined),
    renderError: async (ctx, out) => {
      ctx.type = "application/json";
      ctx.body = out;
      return Promise.resolve();
    },
    extraTokenClaims: async (ctx, token) => {
      rejectUnknownScopes(ctx);
      // client_credentials has no end-user: the client is the subject (as RFC 9068 §2.2 has it).
      return Promise.resolve(token.kind === "ClientCredentials" ? { sub: token.clientId } : undefined);
    },
    ttl: {
      AccessToken: ttl,
      ClientCredentials: ttl,
      IdToken: UNUSED_ARTEFACT_TTL_SECONDS,
      AuthorizationCode: UNUSED_ARTEFACT_TTL_SECONDS,
      RefreshToken: UNUSED_ARTEFACT_TTL_SECONDS,
      Grant: UNUSED_ARTEFACT_TTL_SECONDS,
      Session: UNUSED_ARTEFACT_TTL_SECONDS,
      Interaction: UNUSED_ARTEFACT_TTL_SECONDS,
      DeviceCode: UNUSED_ARTEFACT_TTL_SECONDS,
      BackchannelAuthenticationRequest: UNUSED_ARTEFACT_TTL_SECONDS,
      PreAuthorizedCode: UNUSED_ARTEFACT_TTL_SECONDS,
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: mayActOnAnyToken },
      jwtIntrospection: { enabled: true },
      revocation: { enabled: true, allowedPolicy: mayActOnAnyToken },
      resourceIndicators: {
        enabled: true,
        // Without `resource` the token is opaque: the phantom token pattern is the default.
        defaultResource: async () => Promise.resolve(undefined),
        useGrantedResource: async () => Promise.resolve(false),
        getResourceServerInfo: async (_ctx, resource) => {
          if (OPAQUE_API_RESOURCES.has(resource)) {
            // Still the phantom token pattern, for one API's audience (for routes with acceptedAudiences).
            return Promise.resolve({
              scope: DEMO_SCOPES.join(" "),
              audience: resource,
              accessTokenFormat: "opaque",
              accessTokenTTL: ttl,
            });
          }
          if (resource !== JWT_API_RESOURCE) throw new errors.InvalidTarget();
          return Promise.resolve({
            scope: DEMO_SCOPES.join(" "),
            audience: JWT_API_RESOURCE,
            accessTokenFormat: "jwt",
            accessTokenTTL: ttl,
            jwt: { sign: { alg: SIGNING_ALG } },
          });
        },
      },
    },
  };
}

const KNOWN_SCOPES: ReadonlySet<string> = new Set(DEMO_SCOPES);

/**
 * oidc-provider silently drops unknown scopes from a client_credentials request; the demo contract wants
 * `invalid_scope` so typos fail loudly. Checked while the token is being saved (extraTokenClaims runs before the
 * store write, so nothing is persisted) against the raw request body, since the parsed params are already filtered.
 */
function rejectUnknownScopes(ctx: KoaContext): void {
  if (ctx.oidc.route !== "token" || ctx.oidc.params?.["grant_type"] !== "client_credentials") return;
  const requested = ctx.oidc.body?.["scope"];
  if (typeof requested !== "string") return;
  const unknown = requested.split(" ").find((scope) => scope !== "" && !KNOWN_SCOPES.has(scope));
  if (unknown !== undefined)
    throw new errors.InvalidScope("requested scope is not known to this server", unknown);
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, HOST, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function pathnameOf(url: string | undefined): string {
  const path = (url ?? "/").split("?", 1)[0];
  return path === undefined || path === "" ? "/" : path;
}

/** Serves the provider under the issuer's path, the way a mount would; false when the path is outside it. */
function stripMountPath(req: IncomingMessage, path: string, mountPath: string): boolean {
  if (mountPath === "") return true;
  if (path !== mountPath && !path.startsWith(`${mountPath}/`)) return false;
  const originalUrl = req.url ?? "/";
  const rest = originalUrl.slice(mountPath.length);
  // oidc-provider derives the mount from `originalUrl` (the Express convention) when it renders discovery.
  Object.assign(req, { originalUrl });
  req.url = rest.startsWith("/") ? rest : `/${rest}`;
  return true;
}

/** Internal failures only: name and message, never request parameters (they carry tokens and secrets). */
function logServerError(error: unknown): void {
  const description = error instanceof Error ? `${error.name}: ${error.message}` : "unknown error";
  process.stderr.write(`demo-auth-server: server error: ${description}\n`);
}
