// Watches a manifest directory and tells the caller, debounced, that it should reload and recompile.
import { statSync, watch, type FSWatcher } from "node:fs";
import { lstat, readdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { isManifestFileName } from "./load-manifests.ts";

export interface WatchOptions {
  /** Quiet period after the last change before `onChange` runs. Default 200 ms. */
  readonly debounceMs?: number;
  /** Called when the watcher fails or `onChange` rejects. */
  readonly onError?: (error: unknown) => void;
  /** How often the directory's identity is checked, to follow it when removed, recreated or re-linked. Default 1 s. */
  readonly pollMs?: number;
}

export interface ManifestWatcher {
  /** Stops watching; no `onChange` starts after this returns. */
  close(): void;
}

/**
 * Calls `onChange` once per burst of changes in `dir`. Every event counts, whatever the file name: editors save
 * through temporary files and renames, and a ConfigMap volume swaps its `..data` symlink; a spurious reload
 * costs one recompile that yields the same revision. Calls never overlap: a change during a running
 * `onChange` schedules one more run after it. A watch holds on to one directory inode, so `dir` is also checked
 * every `pollMs`: when it was removed, recreated or swapped for another directory (a symlink re-pointed), the
 * watch moves to what `dir` names now and `onChange` runs. The manifest symlinks in `dir` are followed on the
 * same beat: a change of what one points at (a file outside `dir`, edited or replaced) also runs `onChange`.
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

  // The directory being watched, by identity; undefined while `dir` is missing or could not be watched.
  let watched: { readonly watcher: FSWatcher; readonly id: string } | undefined;
  const stopWatching = (): void => {
    watched?.watcher.close();
    watched = undefined;
  };
  const startWatching = (id: string): void => {
    const watcher = watch(dir, { persistent: true }, (_event, name) => {
      // The watched directory itself removed or moved away is reported under its own name, and the watch is
      // dead from then on. Watch again at once: a directory created in its place may reuse the inode number.
      if (name === ownName && watched?.watcher === watcher) {
        stopWatching();
        void checkIdentity();
      }
      schedule();
    });
    watcher.on("error", (error) => {
      reportError(error);
      watcher.close();
      if (watched?.watcher === watcher) watched = undefined;
    });
    watched = { watcher, id };
  };
  /**
   * What the manifest symlinks in `dir` point at, as one string (identity, size and change time of each target):
   * a target outside `dir` changes without any event in `dir`. Undefined when `dir` cannot be listed.
   */
  const linkTargets = async (): Promise<string | undefined> => {
    const names = await readdir(dir).catch(() => undefined);
    if (names === undefined) return undefined;
    const parts: string[] = [];
    for (const name of names.filter(isManifestFileName).sort()) {
      const file = join(dir, name);
      const link = await lstat(file).catch(() => undefined);
      if (link?.isSymbolicLink() !== true) continue;
      const target = await stat(file).catch(() => undefined);
      parts.push(
        target === undefined
          ? `${name}:missing`
          : `${name}:${target.dev}:${target.ino}:${target.size}:${target.mtimeMs}:${target.ctimeMs}`,
      );
    }
    return parts.join("\n");
  };
  let links: string | undefined;
  void linkTargets().then((initial) => (links ??= initial));
  let checking = false;
  const checkIdentity = async (): Promise<void> => {
    if (checking) return;
    checking = true;
    try {
      const info = await stat(dir).catch(() => undefined);
      const id = info?.isDirectory() === true ? `${info.dev}:${info.ino}` : undefined;
      if (closed) return;
      if (id === watched?.id) {
        const now = await linkTargets();
        if (now === undefined || now === links) return; // (schedule() does nothing once closed)
        const first = links === undefined;
        links = now;
        if (!first) schedule();
        return;
      }
      stopWatching();
      if (id !== undefined) startWatching(id);
      links = await linkTargets();
      schedule();
    } catch (error) {
      reportError(error);
    } finally {
      checking = false;
    }
  };

  const ownName = basename(dir);
  const info = statSync(dir);
  startWatching(`${info.dev}:${info.ino}`);
  const poller = setInterval(() => void checkIdentity(), options.pollMs ?? 1000);
  return {
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      clearInterval(poller);
      stopWatching();
    },
  };
}
