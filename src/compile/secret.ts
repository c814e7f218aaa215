// Compiles Secrets into decoded key/value maps so AuthServers can resolve client secrets by reference.
import type { Secret } from "../resources/secret.ts";

/** Decoded values of one Secret by key; `stringData` wins over `data`, as the API server merges them. */
export function compileSecret(secret: Secret): ReadonlyMap<string, string> {
  const values = new Map<string, string>();
  for (const [key, encoded] of Object.entries(secret.data ?? {})) {
    values.set(key, Buffer.from(encoded, "base64").toString("utf8"));
  }
  for (const [key, value] of Object.entries(secret.stringData ?? {})) {
    values.set(key, value);
  }
  return values;
}
