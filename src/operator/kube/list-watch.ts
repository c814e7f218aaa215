// A list+watch loop that does not give up: list (paged) → watch from the list's resourceVersion with bookmarks
// and a server-side timeout → watch again from the last resourceVersion seen. Any error restarts it after an
// exponential backoff with jitter; 410 Gone lists again; a stall watchdog ends a watch that went quiet; a
// periodic relist repairs anything a watch might have missed. Handlers must be tiny (update a map, mark
// dirty): they run inline, between lines of the stream.
import type { Logger } from "pino";
import { systemClock, type Clock } from "../../tokens/clock.ts";
import { apiVersionOf, resourcePath, type ApiResource } from "./api-resources.ts";
import { createBackoff, type BackoffPolicy } from "./backoff.ts";
import { isKubeStatus, KubeApiError, type KubeClient, type KubeStream } from "./kube-client.ts";
import { sleep, systemTimers, type TimerHandle, type Timers } from "./timers.ts";
import { startWatchdog } from "./watchdog.ts";

/** An object as the API server sends it; only metadata is read here. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    generation?: number;
    uid?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

/** Where a loop's objects go. Both calls must be quick and must not throw. */
export interface ListWatchHandler {
  /** The complete current set after a list: replaces everything known for this loop's scope. */
  replace(items: readonly KubeObject[]): void;
  /** One change seen by the watch. */
  apply(type: WatchEventType, object: KubeObject): void;
}

/** Why a watch ended and another began. */
export type WatchRestartReason =
  /** The server ended the watch (its timeoutSeconds, or a restart): continue from the last resourceVersion. */
  | "closed"
  /** 410 Gone: the resourceVersion is too old; list again. */
  | "expired"
  /** Nothing (not even a bookmark) for the stall timeout. */
  | "stall"
  /** The periodic relist, or one requested by the owner. */
  | "relist"
  /** Any other failure: network, TLS, HTTP status, a watch ERROR event, a malformed line. */
  | "error";

export interface ListWatchOptions {
  readonly client: KubeClient;
  readonly resource: ApiResource;
  /** Watch one namespace; absent: all namespaces. */
  readonly namespace?: string | undefined;
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
  readonly handler: ListWatchHandler;
  /** List again this long after the last list, whatever the watch says. 0 disables. */
  readonly relistIntervalMs: number;
  /** End a watch that delivered nothing, not even a bookmark, for this long. */
  readonly stallTimeoutMs: number;
  /** `timeoutSeconds` of each watch call: the server ends it after this long (default 300). */
  readonly watchTimeoutSeconds?: number;
  /** Objects per list page (default 500). */
  readonly pageSize?: number;
  /** Delays between failed attempts (default 250 ms doubling to 30 s, 50 % jitter). */
  readonly backoff?: BackoffPolicy;
  /** A watch that ran this long without an error counts as healthy (resets the backoff). Default 10 s. */
  readonly healthyAfterMs?: number;
  readonly clock?: Clock;
  readonly timers?: Timers;
  readonly random?: () => number;
  readonly logger?: Logger;
  /** Called on every restart, for metrics. */
  readonly onRestart?: (reason: WatchRestartReason) => void;
  /** Called after every completed list, for metrics. */
  readonly onList?: (items: number) => void;
  /** Called for every watch event and bookmark, for metrics. */
  readonly onEvent?: (type: WatchEventType | "BOOKMARK") => void;
}

export interface ListWatch {
  /** e.g. `apiroutes.phantomgate.dev in all namespaces`. */
  readonly description: string;
  /** Resolves after the first complete list was handed to the handler. */
  readonly synced: Promise<void>;
  hasSynced(): boolean;
  /** Ends the current watch and lists again; resolves once that list was handed over (or on stop). */
  relist(): Promise<void>;
  /** Ends the current watch without a relist: it continues from the last resourceVersion (tests, diagnosis). */
  restartWatch(): void;
  /** Stops the loop; resolves when it has ended. */
  stop(): Promise<void>;
}

const defaultBackoff: BackoffPolicy = { initialMs: 250, maxMs: 30_000, factor: 2, jitter: 0.5 };

interface ListPage {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: KubeObject[];
}

type WatchEnd = WatchRestartReason | "stopped";

/** Starts a list+watch loop; it runs until `stop()`. */
export function startListWatch(options: ListWatchOptions): ListWatch {
  const { client, resource, handler } = options;
  const clock = options.clock ?? systemClock;
  const timers = options.timers ?? systemTimers;
  const logger = options.logger;
  const watchTimeoutSeconds = options.watchTimeoutSeconds ?? 300;
  const pageSize = options.pageSize ?? 500;
  const healthyAfterMs = options.healthyAfterMs ?? 10_000;
  const backoff = createBackoff(options.backoff ?? defaultBackoff, options.random);
  const path = resourcePath(resource, { namespace: options.namespace });
  const groupSuffix = resource.group === "" ? "" : `.${resource.group}`;
  const description = `${resource.plural}${groupSuffix} in ${options.namespace === undefined ? "all namespaces" : `namespace ${options.namespace}`}`;
  const log = logger?.child({ watch: description });
  const selectors = {
    labelSelector: options.labelSelector === "" ? undefined : options.labelSelector,
    fieldSelector: options.fieldSelector === "" ? undefined : options.fieldSelector,
  };

  const stopController = new AbortController();
  // A function, not the property: TypeScript would otherwise narrow it across the awaits that change it.
  const stopped = (): boolean => stopController.signal.aborted;
  let synced = false;
  let resolveSynced: () => void = () => undefined;
  const syncedPromise = new Promise<void>((resolve) => (resolveSynced = resolve));
  let lastListMs = 0;
  let listRequested = false;
  let relistWaiters: (() => void)[] = [];
  /** Ends the running watch with a reason; set while a watch is open. */
  let endWatch: ((reason: WatchEnd) => void) | undefined;

  const withKind = (item: KubeObject): KubeObject => {
    // List items of core kinds come without apiVersion/kind; the handler and compile want both.
    item.apiVersion ??= apiVersionOf(resource);
    item.kind ??= resource.kind;
    return item;
  };

  const list = async (): Promise<string> => {
    // Requests made from here on are answered by this list; later ones wait for the next.
    const answering = relistWaiters;
    relistWaiters = [];
    listRequested = false;
    try {
      return await listAll(answering);
    } catch (error) {
      relistWaiters = [...answering, ...relistWaiters];
      throw error;
    }
  };

  const listAll = async (answering: readonly (() => void)[]): Promise<string> => {
    const items: KubeObject[] = [];
    let continueToken: string | undefined;
    let resourceVersion = "";
    do {
      const page = await client.request<ListPage>({
        method: "GET",
        path,
        query: { ...selectors, limit: pageSize, continue: continueToken },
        signal: stopController.signal,
        timeoutMs: 60_000,
      });
      for (const item of page.items ?? []) items.push(withKind(item));
      continueToken = page.metadata?.continue === "" ? undefined : page.metadata?.continue;
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
    } while (continueToken !== undefined);
    if (resourceVersion === "") {
      throw new KubeApiError("PG_ERR_KUBE_BAD_RESPONSE", `list of ${description} carried no resourceVersion`);
    }
    handler.replace(items);
    options.onList?.(items.length);
    lastListMs = clock.now();
    if (!synced) {
      synced = true;
      resolveSynced();
      log?.debug({ items: items.length, resourceVersion }, "initial list done");
    }
    for (const waiter of answering) waiter();
    return resourceVersion;
  };

  /** Runs one watch; returns why it ended, updating `state.resourceVersion` as it goes. */
  const watch = async (state: { resourceVersion: string; healthy: boolean }): Promise<WatchEnd> => {
    let ended: WatchEnd | undefined;
    let stream: KubeStream | undefined;
    const controller = new AbortController();
    const end = (reason: WatchEnd): void => {
      ended ??= reason;
      controller.abort();
      stream?.close();
    };
    endWatch = end;
    const watchdog = startWatchdog({
      timeoutMs: options.stallTimeoutMs,
      clock,
      timers,
      onStall: (quietMs) => {
        log?.warn({ quietMs }, "watch stalled (no event or bookmark); restarting it");
        end("stall");
      },
    });
    let relistTimer: TimerHandle | undefined;
    if (options.relistIntervalMs > 0) {
      relistTimer = timers.setTimeout(
        () => end("relist"),
        lastListMs + options.relistIntervalMs - clock.now(),
      );
    }
    const startedMs = clock.now();
    let healthyTimer: TimerHandle | undefined = timers.setTimeout(() => {
      healthyTimer = undefined;
      state.healthy = true;
    }, healthyAfterMs);
    try {
      stream = await client.stream({
        method: "GET",
        path,
        query: {
          ...selectors,
          watch: true,
          resourceVersion: state.resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds: watchTimeoutSeconds,
        },
        signal: AbortSignal.any([controller.signal, stopController.signal]),
      });
      // end() may have run while the stream was opening.
      if (ended !== undefined) stream.close();
      for await (const line of stream.lines()) {
        watchdog.kick();
        const event = parseWatchLine(line, description);
        if (event.type === "ERROR") {
          const status = event.object as { code?: unknown; reason?: unknown; message?: unknown };
          if (status.code === 410) return "expired";
          throw new KubeApiError(
            "PG_ERR_KUBE_STATUS",
            `watch of ${description}: ERROR event ${String(status.code)} ${typeof status.message === "string" ? status.message : ""}`.trim(),
            {
              ...(typeof status.code === "number" ? { statusCode: status.code } : {}),
              ...(typeof status.reason === "string" ? { reason: status.reason } : {}),
            },
          );
        }
        const object = withKind(event.object);
        const resourceVersion = object.metadata?.resourceVersion;
        if (event.type !== "BOOKMARK") {
          try {
            handler.apply(event.type, object);
          } catch (error) {
            // A handler bug must not kill the loop; the periodic relist repairs what it missed.
            log?.error({ err: error, type: event.type }, "watch handler failed");
          }
          state.healthy = true;
        }
        options.onEvent?.(event.type);
        if (typeof resourceVersion === "string" && resourceVersion !== "") {
          state.resourceVersion = resourceVersion;
        }
      }
      return ended ?? "closed";
    } catch (error) {
      if (ended !== undefined) return ended;
      if (stopController.signal.aborted) return "stopped";
      if (isKubeStatus(error, 410)) return "expired";
      throw error;
    } finally {
      endWatch = undefined;
      watchdog.stop();
      timers.clearTimeout(relistTimer);
      timers.clearTimeout(healthyTimer);
      stream?.close();
      log?.trace({ ms: clock.now() - startedMs, reason: ended }, "watch ended");
    }
  };

  const run = async (): Promise<void> => {
    const state = { resourceVersion: "", healthy: false };
    const healthy = (): boolean => state.healthy;
    let listNeeded = true;
    while (!stopped()) {
      let reason: WatchEnd;
      state.healthy = false;
      try {
        if (listNeeded || listRequested || state.resourceVersion === "") {
          state.resourceVersion = await list();
          listNeeded = false;
          // relist() called while that list ran had no watch to end: it gets a list of its own now, not when
          // the next watch ends.
          if (listRequested) continue;
        }
        reason = await watch(state);
      } catch (error) {
        if (stopped()) break;
        if (isKubeStatus(error, 410)) {
          reason = "expired";
        } else {
          reason = "error";
          const hint = listWatchHint(error, description);
          log?.warn(
            {
              err: describeError(error),
              attempt: backoff.attempts + 1,
              ...(hint === undefined ? {} : { hint }),
            },
            hint === undefined
              ? `list/watch of ${description} failed; retrying`
              : `list/watch of ${description} failed (${hint}); retrying`,
          );
        }
      }
      if (reason === "stopped" || stopped()) break;
      if (reason === "expired" || reason === "relist") listNeeded = true;
      options.onRestart?.(reason);
      if (healthy()) {
        backoff.reset();
      } else if (!listRequested) {
        // Failing fast again and again (or a server that ends every watch at once) must not become a hot loop.
        await sleep(timers, backoff.next(), stopController.signal);
      }
    }
    const waiters = relistWaiters;
    relistWaiters = [];
    for (const waiter of waiters) waiter();
  };

  const done = run().catch((error: unknown) => {
    log?.error({ err: error }, "list/watch loop ended unexpectedly");
  });

  return {
    description,
    synced: syncedPromise,
    hasSynced: () => synced,
    relist() {
      if (stopController.signal.aborted) return Promise.resolve();
      const waiter = new Promise<void>((resolve) => relistWaiters.push(resolve));
      listRequested = true;
      endWatch?.("relist");
      return waiter;
    },
    restartWatch() {
      endWatch?.("closed");
    },
    async stop() {
      stopController.abort();
      endWatch?.("stopped");
      await done;
    },
  };
}

function parseWatchLine(
  line: string,
  description: string,
): { type: WatchEventType | "BOOKMARK" | "ERROR"; object: KubeObject } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (error) {
    throw new KubeApiError("PG_ERR_KUBE_BAD_RESPONSE", `watch of ${description}: a line is not JSON`, {
      cause: error,
    });
  }
  const event = parsed as { type?: unknown; object?: unknown };
  const known = ["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"] as const;
  const type = known.find((candidate) => candidate === event.type);
  if (type === undefined || typeof event.object !== "object" || event.object === null) {
    throw new KubeApiError("PG_ERR_KUBE_BAD_RESPONSE", `watch of ${description}: unexpected event shape`);
  }
  return { type, object: event.object as KubeObject };
}

/** The loggable part of an error: code and message (our messages never carry credentials). */
/** What a 404 or 403 from listing or watching `description` most likely means; undefined for other errors. */
export function listWatchHint(error: unknown, description: string): string | undefined {
  if (isKubeStatus(error, 404)) return "not found: are the CRDs installed?";
  if (isKubeStatus(error, 403))
    return `forbidden: RBAC does not let the operator list and watch ${description}`;
  return undefined;
}

export function describeError(error: unknown): Record<string, unknown> {
  if (error instanceof KubeApiError) {
    return { code: error.code, statusCode: error.statusCode, reason: error.reason, message: error.message };
  }
  return { message: error instanceof Error ? error.message : String(error) };
}
