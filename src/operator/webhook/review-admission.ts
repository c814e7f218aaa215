// Judges one admission request with the same pure compile the operator runs: the incoming object is put into
// (or, on DELETE, taken out of) the world the operator's store holds, and the object's own verdict decides.
import { canonicalJson, compile, type ObjectResult, type SourceObject } from "../../compile/compile.ts";
import type { CompileReason } from "../../compile/reasons.ts";
import { apiVersion as phantomgateApiVersion, phantomgateKinds } from "../../resources/common.ts";
import {
  parseAdmissionReview,
  toAdmissionReview,
  InvalidAdmissionReviewError,
  type AdmissionRequest,
  type AdmissionResponse,
  type AdmissionReviewResponse,
} from "./admission-review.ts";

/** The API group whose kinds the webhook judges. */
export const phantomgateGroup = phantomgateApiVersion.split("/")[0] ?? "phantomgate.dev";

/**
 * Denial reasons that depend on other objects, and so can come from a world that lags behind the API server
 * by a moment (the operator's informers see a change shortly after it was stored): `kubectl apply -f dir/`
 * creates a ScopePolicy and, milliseconds later, the route that references it; renaming a route deletes the
 * old one just before creating the new one. The server re-reviews these before denying.
 */
export const crossObjectReasons: ReadonlySet<CompileReason> = new Set([
  "UnknownScopePolicy",
  "UnknownAuthServer",
  "UnknownScope",
  "IncompatibleAuthServer",
  "Conflicted",
]);

/** HTTP status in a denial's `metav1.Status`: the request is refused by policy, whatever the reason. */
const deniedCode = 403;
/** kubectl prints one line per warning; the API server truncates long lists, so keep them few. */
const maxWarnings = 10;
/** Messages in one denial; compile lists one per problem, which can be many for a large route. */
const maxDenialMessages = 20;
/**
 * Stand-in for every referenced Secret value: a private-JWK-shaped JSON, so it also passes the
 * private_key_jwt shape check. Never leaves this module: only verdicts are read from the compile.
 */
const assumedSecretValue = JSON.stringify({ kty: "assumed", d: "assumed" });

interface Identity {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

/**
 * Validates one AdmissionReview against the current world (objects the operator's store holds).
 *
 * - CREATE/UPDATE of an ApiRoute, ScopePolicy or AuthServer: compiled with the incoming object in place of
 *   the stored one; the object is denied when its own result is rejected, with compile's messages and reason.
 *   An incoming object counts as the newest for route conflicts (its creationTimestamp is ignored on CREATE).
 * - UPDATE that leaves `spec` unchanged (labels, finalizers, deletion): allowed without judging, so cleanup
 *   of an object that got in while the webhook was off is never blocked.
 * - DELETE: always allowed; objects that the deletion breaks are named in `warnings`.
 * - Objects that a change breaks (accepted before, rejected after): named in `warnings`, never denied.
 * - Secrets are not judged: every Secret an AuthServer references is assumed to exist with the key set
 *   (the store holds only referenced Secrets, and Secrets change without passing this webhook); a missing
 *   one shows as SecretNotFound in the AuthServer's status.
 * - Other kinds, subresources and CONNECT: allowed.
 *
 * Throws {@link InvalidAdmissionReviewError} when `review` is not an admission.k8s.io/v1 AdmissionReview.
 */
export function reviewAdmission(
  review: unknown,
  world: () => readonly SourceObject[],
): AdmissionReviewResponse {
  return toAdmissionReview(judgeRequest(parseAdmissionReview(review), world));
}

function judgeRequest(request: AdmissionRequest, world: () => readonly SourceObject[]): AdmissionResponse {
  const allow = (warnings: readonly string[] = []): AdmissionResponse => ({
    uid: request.uid,
    allowed: true,
    ...(warnings.length === 0 ? {} : { warnings }),
  });
  const judged =
    request.kind.group === phantomgateGroup &&
    phantomgateKinds.some((kind) => kind === request.kind.kind) &&
    (request.subResource ?? "") === "";
  if (!judged) return allow();

  switch (request.operation) {
    case "CONNECT":
      return allow();
    case "DELETE": {
      // The API server sends the object being deleted; the stored copy stands in if it did not.
      const sent = isRecord(request.oldObject) ? request.oldObject : undefined;
      const identity = identify(request, sent ?? {});
      const stored = world();
      const storedCopy = findStored(stored, identity);
      const old = sent ?? storedCopy;
      if (old === undefined) return allow();
      const others = storedObjectsExcept(stored, identity);
      const after = compileWorld(others, [...others, old]);
      const before = () =>
        storedCopy === undefined
          ? compileWorld([...others, old], [...others, old])
          : judgeStoredWorld(stored);
      return allow(collateralWarnings(after, before, identity));
    }
    case "CREATE":
    case "UPDATE": {
      const object = requireRecord(request.object, "object");
      const old = request.operation === "UPDATE" ? requireRecord(request.oldObject, "oldObject") : undefined;
      if (old !== undefined && canonicalJson(old["spec"]) === canonicalJson(object["spec"])) return allow();

      const identity = identify(request, object);
      const incoming = asStored(object, identity, request.operation);
      const stored = world();
      const others = storedObjectsExcept(stored, identity);
      const everything = [...others, incoming, ...(old === undefined ? [] : [old])];
      const after = compileWorld([...others, incoming], everything);
      const own = after.find((result) => sameIdentity(result, identity));
      if (own !== undefined && !own.accepted) {
        return { uid: request.uid, allowed: false, status: describeDenial(own) };
      }
      // The world before the change is the store as it is, unless the store has not seen the old object yet.
      const before = () =>
        old !== undefined && findStored(stored, identity) === undefined
          ? compileWorld([...others, old], everything)
          : judgeStoredWorld(stored);
      return allow(collateralWarnings(after, before, identity));
    }
  }
}

/** The last stored world judged, and the verdicts: most reviews see the same world as the one before. */
let storedWorldMemo: { objects: readonly unknown[]; results: readonly ObjectResult[] } | undefined;

/**
 * Verdicts on the stored world as it is, remembered while the world holds the same objects (compared by
 * reference, so a store that swaps in a new object on every change is never served a stale verdict).
 */
function judgeStoredWorld(stored: readonly SourceObject[]): readonly ObjectResult[] {
  const objects = stored.map((source) => source.object);
  const memo = storedWorldMemo;
  if (memo?.objects.length === objects.length && memo.objects.every((object, i) => object === objects[i])) {
    return memo.results;
  }
  const withoutSecrets = objects.filter((object) => !isSecret(object));
  const results = compileWorld(withoutSecrets, withoutSecrets);
  storedWorldMemo = { objects, results };
  return results;
}

/** What the API server would print: compile's messages for the object, under its reason. */
function describeDenial(result: ObjectResult): { code: number; reason: string; message: string } {
  const shown = result.messages.slice(0, maxDenialMessages);
  const more = result.messages.length - shown.length;
  return {
    code: deniedCode,
    reason: result.reason,
    message: shown.join("; ") + (more > 0 ? `; … and ${more} more` : ""),
  };
}

/** Warnings for objects other than `changed` that were accepted before the change and are rejected after. */
function collateralWarnings(
  after: readonly ObjectResult[],
  before: () => readonly ObjectResult[],
  changed: Identity,
): string[] {
  const rejected = after.filter(
    (result) => !result.accepted && result.kind !== "Secret" && !sameIdentity(result, changed),
  );
  // Most changes break nothing: compile the world as it was only when something is rejected now.
  if (rejected.length === 0) return [];
  const acceptedBefore = new Set(
    before()
      .filter((r) => r.accepted)
      .map((r) => identityKey(r)),
  );
  const broken = rejected.filter((result) => acceptedBefore.has(identityKey(result)));
  const warnings = broken.slice(0, maxWarnings).map((result) => {
    const [first = "", ...rest] = result.messages;
    const more = rest.length > 0 ? ` (and ${rest.length} more)` : "";
    return `${result.kind} ${result.namespace}/${result.name} is rejected after this change (${result.reason}): ${first}${more}`;
  });
  if (broken.length > maxWarnings) {
    warnings.push(`… and ${broken.length - maxWarnings} more objects are rejected after this change`);
  }
  return warnings;
}

/**
 * Compiles `objects` plus a stand-in for every Secret an AuthServer in `referencing` points at (see
 * reviewAdmission: the webhook never judges Secrets). A stand-in for a Secret only the incoming object
 * references changes no other object's verdict, so before and after compiles stay comparable.
 */
function compileWorld(objects: readonly unknown[], referencing: readonly unknown[]): ObjectResult[] {
  const sources: SourceObject[] = [...objects, ...assumeReferencedSecrets(referencing)].map((object) => ({
    object,
  }));
  return compile({ objects: sources }).perObjectResults;
}

function assumeReferencedSecrets(objects: readonly unknown[]): unknown[] {
  const keysBySecret = new Map<string, { namespace: string; name: string; keys: Set<string> }>();
  for (const object of objects) {
    if (!isRecord(object) || object["kind"] !== "AuthServer") continue;
    const ref = readPath(object, ["spec", "clientAuthentication", "clientSecret", "secretRef"]);
    if (!isRecord(ref) || typeof ref["name"] !== "string" || typeof ref["key"] !== "string") continue;
    const namespace = identifyRaw(object)?.namespace ?? "default";
    const id = `${namespace}/${ref["name"]}`;
    const entry = keysBySecret.get(id) ?? { namespace, name: ref["name"], keys: new Set<string>() };
    entry.keys.add(ref["key"]);
    keysBySecret.set(id, entry);
  }
  return [...keysBySecret.values()].map(({ namespace, name, keys }) => ({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { namespace, name },
    stringData: Object.fromEntries([...keys].map((key) => [key, assumedSecretValue])),
  }));
}

/** Stored objects other than `identity`, without Secrets (stand-ins replace them). */
function storedObjectsExcept(world: readonly SourceObject[], identity: Identity): unknown[] {
  return world
    .map((source) => source.object)
    .filter((object) => {
      if (isSecret(object)) return false;
      const stored = identifyRaw(object);
      return stored === undefined || !sameIdentity(stored, identity);
    });
}

function findStored(world: readonly SourceObject[], identity: Identity): Record<string, unknown> | undefined {
  for (const { object } of world) {
    const stored = identifyRaw(object);
    if (isRecord(object) && stored !== undefined && sameIdentity(stored, identity)) return object;
  }
  return undefined;
}

function isSecret(object: unknown): boolean {
  return isRecord(object) && object["apiVersion"] === "v1" && object["kind"] === "Secret";
}

/**
 * The incoming object as compile should see it: the namespace from the request when the object omits it,
 * and on CREATE no creationTimestamp (the API server sets one before validating webhooks run; ignoring it
 * makes the new object the newest, so it can never take a claim from a stored route created in the same second).
 */
function asStored(
  object: Record<string, unknown>,
  identity: Identity,
  operation: "CREATE" | "UPDATE",
): Record<string, unknown> {
  const metadata: Record<string, unknown> = {
    ...(isRecord(object["metadata"]) ? object["metadata"] : {}),
    namespace: identity.namespace,
  };
  if (operation === "CREATE") delete metadata["creationTimestamp"];
  return { ...object, metadata };
}

function identify(request: AdmissionRequest, object: Record<string, unknown>): Identity {
  const raw = identifyRaw(object);
  return {
    kind: request.kind.kind,
    namespace: raw?.namespaceSet === true ? raw.namespace : (request.namespace ?? "default"),
    name: raw?.name ?? request.name ?? "",
  };
}

function identifyRaw(object: unknown): (Identity & { namespaceSet: boolean }) | undefined {
  if (!isRecord(object)) return undefined;
  const metadata = object["metadata"];
  if (!isRecord(metadata) || typeof object["kind"] !== "string" || typeof metadata["name"] !== "string") {
    return undefined;
  }
  const namespace = metadata["namespace"];
  const namespaceSet = typeof namespace === "string" && namespace !== "";
  return {
    kind: object["kind"],
    namespace: namespaceSet ? namespace : "default",
    name: metadata["name"],
    namespaceSet,
  };
}

function requireRecord(value: unknown, field: "object" | "oldObject"): Record<string, unknown> {
  if (!isRecord(value)) {
    throw new InvalidAdmissionReviewError(`request.${field} must be an object for this operation`);
  }
  return value;
}

function sameIdentity(a: Identity, b: Identity): boolean {
  return a.kind === b.kind && a.namespace === b.namespace && a.name === b.name;
}

function identityKey(identity: Identity): string {
  return `${identity.kind} ${identity.namespace}/${identity.name}`;
}

function readPath(value: unknown, path: readonly string[]): unknown {
  let current = value;
  for (const segment of path) {
    if (!isRecord(current)) return undefined;
    current = current[segment];
  }
  return current;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
