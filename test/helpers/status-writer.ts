// Stand-ins for the status stage's neighbours in tests that drive it alone: a compile result that never changes,
// a fleet view that never changes, an event recorder that records nothing.
import type { CompileResult } from "../../src/compile/compile.ts";
import type { FleetView } from "../../src/operator/distribute/distributor.ts";
import type { ObjectStore } from "../../src/operator/source/object-store.ts";
import type { EventRecorder } from "../../src/operator/status/events.ts";
import type { FleetSource, StatusWriterOptions } from "../../src/operator/status/status-writer.ts";

/** The reconciler as the status stage sees it, always holding `result` (compiled from `store` as it is). */
export function fixedReconciler(
  store: ObjectStore,
  result: CompileResult,
): StatusWriterOptions["reconciler"] {
  return {
    current: () => ({ result, specVersion: store.specVersion, compiledAtMs: 0 }),
    onCompiled: () => () => undefined,
  };
}

/** A fleet that shows `view()` (by default: revision r1, no gateway) and never announces a change. */
export function fixedFleet(
  view: () => FleetView = () => ({ revision: "r1", gateways: [], connected: 0, programmed: 0 }),
): FleetSource {
  return { view, onChange: () => () => undefined };
}

/** An event recorder that drops every event. */
export const noEvents: EventRecorder = { record: () => Promise.resolve() };
