// Compiles an AuthServer into the snapshot form: defaults applied, client secret resolved from its Secret.
import type { AuthServer } from "../resources/auth-server.ts";
import type { CompiledAuthServer } from "../snapshot/snapshot.ts";
import { fieldProblem, type Problem } from "./reasons.ts";

/** A Secret as AuthServers see it: its decoded values by key, or rejected (its own result says why). */
export type SecretOutcome =
  { readonly accepted: true; readonly values: ReadonlyMap<string, string> } | { readonly accepted: false };

/** Secrets by `namespace/name`. */
export type SecretIndex = ReadonlyMap<string, SecretOutcome>;

/** The compiled AuthServer, or why it is excluded (its routes then report UnknownAuthServer). */
export type AuthServerOutcome =
  | { readonly accepted: true; readonly authServer: CompiledAuthServer }
  | { readonly accepted: false; readonly problems: readonly Problem[] };

const clientSecretPath = ["spec", "clientAuthentication", "clientSecret"] as const;

/**
 * Compiles one AuthServer. Messages name the Secret and key but never a value: they end up in status,
 * Events and logs.
 */
/**
 * `secretLabelSelector`: the labels the Secrets were listed with (the operator's `--secret-label-selector`), named
 * when a referenced Secret is missing, since one without those labels is never read.
 */
export function compileAuthServer(
  authServer: AuthServer,
  secrets: SecretIndex,
  secretLabelSelector?: string,
): AuthServerOutcome {
  const { metadata, spec } = authServer;
  const secret = resolveClientSecret(authServer, secrets, secretLabelSelector);
  if (typeof secret !== "string") return { accepted: false, problems: [secret] };

  if (spec.clientAuthentication.method === "private_key_jwt" && !isPrivateJwk(secret)) {
    return {
      accepted: false,
      problems: [
        fieldProblem(
          "Invalid",
          clientSecretPath,
          "private_key_jwt needs a private JWK as JSON (an object with kty and d)",
        ),
      ],
    };
  }

  return {
    accepted: true,
    authServer: {
      id: `${metadata.namespace}/${metadata.name}`,
      issuer: spec.issuer,
      discovery: spec.discovery,
      endpoints: { ...spec.endpoints },
      client: { id: spec.clientAuthentication.clientId, method: spec.clientAuthentication.method, secret },
      introspectionResponse: spec.introspection.responseType,
      allowedAlgorithms: [...new Set(spec.allowedAlgorithms)],
      clockSkewSeconds: spec.clockSkewSeconds,
      // Only when set: a snapshot without it means what it meant before the field existed.
      ...(spec.requireAccessTokenTyp === true ? { requireAccessTokenTyp: true as const } : {}),
      cache: { ...spec.cache },
      timeouts: { ...spec.timeouts },
      jwksCooldownMs: spec.jwksCooldownMs,
    },
  };
}

function resolveClientSecret(
  authServer: AuthServer,
  secrets: SecretIndex,
  secretLabelSelector: string | undefined,
): string | Problem {
  const { value, secretRef } = authServer.spec.clientAuthentication.clientSecret;
  if (value !== undefined) return value;
  // The schema guarantees exactly one of value and secretRef.
  if (secretRef === undefined)
    return fieldProblem("Invalid", clientSecretPath, "set exactly one of value or secretRef");

  const path = [...clientSecretPath, "secretRef"];
  const secretId = `${authServer.metadata.namespace}/${secretRef.name}`;
  const secret = secrets.get(secretId);
  if (secret === undefined) {
    const listed =
      secretLabelSelector === undefined || secretLabelSelector === ""
        ? ""
        : ` among the Secrets labelled ${secretLabelSelector} (the only ones the operator reads)`;
    return fieldProblem("SecretNotFound", path, `Secret ${secretId} not found${listed}`);
  }
  if (!secret.accepted) return fieldProblem("SecretNotFound", path, `Secret ${secretId} is not valid`);
  const resolved = secret.values.get(secretRef.key);
  if (resolved === undefined) {
    return fieldProblem("SecretNotFound", path, `Secret ${secretId} has no key '${secretRef.key}'`);
  }
  if (resolved === "") {
    return fieldProblem("SecretNotFound", path, `key '${secretRef.key}' of Secret ${secretId} is empty`);
  }
  return resolved;
}

function isPrivateJwk(text: string): boolean {
  try {
    const jwk: unknown = JSON.parse(text);
    return typeof jwk === "object" && jwk !== null && "kty" in jwk && "d" in jwk;
  } catch {
    return false;
  }
}
