// File mode snapshot source: manifests on disk → compile → snapshot, recompiled when the directory changes.
// A file that cannot be read or parsed keeps the last good snapshot serving; rejected objects are excluded
// (and reported) while the rest of the configuration is swapped in.
import type { Logger } from "pino";
import { compile, describeObject } from "../../compile/compile.ts";
import { loadManifestDirectory, watchManifestDirectory } from "../../provider/file/index.ts";
import type { Snapshot } from "../../snapshot/snapshot.ts";

export interface ConfigProblem {
  readonly file?: string | undefined;
  readonly object?: string | undefined;
  readonly message: string;
}

export interface SourceUpdate {
  /** The snapshot to serve, or undefined when the last good one must stay (file-level failure). */
  readonly snapshot: Snapshot | undefined;
  readonly problems: readonly ConfigProblem[];
  readonly fileFailures: number;
  readonly rejectedObjects: number;
}

export interface SnapshotSource {
  close(): void;
}

/** Loads the directory once now and again after every change; calls `onUpdate` each time. */
export async function startFileSource(
  dir: string,
  onUpdate: (update: SourceUpdate) => void,
  logger: Logger,
  options: { debounceMs?: number } = {},
): Promise<SnapshotSource> {
  let running = Promise.resolve();
  // The rejections of the configuration being served: still true while a later file failure keeps it serving.
  let served: { problems: readonly ConfigProblem[]; rejectedObjects: number } = {
    problems: [],
    rejectedObjects: 0,
  };
  const reload = async (): Promise<void> => {
    const loaded = await loadManifestDirectory(dir);
    const problems: ConfigProblem[] = loaded.problems.map((p) => ({ file: p.file, message: p.message }));
    if (loaded.problems.length > 0) {
      // Files that failed, not problems: one binary file can hold many.
      const fileFailures = new Set(loaded.problems.map((p) => p.file)).size;
      onUpdate({
        snapshot: undefined,
        problems: [...problems, ...served.problems],
        fileFailures,
        rejectedObjects: served.rejectedObjects,
      });
      return;
    }
    const result = compile({ objects: loaded.objects });
    let rejected = 0;
    for (const object of result.perObjectResults) {
      if (object.accepted) continue;
      rejected += 1;
      for (const message of object.messages) {
        problems.push({
          file: object.origin?.file,
          object: describeObject(object),
          message: `${object.reason}: ${message}`,
        });
      }
    }
    served = { problems, rejectedObjects: rejected };
    onUpdate({
      snapshot: result.snapshot,
      problems,
      fileFailures: 0,
      rejectedObjects: rejected,
    });
  };
  const schedule = (): void => {
    // Reloads run one after another so an older directory state can never overwrite a newer one.
    running = running.then(reload).catch((error: unknown) => {
      logger.error({ err: error, dir }, "configuration reload failed");
      onUpdate({
        snapshot: undefined,
        problems: [{ message: `reload failed: ${(error as Error).message}` }, ...served.problems],
        fileFailures: 1,
        rejectedObjects: served.rejectedObjects,
      });
    });
  };
  // Watching starts before the first load: a change made while it runs (a large directory takes seconds)
  // brings another load after it.
  const watcher = watchManifestDirectory(dir, schedule, {
    debounceMs: options.debounceMs ?? 100,
    onError: (error) => logger.warn({ err: error, dir }, "watching the configuration directory failed"),
  });
  schedule();
  await running;
  return { close: () => watcher.close() };
}
