// Which Secrets (and which of their keys) the AuthServers in the store reference: the only Secrets the
// operator keeps. Read from the raw objects, so an AuthServer that fails validation still names its Secret.
import type { StoredObject } from "./object-store.ts";

/** `namespace/name` of each referenced Secret → the referenced keys. */
export type SecretReferences = ReadonlyMap<string, ReadonlySet<string>>;

/** Collects the `spec.clientAuthentication.clientSecret.secretRef` of every AuthServer. */
export function collectSecretReferences(authServers: readonly StoredObject[]): SecretReferences {
  const references = new Map<string, Set<string>>();
  for (const authServer of authServers) {
    const spec = authServer.object.spec as
      | { clientAuthentication?: { clientSecret?: { secretRef?: { name?: unknown; key?: unknown } } } }
      | undefined;
    const ref = spec?.clientAuthentication?.clientSecret?.secretRef;
    if (typeof ref?.name !== "string" || typeof ref.key !== "string") continue;
    const id = `${authServer.namespace}/${ref.name}`;
    let keys = references.get(id);
    if (keys === undefined) {
      keys = new Set();
      references.set(id, keys);
    }
    keys.add(ref.key);
  }
  return references;
}

/** Namespaces where `next` references a Secret or key that `previous` did not (these need a fresh read). */
export function namespacesWithNewReferences(previous: SecretReferences, next: SecretReferences): Set<string> {
  const namespaces = new Set<string>();
  for (const [id, keys] of next) {
    const before = previous.get(id);
    if (before !== undefined && [...keys].every((key) => before.has(key))) continue;
    namespaces.add(id.slice(0, id.indexOf("/")));
  }
  return namespaces;
}

/** Whether two reference maps are equal. */
export function sameReferences(a: SecretReferences, b: SecretReferences): boolean {
  if (a.size !== b.size) return false;
  for (const [id, keys] of a) {
    const other = b.get(id);
    if (other === undefined || other.size !== keys.size || [...keys].some((key) => !other.has(key)))
      return false;
  }
  return true;
}
