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
/** The API server's limit on an Event's note. */
const maxNoteLength = 1024;

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
      const note =
        event.note.length <= maxNoteLength ? event.note : `${event.note.slice(0, maxNoteLength - 1)}…`;
      // Names must be unique; this is how client-go names them too (object name + time), plus randomness.
      const name = `${subject.name.slice(0, 200)}.${nowMs.toString(16)}${randomBytes(4).toString("hex")}`;
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
          { err: describeError(error), object: `${subject.namespace}/${subject.name}`, reason: event.reason },
          "could not record Event",
        );
      }
    },
  };
}
