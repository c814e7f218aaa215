// Which gateways serve an object as it is now. Each compile is recorded as revision → (object → fingerprint of
// what the object contributes); a gateway serves the object when the revision it serves holds the object's
// current fingerprint. So a change to one route does not make every other route "Pending" again, and an object
// reports the first revision that carried its current form.
import { createHash } from "node:crypto";
import { canonicalJson, type CompileResult } from "../../compile/compile.ts";
import type { FleetView } from "../distribute/distributor.ts";
import type { FleetCounts, ProgrammedInput } from "./conditions.ts";
import { objectKey } from "../source/object-store.ts";

/** The kinds that carry a status. */
export const statusKinds = ["ApiRoute", "ScopePolicy", "AuthServer"] as const;
export type StatusKind = (typeof statusKinds)[number];

export function isStatusKind(kind: string): kind is StatusKind {
  return (statusKinds as readonly string[]).includes(kind);
}

interface FirstSeen {
  readonly fingerprint: string;
  readonly revision: string;
}

/** Remembers the last `maxRevisions` compiles. */
export class RevisionLedger {
  readonly #maxRevisions: number;
  /** revision → object key → fingerprint; Map order is age (oldest first). */
  readonly #revisions = new Map<string, ReadonlyMap<string, string>>();
  readonly #firstSeen = new Map<string, FirstSeen>();
  #current: string | undefined;

  constructor(maxRevisions = 32) {
    this.#maxRevisions = maxRevisions;
  }

  /** The revision of the last recorded compile. */
  get current(): string | undefined {
    return this.#current;
  }

  /** Records a compile. `uidOf` gives the uid of an object (a re-created object is a different object). */
  record(
    result: CompileResult,
    uidOf: (kind: StatusKind, namespace: string, name: string) => string | undefined,
  ): void {
    const { snapshot } = result;
    const revision = snapshot.revision;
    const routesById = new Map(snapshot.routes.map((route) => [route.id, route]));
    const authServersById = new Map(snapshot.authServers.map((authServer) => [authServer.id, authServer]));
    const contents = new Map<string, string>();
    for (const object of result.perObjectResults) {
      if (!object.accepted || !isStatusKind(object.kind)) continue;
      const key = objectKey(object.kind, object.namespace, object.name);
      const contribution = {
        uid: uidOf(object.kind, object.namespace, object.name) ?? null,
        generation: object.generation ?? null,
        routes: object.routeIds.map((id) => routesById.get(id) ?? null),
        authServer:
          object.kind === "AuthServer"
            ? (authServersById.get(`${object.namespace}/${object.name}`) ?? null)
            : null,
      };
      const fingerprint = createHash("sha256").update(canonicalJson(contribution)).digest("hex").slice(0, 24);
      contents.set(key, fingerprint);
      const seen = this.#firstSeen.get(key);
      if (seen?.fingerprint !== fingerprint) this.#firstSeen.set(key, { fingerprint, revision });
    }
    for (const key of this.#firstSeen.keys()) if (!contents.has(key)) this.#firstSeen.delete(key);
    this.#revisions.delete(revision);
    this.#revisions.set(revision, contents);
    while (this.#revisions.size > this.#maxRevisions) {
      const oldest = this.#revisions.keys().next().value;
      if (oldest === undefined) break;
      this.#revisions.delete(oldest);
    }
    this.#current = revision;
  }

  /** How the fleet serves one object (not accepted objects: served by none). */
  programmedInput(kind: StatusKind, namespace: string, name: string, fleet: FleetView): ProgrammedInput {
    const connected = fleet.gateways.filter((gateway) => gateway.connected);
    const key = objectKey(kind, namespace, name);
    const seen = this.#firstSeen.get(key);
    const fallbackRevision = this.#current ?? fleet.revision;
    if (seen === undefined) {
      const counts: FleetCounts = {
        ...(fallbackRevision === undefined ? {} : { revision: fallbackRevision }),
        programmed: 0,
        gateways: connected.length,
      };
      return { counts, rejections: [] };
    }
    let programmed = 0;
    const rejections: string[] = [];
    for (const gateway of connected) {
      const served = gateway.revision === undefined ? undefined : this.#revisions.get(gateway.revision);
      if (served?.get(key) === seen.fingerprint) {
        programmed += 1;
      } else if (gateway.status === "NACK") {
        rejections.push(`${gateway.name}: ${gateway.reason ?? "no reason given"}`);
      }
    }
    return { counts: { revision: seen.revision, programmed, gateways: connected.length }, rejections };
  }
}
