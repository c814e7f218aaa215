// A small Kubernetes REST client on undici: JSON requests and line-delimited watch streams against the API
// server of a kubeconfig. TLS material is read once into one connection pool; the Authorization header is
// asked of client-node's KubeConfig on every request, so rotating ServiceAccount tokens and exec plugins work.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Cluster } from "@kubernetes/client-node";
import type { RequestOptions as HttpsRequestOptions } from "node:https";
import { Agent, ProxyAgent, request, type Dispatcher } from "undici";

/** Why a Kubernetes call failed; callers switch on it. */
export type KubeErrorCode =
  /** The API server answered with a non-2xx status (`statusCode`, `reason` from its Status object). */
  | "PG_ERR_KUBE_STATUS"
  /** No answer: connection refused or reset, TLS failure, DNS. */
  | "PG_ERR_KUBE_NETWORK"
  /** The kubeconfig's credentials or TLS files could not be loaded (a file missing, an exec plugin failing). */
  | "PG_ERR_KUBE_CREDENTIALS"
  /** No answer within the request's time limit. */
  | "PG_ERR_KUBE_TIMEOUT"
  /** The caller aborted. */
  | "PG_ERR_KUBE_ABORTED"
  /** An answer that is not the JSON it should be. */
  | "PG_ERR_KUBE_BAD_RESPONSE";

/** A failed Kubernetes call. The message names the method, path and status, never credentials. */
export class KubeApiError extends Error {
  override readonly name = "KubeApiError";
  readonly code: KubeErrorCode;
  /** HTTP status (PG_ERR_KUBE_STATUS) or the `code` of a watch ERROR event. */
  readonly statusCode: number | undefined;
  /** `reason` of the API server's Status object, e.g. `NotFound`, `Conflict`, `Expired`, `Forbidden`. */
  readonly reason: string | undefined;
  constructor(
    code: KubeErrorCode,
    message: string,
    details: { statusCode?: number; reason?: string; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.statusCode = details.statusCode;
    this.reason = details.reason;
  }
}

/** Whether `error` is an API answer with `statusCode` (404 NotFound, 409 Conflict, 410 Gone…). */
export function isKubeStatus(error: unknown, statusCode: number): error is KubeApiError {
  return (
    error instanceof KubeApiError && error.code === "PG_ERR_KUBE_STATUS" && error.statusCode === statusCode
  );
}

export type QueryValue = string | number | boolean | undefined;

/** One API call. `path` starts at the API root, e.g. `/apis/coordination.k8s.io/v1/namespaces/ns/leases/x`. */
export interface KubeRequest {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  readonly path: string;
  readonly query?: Readonly<Record<string, QueryValue>>;
  /** Sent as JSON. */
  readonly body?: unknown;
  /** Default `application/json`; PATCH needs a patch type such as `application/merge-patch+json`. */
  readonly contentType?: string;
  readonly signal?: AbortSignal;
  /** Whole-call time limit for non-streaming calls. Default 30 s. */
  readonly timeoutMs?: number;
}

/** An open watch stream: its lines, one JSON document each, until the server ends it or `close()`. */
export interface KubeStream {
  lines(): AsyncIterable<string>;
  close(): void;
}

export interface KubeClient {
  /** The API server URL. */
  readonly server: string;
  /** Sends one call and parses the JSON answer; rejects with {@link KubeApiError}. */
  request<T>(call: KubeRequest): Promise<T>;
  /** Opens a long-lived GET (a watch); rejects with {@link KubeApiError} when it cannot be opened. */
  stream(call: KubeRequest): Promise<KubeStream>;
  /** Closes idle connections and every open stream. */
  close(): Promise<void>;
}

export interface KubeClientOptions {
  /** Sent as User-Agent. */
  readonly userAgent?: string;
  /** Use this dispatcher instead of one built from the kubeconfig's TLS settings (tests). */
  readonly dispatcher?: Dispatcher;
}

const defaultTimeoutMs = 30_000;
/** Largest non-streaming answer read: a page of objects is well below this. */
const maxBodyBytes = 64 * 1024 * 1024;
/** Longest line of a watch stream (one object). */
const maxLineBytes = 16 * 1024 * 1024;

/** Creates a client for the current context of `kubeConfig`. */
export function createKubeClient(kubeConfig: KubeConfig, options: KubeClientOptions = {}): KubeClient {
  const cluster = kubeConfig.getCurrentCluster();
  if (cluster === null) throw new Error("the Kubernetes configuration has no current cluster");
  const server = cluster.server.replace(/\/+$/, "");
  const userAgent = options.userAgent ?? "phantomgate-operator";
  /** The pool built from the kubeconfig (never set when `options.dispatcher` is given, which is not ours to close). */
  let built: Dispatcher | undefined;
  let closed = false;
  const openStreams = new Set<AbortController>();

  // TLS settings and credentials as client-node resolves them (CA/cert files, exec and token-file plugins).
  const resolveOptions = async (what: string): Promise<HttpsRequestOptions> => {
    const resolved: HttpsRequestOptions = {};
    try {
      await kubeConfig.applyToHTTPSOptions(resolved);
    } catch (error) {
      const detail = (error instanceof Error ? error.message : String(error)).slice(0, 300);
      throw new KubeApiError(
        "PG_ERR_KUBE_CREDENTIALS",
        `${what}: cannot load the credentials of the Kubernetes configuration: ${detail}`,
        { cause: error },
      );
    }
    return resolved;
  };
  // Built from the first call's resolved settings. Each call resolves the credentials first and fails on its own
  // when that fails (an exec plugin or a credential file failing once): no failure is kept for later calls.
  const dispatcherFor = (resolved: HttpsRequestOptions): Dispatcher => {
    if (options.dispatcher !== undefined) return options.dispatcher;
    built ??= buildDispatcher(cluster, resolved);
    return built;
  };
  const headersFor = (call: KubeRequest, resolved: HttpsRequestOptions): Record<string, string> => {
    const headers: Record<string, string> = { accept: "application/json", "user-agent": userAgent };
    for (const [name, value] of Object.entries(resolved.headers ?? {})) {
      if (typeof value === "string") headers[name.toLowerCase()] = value;
      else if (typeof value === "number") headers[name.toLowerCase()] = String(value);
    }
    if (typeof resolved.auth === "string" && headers.authorization === undefined) {
      headers.authorization = `Basic ${Buffer.from(resolved.auth).toString("base64")}`;
    }
    if (call.body !== undefined) headers["content-type"] = call.contentType ?? "application/json";
    return headers;
  };

  const describe = (call: KubeRequest): string => `${call.method} ${call.path}`;

  const send = async (
    call: KubeRequest,
    signal: AbortSignal,
    streaming: boolean,
  ): Promise<Dispatcher.ResponseData> => {
    const url = new URL(server + call.path);
    for (const [key, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    try {
      const resolved = await resolveOptions(describe(call));
      // Closed while the credentials were being loaded: no new connection pool that nothing would close.
      if (closed) throw new KubeApiError("PG_ERR_KUBE_ABORTED", `${describe(call)}: the client was closed`);
      return await request(url, {
        method: call.method,
        headers: headersFor(call, resolved),
        ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
        dispatcher: dispatcherFor(resolved),
        signal,
        headersTimeout: defaultTimeoutMs,
        // A watch may be quiet for minutes; its own stall watchdog decides when it is dead.
        bodyTimeout: streaming ? 0 : (call.timeoutMs ?? defaultTimeoutMs),
      });
    } catch (error) {
      throw classifyFailure(error, describe(call), signal);
    }
  };

  return {
    server,

    async request<T>(call: KubeRequest): Promise<T> {
      const signals = [AbortSignal.timeout(call.timeoutMs ?? defaultTimeoutMs)];
      if (call.signal !== undefined) signals.push(call.signal);
      const signal = AbortSignal.any(signals);
      const response = await send(call, signal, false);
      let text: string;
      try {
        text = await readText(response.body, maxBodyBytes);
      } catch (error) {
        throw classifyFailure(error, describe(call), signal);
      }
      if (response.statusCode < 200 || response.statusCode > 299) {
        throw statusError(describe(call), response.statusCode, text);
      }
      if (text === "") return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch (error) {
        throw new KubeApiError("PG_ERR_KUBE_BAD_RESPONSE", `${describe(call)}: the answer is not JSON`, {
          cause: error,
        });
      }
    },

    async stream(call: KubeRequest): Promise<KubeStream> {
      const controller = new AbortController();
      const signal =
        call.signal === undefined ? controller.signal : AbortSignal.any([controller.signal, call.signal]);
      openStreams.add(controller);
      const release = (): void => {
        openStreams.delete(controller);
        controller.abort();
      };
      let response: Dispatcher.ResponseData;
      try {
        response = await send(call, signal, true);
      } catch (error) {
        release();
        throw error;
      }
      if (response.statusCode < 200 || response.statusCode > 299) {
        const text = await readText(response.body, maxBodyBytes).catch(() => "");
        release();
        throw statusError(describe(call), response.statusCode, text);
      }
      const body = response.body;
      return {
        lines: () => splitLines(body, describe(call), signal, release),
        close: () => {
          release();
          body.destroy();
        },
      };
    },

    async close() {
      closed = true;
      for (const controller of openStreams) controller.abort();
      openStreams.clear();
      await built?.close();
    },
  };
}

function buildDispatcher(cluster: Cluster, resolved: HttpsRequestOptions): Dispatcher {
  const tls = {
    ...(resolved.ca === undefined ? {} : { ca: resolved.ca as string | Buffer }),
    ...(resolved.cert === undefined ? {} : { cert: resolved.cert as string | Buffer }),
    ...(resolved.key === undefined ? {} : { key: resolved.key as string | Buffer }),
    ...(resolved.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: resolved.rejectUnauthorized }),
    ...(resolved.servername === undefined ? {} : { servername: resolved.servername }),
  };
  // TCP keepalive makes a silently dead peer fail the socket instead of leaving a watch hanging. HTTP/1.1 on
  // purpose: every watch gets a connection of its own, so a stalled connection stalls one watch and a restart
  // gets a fresh one; over HTTP/2 everything would share one connection, and a silent stall would freeze all
  // of it (client-go needs HTTP/2 pings for that).
  const connect = { ...tls, keepAlive: true, keepAliveInitialDelay: 30_000 };
  if (cluster.proxyUrl !== undefined && cluster.proxyUrl !== "") {
    if (!/^https?:/.test(cluster.proxyUrl)) {
      throw new Error(`proxy-url ${cluster.proxyUrl}: only http(s) proxies are supported`);
    }
    return new ProxyAgent({ uri: cluster.proxyUrl, requestTls: tls, proxyTls: {}, allowH2: false });
  }
  return new Agent({ connect, keepAliveTimeout: 30_000, pipelining: 1, allowH2: false });
}

function classifyFailure(error: unknown, what: string, signal: AbortSignal): KubeApiError {
  if (error instanceof KubeApiError) return error;
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    if (reason instanceof DOMException && reason.name === "TimeoutError") {
      return new KubeApiError("PG_ERR_KUBE_TIMEOUT", `${what}: no answer in time`, { cause: error });
    }
    return new KubeApiError("PG_ERR_KUBE_ABORTED", `${what}: aborted`, { cause: error });
  }
  const code = (error as { code?: unknown }).code;
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return new KubeApiError("PG_ERR_KUBE_TIMEOUT", `${what}: no answer in time (${code})`, { cause: error });
  }
  const detail = typeof code === "string" ? code : error instanceof Error ? error.message : String(error);
  return new KubeApiError("PG_ERR_KUBE_NETWORK", `${what}: ${detail}`, { cause: error });
}

/** Builds the error of a non-2xx answer from the API server's Status object when there is one. */
function statusError(what: string, statusCode: number, text: string): KubeApiError {
  let reason: string | undefined;
  let message = "";
  try {
    const status = JSON.parse(text) as { reason?: unknown; message?: unknown };
    if (typeof status.reason === "string") reason = status.reason;
    if (typeof status.message === "string") message = status.message;
  } catch {
    // Not a Status object (a proxy's HTML page…): the status code says enough.
  }
  const suffix = message === "" ? "" : `: ${message.slice(0, 500)}`;
  return new KubeApiError("PG_ERR_KUBE_STATUS", `${what}: HTTP ${statusCode}${suffix}`, {
    statusCode,
    ...(reason === undefined ? {} : { reason }),
  });
}

async function readText(body: Dispatcher.ResponseData["body"], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      throw new KubeApiError("PG_ERR_KUBE_BAD_RESPONSE", `answer larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Splits a watch body into lines; a network failure mid-stream becomes a {@link KubeApiError}. */
async function* splitLines(
  body: Dispatcher.ResponseData["body"],
  what: string,
  signal: AbortSignal,
  release: () => void,
): AsyncGenerator<string> {
  let pending: Buffer = Buffer.alloc(0);
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let newline = pending.indexOf(10);
      while (newline >= 0) {
        const line = pending.subarray(0, newline).toString("utf8").trim();
        pending = pending.subarray(newline + 1);
        if (line !== "") yield line;
        newline = pending.indexOf(10);
      }
      if (pending.length > maxLineBytes) {
        throw new KubeApiError(
          "PG_ERR_KUBE_BAD_RESPONSE",
          `${what}: a watch line exceeds ${maxLineBytes} bytes`,
        );
      }
    }
    const rest = pending.toString("utf8").trim();
    if (rest !== "") yield rest;
  } catch (error) {
    throw classifyFailure(error, what, signal);
  } finally {
    release();
    body.destroy();
  }
}
