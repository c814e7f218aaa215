// A demo component started by `spawnReady` stops when its parent goes, however the parent went: the parent holds
// the write end of the child's stdin, and the kernel closes it when the parent exits, also on SIGKILL. Without
// this, a demo killed hard leaves its authorization server and APIs listening, and the next demo cannot start.

/** Set by `spawnReady` for its children; a component started by hand (stdin a terminal or /dev/null) ignores it. */
export const WATCH_PARENT_ENV = "PHANTOMGATE_DEMO_WATCH_PARENT";

/** Calls `stop` once on SIGINT, SIGTERM or SIGHUP, or when the parent that spawned this process is gone. */
export function stopOnSignalOrParentGone(stop: () => void): void {
  let stopped = false;
  const once = (): void => {
    if (stopped) return;
    stopped = true;
    process.stdin.pause();
    stop();
  };
  process.once("SIGINT", once);
  process.once("SIGTERM", once);
  process.once("SIGHUP", once);
  if (process.env[WATCH_PARENT_ENV] === "1") {
    process.stdin.once("end", once);
    process.stdin.once("close", once);
    process.stdin.once("error", once);
    process.stdin.resume();
  }
}
