// Watches a manifest directory and tells the caller, debounced, that it should reload and recompile.
import { watch, type FSWatcher } from "node:fs";

export interface WatchOptions {
  /** Quiet period after the last change before `onChange` runs. Default 200 ms. */
  readonly debounceMs?: number;
  /** Called when the watcher fails (e.g. the directory was removed) or `onChange` rejects. */
  readonly onError?: (error: unknown) => void;
}

export interface ManifestWatcher {
  /** Stops watching; no `onChange` starts after this returns. */
  close(): void;
}

/**
 * Calls `onChange` once per burst of changes in `dir`. Every event counts, whatever the file name: editors save
 * through temporary files and renames, and a ConfigMap volume swaps its `..data` symlink; a spurious reload
 * costs one recompile that yields the same revision. Calls never overlap: a change during a running
 * `onChange` schedules one more run after it.
 */
export function watchManifestDirectory(
  dir: string,
  onChange: () => void | Promise<void>,
  options: WatchOptions = {},
): ManifestWatcher {
  const debounceMs = options.debounceMs ?? 200;
  const reportError = options.onError ?? (() => undefined);
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let pending = false;
  let closed = false;

  const run = async (): Promise<void> => {
    timer = undefined;
    if (closed) return;
    if (running) {
      pending = true;
      return;
    }
    running = true;
    try {
      await onChange();
    } catch (error) {
      reportError(error);
    } finally {
      running = false;
    }
    if (pending) {
      pending = false;
      schedule();
    }
  };
  const schedule = (): void => {
    if (closed) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => void run(), debounceMs);
  };

  const watcher: FSWatcher = watch(dir, { persistent: true }, schedule);
  watcher.on("error", reportError);
  return {
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      watcher.close();
    },
  };
}
