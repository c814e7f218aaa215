// The list+watch loop against a scripted API (a stand-in: stalls and exact failure timing cannot be had from a
// real server on demand; test/k8s/operator.test.ts covers the real one). Manual time drives backoff, the stall
// watchdog and the periodic relist.
import pino, { type Logger } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { apiRoutes } from "../../src/operator/kube/api-resources.ts";
import {
  KubeApiError,
  type KubeClient,
  type KubeRequest,
  type KubeStream,
} from "../../src/operator/kube/kube-client.ts";
import {
  startListWatch,
  type KubeObject,
  type ListWatch,
  type WatchRestartReason,
} from "../../src/operator/kube/list-watch.ts";
import { createManualTimers, type ManualTimers } from "../../src/operator/kube/timers.ts";

/** One watch call: the test pushes lines, ends it or fails it. */
class ScriptedStream implements KubeStream {
  readonly query: Readonly<Record<string, unknown>>;
  closed = false;
  #queue: (string | Error | null)[] = [];
  #wake: (() => void) | undefined;
  constructor(query: Readonly<Record<string, unknown>>) {
    this.query = query;
  }
  push(event: { type: string; object: unknown }): void {
    this.#enqueue(JSON.stringify(event));
  }
  end(): void {
    this.#enqueue(null);
  }
  fail(error: Error): void {
    this.#enqueue(error);
  }
  close(): void {
    this.closed = true;
    this.#enqueue(null);
  }
  async *lines(): AsyncGenerator<string> {
    for (;;) {
      const next = this.#queue.shift();
      if (next === undefined) {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        continue;
      }
      if (next === null) return;
      if (next instanceof Error) throw next;
      yield next;
    }
  }
  #enqueue(item: string | Error | null): void {
    this.#queue.push(item);
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

class ScriptedApi implements KubeClient {
  readonly server = "https://scripted";
  /** What the next lists answer: items and resourceVersion, or an error. */
  readonly listAnswers: ({ items: KubeObject[]; resourceVersion: string } | Error)[] = [];
  readonly listCalls: Readonly<Record<string, unknown>>[] = [];
  readonly streams: ScriptedStream[] = [];
  /** While set, lists wait for it before they answer (a list still in progress). */
  hold: Promise<void> | undefined;
  async request<T>(call: KubeRequest): Promise<T> {
    this.listCalls.push(call.query ?? {});
    if (this.hold !== undefined) await this.hold;
    const answer = this.listAnswers.shift() ?? new KubeApiError("PG_ERR_KUBE_NETWORK", "no scripted answer");
    if (answer instanceof Error) throw answer;
    return {
      metadata: { resourceVersion: answer.resourceVersion },
      items: answer.items,
    } as T;
  }
  stream(call: KubeRequest): Promise<KubeStream> {
    const stream = new ScriptedStream(call.query ?? {});
    this.streams.push(stream);
    return Promise.resolve(stream);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  lastStream(): ScriptedStream {
    const stream = this.streams.at(-1);
    if (stream === undefined) throw new Error("no watch yet");
    return stream;
  }
}

const route = (name: string, resourceVersion: string): KubeObject => ({
  apiVersion: "phantomgate.dev/v1alpha1",
  kind: "ApiRoute",
  metadata: { name, namespace: "default", resourceVersion },
});

const settle = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

interface Harness {
  readonly api: ScriptedApi;
  readonly timers: ManualTimers;
  readonly names: () => string[];
  readonly restarts: WatchRestartReason[];
  readonly loop: ListWatch;
}

let running: ListWatch | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

type ListAnswer = ScriptedApi["listAnswers"][number];

/** Starts a loop; `lists` answer its first lists (the loop lists at once). */
function startHarness(
  lists: ListAnswer[],
  options: { relistIntervalMs?: number; stallTimeoutMs?: number; logger?: Logger } = {},
  api: ScriptedApi = new ScriptedApi(),
): Harness {
  api.listAnswers.push(...lists);
  const timers = createManualTimers();
  const store = new Map<string, KubeObject>();
  const restarts: WatchRestartReason[] = [];
  const loop = startListWatch({
    client: api,
    resource: apiRoutes,
    relistIntervalMs: options.relistIntervalMs ?? 0,
    stallTimeoutMs: options.stallTimeoutMs ?? 600_000,
    backoff: { initialMs: 1_000, maxMs: 8_000, jitter: 0 },
    healthyAfterMs: 5_000,
    clock: timers,
    timers,
    handler: {
      replace(items) {
        store.clear();
        for (const item of items) store.set(item.metadata?.name ?? "", item);
      },
      apply(type, object) {
        const name = object.metadata?.name ?? "";
        if (type === "DELETED") store.delete(name);
        else store.set(name, object);
      },
    },
    onRestart: (reason) => restarts.push(reason),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  running = loop;
  return { api, timers, names: () => [...store.keys()].sort(), restarts, loop };
}

describe("list+watch loop", () => {
  it("lists, then watches from the list's resourceVersion with bookmarks and a server-side timeout", async () => {
    const h = startHarness([{ items: [route("a", "5")], resourceVersion: "10" }]);
    await settle();
    expect(h.loop.hasSynced()).toBe(true);
    expect(h.names()).toEqual(["a"]);
    expect(h.api.lastStream().query).toMatchObject({
      watch: true,
      resourceVersion: "10",
      allowWatchBookmarks: true,
      timeoutSeconds: 300,
    });
    h.api.lastStream().push({ type: "ADDED", object: route("b", "11") });
    h.api.lastStream().push({ type: "DELETED", object: route("a", "12") });
    h.api
      .lastStream()
      .push({ type: "BOOKMARK", object: { kind: "ApiRoute", metadata: { resourceVersion: "15" } } });
    await settle();
    expect(h.names()).toEqual(["b"]);
    // The server ends the watch (its timeout): the next one continues from the bookmark, without a list.
    h.api.lastStream().end();
    await settle();
    h.timers.advance(1_000);
    await settle();
    expect(h.api.streams).toHaveLength(2);
    expect(h.api.lastStream().query).toMatchObject({ resourceVersion: "15" });
    expect(h.api.listCalls).toHaveLength(1);
    expect(h.restarts).toEqual(["closed"]);
  });

  it("lists again after 410 Gone", async () => {
    const h = startHarness([{ items: [route("a", "5")], resourceVersion: "10" }]);
    await settle();
    h.api.listAnswers.push({ items: [route("c", "40")], resourceVersion: "50" });
    h.api
      .lastStream()
      .push({ type: "ERROR", object: { kind: "Status", code: 410, reason: "Expired", message: "too old" } });
    await settle();
    h.timers.advance(1_000);
    await settle();
    expect(h.restarts).toEqual(["expired"]);
    expect(h.names()).toEqual(["c"]);
    expect(h.api.lastStream().query).toMatchObject({ resourceVersion: "50" });
  });

  it("restarts after any error with a growing backoff, resuming from the last resourceVersion", async () => {
    const h = startHarness([{ items: [], resourceVersion: "10" }]);
    await settle();
    h.api.lastStream().push({ type: "ADDED", object: route("a", "11") });
    await settle();
    h.api.lastStream().fail(new KubeApiError("PG_ERR_KUBE_NETWORK", "ECONNRESET"));
    await settle();
    // The watch delivered an event, so it counted as healthy: no wait before the first retry.
    expect(h.api.streams).toHaveLength(2);
    expect(h.api.lastStream().query).toMatchObject({ resourceVersion: "11" });
    // Failing at once, again and again: 1 s, then 2 s between attempts.
    h.api.lastStream().fail(new KubeApiError("PG_ERR_KUBE_STATUS", "HTTP 500", { statusCode: 500 }));
    await settle();
    h.timers.advance(999);
    await settle();
    expect(h.api.streams).toHaveLength(2);
    h.timers.advance(1);
    await settle();
    expect(h.api.streams).toHaveLength(3);
    h.api.lastStream().fail(new KubeApiError("PG_ERR_KUBE_NETWORK", "ECONNREFUSED"));
    await settle();
    h.timers.advance(1_999);
    await settle();
    expect(h.api.streams).toHaveLength(3);
    h.timers.advance(1);
    await settle();
    expect(h.api.streams).toHaveLength(4);
    expect(h.api.listCalls).toHaveLength(1);
    expect(h.restarts).toEqual(["error", "error", "error"]);
  });

  it("keeps retrying a failing list until it succeeds", async () => {
    const h = startHarness([
      new KubeApiError("PG_ERR_KUBE_STATUS", "HTTP 403", { statusCode: 403, reason: "Forbidden" }),
      new KubeApiError("PG_ERR_KUBE_NETWORK", "ECONNREFUSED"),
      { items: [route("a", "1")], resourceVersion: "2" },
    ]);
    await settle();
    expect(h.loop.hasSynced()).toBe(false);
    h.timers.advance(1_000);
    await settle();
    h.timers.advance(2_000);
    await settle();
    expect(h.loop.hasSynced()).toBe(true);
    expect(h.names()).toEqual(["a"]);
  });

  it("says what a 404 or 403 from the list most likely means, naming the resource", async () => {
    const messages: string[] = [];
    const logger = pino(
      { level: "warn" },
      { write: (line: string) => messages.push((JSON.parse(line) as { msg: string }).msg) },
    );
    const logged = startHarness(
      [
        new KubeApiError("PG_ERR_KUBE_STATUS", "HTTP 404", { statusCode: 404, reason: "NotFound" }),
        new KubeApiError("PG_ERR_KUBE_STATUS", "HTTP 403", { statusCode: 403, reason: "Forbidden" }),
        new KubeApiError("PG_ERR_KUBE_NETWORK", "ECONNREFUSED"),
        { items: [], resourceVersion: "2" },
      ],
      { logger },
    );
    await settle();
    logged.timers.advance(1_000);
    await settle();
    logged.timers.advance(2_000);
    await settle();
    logged.timers.advance(4_000);
    await settle();
    expect(logged.loop.hasSynced()).toBe(true);
    const what = "apiroutes.phantomgate.dev in all namespaces";
    expect(messages).toEqual([
      `list/watch of ${what} failed (not found: are the CRDs installed?); retrying`,
      `list/watch of ${what} failed (forbidden: RBAC does not let the operator list and watch ${what}); retrying`,
      `list/watch of ${what} failed; retrying`,
    ]);
  });

  it("ends a watch that delivers nothing, not even a bookmark, for the stall timeout", async () => {
    const h = startHarness([{ items: [], resourceVersion: "10" }], { stallTimeoutMs: 30_000 });
    await settle();
    h.timers.advance(20_000);
    h.api
      .lastStream()
      .push({ type: "BOOKMARK", object: { kind: "ApiRoute", metadata: { resourceVersion: "12" } } });
    await settle();
    h.timers.advance(29_999);
    await settle();
    expect(h.api.streams).toHaveLength(1);
    h.timers.advance(1);
    await settle();
    expect(h.restarts).toEqual(["stall"]);
    expect(h.api.streams[0]?.closed).toBe(true);
    // It ran well past "healthy", so it resumes at once, from the bookmark.
    expect(h.api.streams).toHaveLength(2);
    expect(h.api.lastStream().query).toMatchObject({ resourceVersion: "12" });
  });

  it("lists again every relist interval, replacing what the watches may have missed", async () => {
    const h = startHarness([{ items: [route("a", "1")], resourceVersion: "10" }], {
      relistIntervalMs: 60_000,
    });
    await settle();
    h.api.listAnswers.push({ items: [route("a", "1"), route("missed", "20")], resourceVersion: "30" });
    h.timers.advance(60_000);
    await settle();
    expect(h.restarts).toEqual(["relist"]);
    expect(h.names()).toEqual(["a", "missed"]);
    expect(h.api.lastStream().query).toMatchObject({ resourceVersion: "30" });
  });

  it("relist() resolves after a list that started after the call", async () => {
    const h = startHarness([{ items: [], resourceVersion: "10" }]);
    await settle();
    h.api.listAnswers.push({ items: [route("new", "11")], resourceVersion: "11" });
    let done = false;
    const relisted = h.loop.relist().then(() => (done = true));
    await settle();
    await relisted;
    expect(done).toBe(true);
    expect(h.names()).toEqual(["new"]);
  });

  it("relist() during a list is answered by a second list before the watch starts", async () => {
    const api = new ScriptedApi();
    let release = (): void => undefined;
    api.hold = new Promise<void>((resolve) => (release = resolve));
    const h = startHarness([{ items: [], resourceVersion: "10" }], {}, api);
    await settle();
    expect(h.api.listCalls).toHaveLength(1);
    let done = false;
    const relisted = h.loop.relist().then(() => (done = true));
    h.api.listAnswers.push({ items: [route("new", "11")], resourceVersion: "11" });
    api.hold = undefined;
    release();
    await settle();
    expect(done).toBe(true);
    await relisted;
    expect(h.api.listCalls).toHaveLength(2);
    expect(h.names()).toEqual(["new"]);
    expect(h.api.lastStream().query).toMatchObject({ resourceVersion: "11" });
  });

  it("a throwing handler does not stop the loop", async () => {
    const api = new ScriptedApi();
    api.listAnswers.push({ items: [], resourceVersion: "1" });
    const timers = createManualTimers();
    const seen: string[] = [];
    running = startListWatch({
      client: api,
      resource: apiRoutes,
      relistIntervalMs: 0,
      stallTimeoutMs: 60_000,
      clock: timers,
      timers,
      handler: {
        replace: () => undefined,
        apply(_type, object) {
          const name = object.metadata?.name ?? "";
          if (name === "bad") throw new Error("handler bug");
          seen.push(name);
        },
      },
    });
    await settle();
    api.lastStream().push({ type: "ADDED", object: route("bad", "2") });
    api.lastStream().push({ type: "ADDED", object: route("good", "3") });
    await settle();
    expect(seen).toEqual(["good"]);
    expect(api.streams).toHaveLength(1);
  });

  it("stop() ends the loop and closes the watch", async () => {
    const h = startHarness([{ items: [], resourceVersion: "1" }]);
    await settle();
    await h.loop.stop();
    expect(h.api.lastStream().closed).toBe(true);
    h.timers.advance(600_000);
    await settle();
    expect(h.api.streams).toHaveLength(1);
  });
});
