// Kubernetes Events (events.k8s.io/v1) about objects, written by the leader: one Warning per rejection, when an
// object's Accepted condition turns False or its reason or message changes (not on every compile).
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { events, resourcePath } from "../kube/api-resources.ts";
import type { KubeClient } from "../kube/kube-client.ts";
import { describeError } from "../kube/list-watch.ts";
import type { OperatorMetrics } from "../metrics.ts";

/** The object an Event is about. */
export interface EventSubject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string | undefined;
  readonly resourceVersion?: string | undefined;
}

export interface EventRecorder {
  /** Records an Event; failures are logged, never thrown. */
  record(
    subject: EventSubject,
    event: { type: "Normal" | "Warning"; reason: string; action: string; note: string },
  ): Promise<void>;
}

/** The controller name on every Event (`reportingController`). */
export const reportingController = "phantomgate.dev/operator";
/** The API server's limit on an Event's note, in UTF-8 bytes. */
export const maxNoteBytes = 1024;
/** How much of the regarded object's name an Event's name keeps (names may have 253 characters). */
const maxNamePrefixLength = 200;

/**
 * `note` cut to at most `maxBytes` UTF-8 bytes, ending in "..." when cut; never splits a character (the API
 * server counts bytes, not UTF-16 units, and refuses the whole Event when the note is longer).
 */
export function truncateNote(note: string, maxBytes: number = maxNoteBytes): string {
  if (Buffer.byteLength(note, "utf8") <= maxBytes) return note;
  const ellipsis = "...";
  const budget = maxBytes - ellipsis.length;
  let bytes = 0;
  let end = 0;
  for (const character of note) {
    const size = Buffer.byteLength(character, "utf8");
    if (bytes + size > budget) break;
    bytes += size;
    end += character.length;
  }
  return `${note.slice(0, end)}${ellipsis}`;
}

/**
 * A unique Event name for an object: a prefix of its name (without a trailing '-' or '.', which would make the
 * name an invalid DNS subdomain), a dot, then `suffix`.
 */
export function eventName(objectName: string, suffix: string): string {
  const prefix = objectName.slice(0, maxNamePrefixLength).replace(/[-.]+$/, "");
  return prefix === "" ? suffix : `${prefix}.${suffix}`;
}

/** Formats a time as Kubernetes MicroTime (RFC 3339 with microseconds). */
export function microTime(epochMs: number): string {
  return new Date(epochMs).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export function createEventRecorder(options: {
  readonly client: KubeClient;
  /** `reportingInstance`: this replica. */
  readonly identity: string;
  readonly logger: Logger;
  readonly metrics?: OperatorMetrics;
  readonly now?: () => number;
}): EventRecorder {
  const { client, logger, metrics } = options;
  const now = options.now ?? Date.now;
  const instance = options.identity.slice(0, 128);
  return {
    async record(subject, event) {
      const nowMs = now();
      const note = truncateNote(event.note);
      // Names must be unique; this is how client-go names them too (object name + time), plus randomness.
      const name = eventName(subject.name, `${nowMs.toString(16)}${randomBytes(4).toString("hex")}`);
      const body = {
        apiVersion: "events.k8s.io/v1",
        kind: "Event",
        metadata: { name, namespace: subject.namespace },
        eventTime: microTime(nowMs),
        reportingController,
        reportingInstance: instance,
        action: event.action,
        reason: event.reason,
        type: event.type,
        note,
        regarding: {
          apiVersion: subject.apiVersion,
          kind: subject.kind,
          namespace: subject.namespace,
          name: subject.name,
          ...(subject.uid === undefined ? {} : { uid: subject.uid }),
          ...(subject.resourceVersion === undefined ? {} : { resourceVersion: subject.resourceVersion }),
        },
      };
      try {
        await client.request({
          method: "POST",
          path: resourcePath(events, { namespace: subject.namespace }),
          body,
        });
        metrics?.events.labels(event.reason).inc();
      } catch (error) {
        logger.warn(
          {
            err: describeError(error),
            kind: subject.kind,
            object: `${subject.namespace}/${subject.name}`,
            reason: event.reason,
          },
          `could not record Event for ${subject.kind} ${subject.namespace}/${subject.name}`,
        );
      }
    },
  };
}
