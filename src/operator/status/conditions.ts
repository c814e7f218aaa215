// What an object's status says, computed purely: the Accepted condition from its compile result, the Programmed
// condition from the fleet, observedGeneration, the fleet counts, and lastTransitionTime carried over from the
// status already on the object unless the condition's status flips. Equal inputs give an equal status, so the
// writer can compare before it writes and never loops on its own writes.
import { z } from "zod";
import type { ObjectResult } from "../../compile/compile.ts";
import { canonicalJson } from "../../compile/compile.ts";
import { compileReasonDescriptions } from "../../compile/reasons.ts";
import { MAX_STATUS_CONDITIONS } from "../../resources/common.ts";

/** Reasons of the Programmed condition: a closed set (docs/status-reasons.md lists them). */
export const programmedReasonSchema = z.enum([
  "Programmed",
  "Pending",
  "NoGateways",
  "Rejected",
  "NotAccepted",
]);
export type ProgrammedReason = z.infer<typeof programmedReasonSchema>;

/** One sentence per Programmed reason, with the condition status it goes with. */
export const programmedReasonDescriptions: Readonly<
  Record<ProgrammedReason, { readonly status: "True" | "False"; readonly meaning: string }>
> = {
  Programmed: {
    status: "True",
    meaning: "Every connected gateway serves a revision that contains the object as it is now.",
  },
  Pending: {
    status: "False",
    meaning:
      "Some connected gateways have not yet acknowledged a revision that contains the object as it is now.",
  },
  NoGateways: {
    status: "False",
    meaning:
      "No gateway is connected to the operator: none can be told of changes (gateways keep serving their last snapshot).",
  },
  Rejected: {
    status: "False",
    meaning:
      "A gateway refused (NACKed) the revision that contains the object; the message names it and why.",
  },
  NotAccepted: {
    status: "False",
    meaning: "The object is not accepted (see Accepted), so it is in no revision.",
  },
};

/** A status condition as written (metav1.Condition). */
export interface Condition {
  readonly type: string;
  readonly status: "True" | "False" | "Unknown";
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime: string;
}

/** The fleet as it concerns one object: how many connected gateways serve it as it is now. */
export interface FleetCounts {
  /**
   * The first revision that contained the object as it is now (the current revision when not accepted); absent
   * before the first compile. Never null (the CRD's schema takes a string).
   */
  readonly revision?: string;
  /** Connected gateways serving a revision that contains it. */
  readonly programmed: number;
  /** Connected gateways. */
  readonly gateways: number;
}

/** The status the operator writes. */
export interface ObjectStatus {
  readonly observedGeneration?: number;
  readonly conditions: readonly Condition[];
  readonly fleet: FleetCounts;
}

/** Whether the object's gateways serve it: the inputs of the Programmed condition. */
export interface ProgrammedInput {
  readonly counts: FleetCounts;
  /** `gateway: reason` of connected gateways that NACKed a revision containing the object. */
  readonly rejections: readonly string[];
}

export const acceptedConditionType = "Accepted";
export const programmedConditionType = "Programmed";
/** The API server's limit on a condition message. */
const maxMessageLength = 32_768;

/** The Programmed reason and status for an object. */
export function selectProgrammedReason(accepted: boolean, input: ProgrammedInput): ProgrammedReason {
  if (!accepted) return "NotAccepted";
  if (input.counts.gateways === 0) return "NoGateways";
  if (input.counts.programmed >= input.counts.gateways) return "Programmed";
  return input.rejections.length > 0 ? "Rejected" : "Pending";
}

/** "revision R programmed on k/n gateways" (+ who rejected it). */
export function describeProgrammed(reason: ProgrammedReason, input: ProgrammedInput): string {
  const { revision, programmed, gateways } = input.counts;
  if (reason === "NotAccepted") return "not accepted, so no gateway serves it";
  const base = `revision ${revision ?? "(none)"} programmed on ${programmed}/${gateways} gateways`;
  if (reason !== "Rejected") return base;
  const shown = input.rejections.slice(0, 5).join("; ");
  const more = input.rejections.length > 5 ? `; and ${input.rejections.length - 5} more` : "";
  return `${base}; rejected by ${shown}${more}`;
}

function truncate(message: string): string {
  return message.length <= maxMessageLength ? message : `${message.slice(0, maxMessageLength - 1)}…`;
}

/** The message of the Accepted condition: every compile message, joined. */
export function describeAccepted(result: Pick<ObjectResult, "accepted" | "messages">): string {
  if (result.accepted || result.messages.length === 0) return compileReasonDescriptions.Accepted;
  return truncate(result.messages.join("; "));
}

/**
 * Keeps `lastTransitionTime` of the existing condition of the same type unless its status changes; a new or
 * flipped condition gets `nowIso`.
 */
export function withTransitionTime(
  desired: Omit<Condition, "lastTransitionTime">,
  existing: readonly Condition[],
  nowIso: string,
): Condition {
  const previous = existing.find((condition) => condition.type === desired.type);
  const lastTransitionTime =
    previous !== undefined &&
    previous.status === desired.status &&
    typeof previous.lastTransitionTime === "string"
      ? previous.lastTransitionTime
      : nowIso;
  return { ...desired, lastTransitionTime };
}

/** Reads the conditions of a status seen on the API server (tolerating anything). */
export function readConditions(status: unknown): Condition[] {
  if (typeof status !== "object" || status === null) return [];
  const conditions = (status as { conditions?: unknown }).conditions;
  if (!Array.isArray(conditions)) return [];
  return conditions.filter(
    (condition): condition is Condition =>
      typeof condition === "object" &&
      condition !== null &&
      typeof (condition as { type?: unknown }).type === "string" &&
      typeof (condition as { status?: unknown }).status === "string",
  );
}

/**
 * The Programmed condition and fleet counts already on the object, when they may stand while the fleet view is
 * settling: written for this generation and for the revision that contains the object as it is now, with more
 * gateways programmed than the view shows now. A rejection is never held back.
 */
function heldProgrammed(
  existingStatus: unknown,
  existing: readonly Condition[],
  generation: number | undefined,
  programmed: ProgrammedInput,
  reason: ProgrammedReason,
): { condition: Condition; fleet: FleetCounts } | undefined {
  if (reason === "Rejected" || reason === "NotAccepted") return undefined;
  const condition = existing.find((c) => c.type === programmedConditionType);
  if (condition === undefined || condition.observedGeneration !== generation) return undefined;
  if (typeof condition.lastTransitionTime !== "string" || typeof condition.message !== "string")
    return undefined;
  const stored: unknown = (existingStatus as { fleet?: unknown }).fleet;
  if (typeof stored !== "object" || stored === null) return undefined;
  const fleet = stored as Partial<Record<keyof FleetCounts, unknown>>;
  if (
    typeof fleet.programmed !== "number" ||
    typeof fleet.gateways !== "number" ||
    fleet.revision !== programmed.counts.revision ||
    fleet.programmed <= programmed.counts.programmed
  )
    return undefined;
  return {
    condition,
    fleet: {
      ...(typeof fleet.revision === "string" ? { revision: fleet.revision } : {}),
      programmed: fleet.programmed,
      gateways: fleet.gateways,
    },
  };
}

/** The full status of one object. Conditions of other types already on the object are kept after ours. */
export function computeStatus(options: {
  readonly result: Pick<ObjectResult, "accepted" | "reason" | "messages" | "generation">;
  readonly programmed: ProgrammedInput;
  readonly existing: unknown;
  readonly nowIso: string;
  /**
   * The fleet view is settling (see FleetSource.settling): a Programmed condition already written for this
   * generation and revision is kept rather than lowered to what the incomplete view shows.
   */
  readonly holdProgrammed?: boolean;
}): ObjectStatus {
  const { result, programmed, nowIso } = options;
  const existing = readConditions(options.existing);
  const generation = result.generation;
  const withGeneration = generation === undefined ? {} : { observedGeneration: generation };
  const accepted = withTransitionTime(
    {
      type: acceptedConditionType,
      status: result.accepted ? "True" : "False",
      reason: result.reason,
      message: describeAccepted(result),
      ...withGeneration,
    },
    existing,
    nowIso,
  );
  const programmedReason = selectProgrammedReason(result.accepted, programmed);
  const held =
    options.holdProgrammed === true
      ? heldProgrammed(options.existing, existing, generation, programmed, programmedReason)
      : undefined;
  const programmedCondition =
    held?.condition ??
    withTransitionTime(
      {
        type: programmedConditionType,
        status: programmedReason === "Programmed" ? "True" : "False",
        reason: programmedReason,
        message: describeProgrammed(programmedReason, programmed),
        ...withGeneration,
      },
      existing,
      nowIso,
    );
  // Other controllers' conditions are kept, as many as the CRD's list bound leaves room for (the first ones):
  // one too many and the API server would refuse every status write of this object.
  const foreign = existing
    .filter(
      (condition) => condition.type !== acceptedConditionType && condition.type !== programmedConditionType,
    )
    .slice(0, MAX_STATUS_CONDITIONS - 2);
  return {
    ...withGeneration,
    conditions: [accepted, programmedCondition, ...foreign],
    fleet: held?.fleet ?? programmed.counts,
  };
}

/**
 * Whether the status on the object already says what `desired` says (only the fields we write count). With
 * `ignoreFleet`, `fleet` is left out: a CRD whose status schema lacks it prunes it on every write.
 */
export function statusUpToDate(
  existing: unknown,
  desired: ObjectStatus,
  options: { ignoreFleet?: boolean } = {},
): boolean {
  if (typeof existing !== "object" || existing === null) return false;
  const current = existing as { observedGeneration?: unknown; conditions?: unknown; fleet?: unknown };
  const pick = (status: { observedGeneration?: unknown; conditions?: unknown; fleet?: unknown }) =>
    canonicalJson({
      observedGeneration: status.observedGeneration ?? null,
      conditions: status.conditions ?? [],
      fleet: options.ignoreFleet === true ? null : (status.fleet ?? null),
    });
  return pick(current) === pick(desired);
}
