// Where the SDK gets verification keys: a remote JWKS (the gateway's admin port or the authorization server),
// fetched through an injected undici dispatcher with a deadline and a size bound and cached by the token layer's
// key source (refetch on unknown `kid`, rate-limited), or a local key set given in code.
import { createLocalJWKSet, type JSONWebKeySet } from "jose";
import { Agent, type Dispatcher } from "undici";
import type { Clock } from "../tokens/clock.ts";
import { createJwksKeySource, type JwksKeySource } from "../tokens/jwks.ts";
import { SdkError } from "./errors.ts";

/** Largest JWKS document read; a bigger one is treated as a broken key server. */
const MAX_JWKS_BYTES = 64 * 1024;

/** Where keys come from: exactly one of a JWKS URL or a local key set. */
export type KeySource =
  | { readonly jwksUri: string; readonly jwks?: undefined }
  | { readonly jwks: JSONWebKeySet; readonly jwksUri?: undefined };

/** How remote keys are fetched: through which dispatcher, by which clock, with which deadline and cooldown. */
export interface RemoteKeyOptions {
  readonly dispatcher: Dispatcher;
  readonly clock: Clock;
  readonly timeoutMs: number;
  readonly cooldownMs: number;
}

/** The injected dispatcher, or a keep-alive pool the caller then owns (and closes). */
export function dispatcherOrOwn(
  given: Dispatcher | undefined,
  connections: number,
): { readonly dispatcher: Dispatcher; readonly owned: Agent | undefined } {
  if (given !== undefined) return { dispatcher: given, owned: undefined };
  const owned = new Agent({ connections, keepAliveTimeout: 30_000 });
  return { dispatcher: owned, owned };
}

function keysUnavailable(reason: string): SdkError {
  return new SdkError("PG_SDK_KEYS_UNAVAILABLE", reason);
}

async function fetchJwksDocument(url: URL, options: RemoteKeyOptions): Promise<unknown> {
  const signal = AbortSignal.timeout(options.timeoutMs);
  let response: Dispatcher.ResponseData;
  try {
    response = await options.dispatcher.request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: "GET",
      headers: { accept: "application/jwk-set+json, application/json" },
      signal,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    throw keysUnavailable(
      signal.aborted
        ? `JWKS ${url.href}: no answer within ${options.timeoutMs} ms`
        : `JWKS ${url.href}: network error (${typeof code === "string" ? code : "unknown"})`,
    );
  }
  if (response.statusCode !== 200) {
    await response.body.dump().catch(() => undefined);
    throw keysUnavailable(`JWKS ${url.href} answered HTTP ${response.statusCode}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      // Throwing out of the loop closes the stream (the iterator's return()).
      if (size > MAX_JWKS_BYTES) {
        throw keysUnavailable(`JWKS ${url.href} exceeds ${MAX_JWKS_BYTES} bytes`);
      }
      chunks.push(chunk);
    }
    return JSON.parse(Buffer.concat(chunks, size).toString("utf8")) as unknown;
  } catch (error) {
    if (error instanceof SdkError) throw error;
    throw keysUnavailable(`JWKS ${url.href} could not be read as JSON`);
  }
}

/**
 * Builds the key resolver for a {@link KeySource}: jose's `getKey`, and for remote keys a `refresh` for JWTs
 * without `kid` after a key rotation. Remote keys are fetched on first use, not here.
 */
export function createKeyResolver(
  source: KeySource,
  options: RemoteKeyOptions,
): Pick<JwksKeySource, "getKey" | "refresh"> {
  if (source.jwks !== undefined) {
    try {
      return { getKey: createLocalJWKSet(source.jwks) };
    } catch {
      throw new SdkError("PG_SDK_CONFIG_INVALID", "jwks is not a JSON Web Key Set");
    }
  }
  const url = new URL(source.jwksUri);
  const keys = createJwksKeySource({
    clock: options.clock,
    cooldownMs: options.cooldownMs,
    fetchJwks: () => fetchJwksDocument(url, options),
  });
  return { getKey: keys.getKey, refresh: () => keys.refresh?.() ?? Promise.resolve(false) };
}
