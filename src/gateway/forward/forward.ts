// Forwarding: streams the request to the chosen upstream through an undici dispatcher (one keep-alive pool per
// origin) and streams the response back. Maps upstream failures to 502/504.
import type { IncomingMessage, ServerResponse } from "node:http";
import { Transform, type TransformCallback } from "node:stream";
import { errors as undiciErrors, type Dispatcher } from "undici";
import type { IncomingHttpHeaders as UndiciHeaders } from "undici/types/header.js";
import { GatewayError } from "../../errors/catalogue.ts";
import type { BodyRewriter } from "../firewall/multipart-rewrite.ts";
import { lingerOnClose } from "../pipeline/linger.ts";
import { buildClientResponseHeaders } from "./headers.ts";

/** Where an exchange reports how it ended; exactly one of `forwarded` and `failed` is called, once. */
export interface ForwardOutcome {
  /** Why the response was cut after its status line went out (set before `forwarded`), for the audit. */
  cut: GatewayError | undefined;
  /** The upstream's status, once the response was written in full or cut after its status line. */
  forwarded(status: number): void;
  /** Nothing was sent to the client yet: the error is the client's answer. */
  failed(error: GatewayError): void;
  /** The request body is about to be streamed (a client waiting for 100 Continue gets it now). */
  release(): void;
  /** The upstream's answer began: the request went out, so a body the gateway held for it can be let go. */
  responseStarted(): void;
  /** The upstream's answer ended: the upstream is done with the request, though the client may still be reading. */
  upstreamEnded(): void;
}

export interface ForwardInput {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly dispatcher: Dispatcher;
  readonly origin: string;
  /** Normalised path plus the original query string. */
  readonly pathAndQuery: string;
  readonly headers: Record<string, string | string[]>;
  readonly timeoutMs: number;
  /** How long the client may leave a response it was sent untaken (its connection full) before it is cut. */
  readonly clientTimeoutMs: number;
  readonly maxBodyBytes: number;
  /**
   * Least average rate, in bytes per second, a streamed request body must keep once the route's timeout has passed
   * since it started (`--min-body-rate`); 0: none. The body's silence is bounded by the route's timeout anyway.
   */
  readonly minBodyRate: number;
  readonly requestId: string;
  /** The whole body when an earlier stage had to read it; otherwise the request is streamed. */
  readonly bufferedBody?: Buffer | undefined;
  /** Rewrites a streamed body as it goes (multipart bodies): the upstream gets its output and Content-Type. */
  readonly bodyRewriter?: BodyRewriter | undefined;
  /** Hears how the exchange ends, and when the body is wanted. */
  readonly outcome: ForwardOutcome;
}

/**
 * Counts request body bytes and fails the stream once the route's limit is passed (chunked uploads). With a
 * rewriter, the upstream gets what the rewriter makes of the body instead of the body itself (multipart: the
 * parts written again under the gateway's boundary), and a body the rewriter refuses ends the exchange; the
 * rewritten body is complete only once the client's body ended as a whole multipart body.
 */
class BodyLimit extends Transform {
  /** Body bytes received so far. */
  seen = 0;
  /** When the body started to stream, and the longest it may be silent (the route's timeout). */
  readonly startedAt = performance.now();
  readonly silenceMs: number;
  /** Set to `--min-body-rate` while the body is behind it (its bytes no longer keep the exchange alive). */
  tooSlow = 0;
  private readonly limit: number;
  private readonly onChunk: (seen: number) => void;
  private readonly onEnd: () => void;
  private readonly rewriter: BodyRewriter | undefined;
  constructor(
    limit: number,
    silenceMs: number,
    onChunk: (seen: number) => void,
    onEnd: () => void,
    rewriter: BodyRewriter | undefined,
  ) {
    super();
    this.limit = limit;
    this.silenceMs = silenceMs;
    this.onChunk = onChunk;
    this.onEnd = onEnd;
    this.rewriter = rewriter;
    rewriter?.start({
      push: (data) => {
        if (!this.destroyed) this.push(data);
      },
      fail: (refusal) => {
        if (!this.destroyed) this.destroy(refusal);
      },
    });
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    this.onChunk(this.seen);
    if (this.seen > this.limit) {
      callback(new GatewayError("PG_ERR_BODY_TOO_LARGE", `request body over ${this.limit} bytes`));
      return;
    }
    if (this.rewriter === undefined) {
      callback(null, chunk);
      return;
    }
    this.rewriter.write(chunk, () => callback());
  }
  override _flush(callback: TransformCallback): void {
    this.onEnd();
    if (this.rewriter === undefined) {
      callback();
      return;
    }
    this.rewriter.end((refusal) => callback(refusal));
  }
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.rewriter?.destroy();
    callback(error);
  }
}

/** The client went away: nothing to answer; audited as such, not as a failure of the gateway or the upstream. */
export function clientClosed(reason: string): GatewayError {
  return new GatewayError("PG_ERR_CLIENT_CLOSED", reason);
}

/** Refuses a request whose declared Content-Length is over `limit`, before any of its body is read. */
export function checkDeclaredLength(req: IncomingMessage, limit: number): void {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit) {
    throw new GatewayError("PG_ERR_BODY_TOO_LARGE", `content-length ${declared} over ${limit}`);
  }
}

/** Whether the request declares a body (a length above 0, or chunked). */
export function requestHasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  if (length !== undefined) return length !== "0";
  return req.headers["transfer-encoding"] !== undefined;
}

function mapUpstreamError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) {
    return new GatewayError("PG_ERR_UPSTREAM_TIMEOUT", "upstream timed out", {}, { cause: error });
  }
  if (error instanceof undiciErrors.ConnectTimeoutError) {
    return new GatewayError("PG_ERR_UPSTREAM_UNAVAILABLE", "upstream connect timeout", {}, { cause: error });
  }
  const code = (error as { code?: unknown }).code;
  return new GatewayError(
    "PG_ERR_UPSTREAM_UNAVAILABLE",
    `upstream failed: ${typeof code === "string" ? code : (error as Error).name}`,
    {},
    { cause: error },
  );
}

/** Where a response being forwarded keeps its exchange, for the listeners below. */
const exchangeOf = Symbol("phantomgate.exchange");
type ExchangeResponse = ServerResponse & { [exchangeOf]?: ForwardHandler | undefined };

// The response's listeners and the timer's callback are shared by every exchange and find theirs through the
// response (or the timer's argument): four closures fewer per request than one bound listener each.
function onResponseClose(this: ExchangeResponse): void {
  this[exchangeOf]?.clientLeft();
}
function onResponseFinish(this: ExchangeResponse): void {
  this[exchangeOf]?.finished();
}
function onResponseDrain(this: ExchangeResponse): void {
  this[exchangeOf]?.drained();
}
function onExchangeTimeout(exchange: ForwardHandler): void {
  exchange.timedOut();
}

function onClientTimeout(exchange: ForwardHandler): void {
  exchange.clientTimedOut();
}

/**
 * One exchange as an undici dispatch handler. The upstream response is written straight into the client's
 * ServerResponse: no Readable, stream pipeline or AbortController per request (a measurable share of the
 * per-request cost). Settles once: with the upstream status when the response finished or had to be cut, or
 * with a GatewayError while nothing was sent to the client. Callbacks never throw back into undici.
 */
class ForwardHandler implements Dispatcher.DispatchHandler {
  private readonly res: ServerResponse;
  private readonly outcome: ForwardOutcome;
  private readonly requestId: string;
  private controller: Dispatcher.DispatchController | null = null;
  /** Set when the gateway ends the exchange itself (body over the limit, client gone, request stream broke). */
  private reason: Error | null = null;
  private status = 0;
  /** The upstream response is complete and res.end() was called; only the flush to the client is left. */
  private ended = false;
  /** The client's connection is full: the upstream is paused until it drains. */
  private waitingForClient = false;
  /**
   * Runs while the client's connection is full (or the upstream ended with bytes still to go to the client): the
   * client's own timeout, armed only then, so a request that never waits for its client costs no second timer.
   */
  private clientTimer: NodeJS.Timeout | undefined = undefined;
  private readonly clientTimeoutMs: number;
  private settled = false;
  /** The streamed request body and its source, when there is one, and the listener for their errors. */
  private body: BodyLimit | null = null;
  private req: IncomingMessage | null = null;
  private onBodyError: ((error: Error) => void) | null = null;
  /**
   * The route's timeout: until the response head, then as the longest silence between body chunks, on either
   * side: the upstream not sending or the client not reading (a client that never reads would otherwise hold
   * the upstream connection for good). One node timer, refreshed on every chunk and cleared when the exchange settles. (undici's
   * own headersTimeout/bodyTimeout keep each request's timer object for up to a second after the request
   * finished; at thousands of requests a second those objects outlived two scavenges and were promoted, which
   * made young-generation pauses ~40 % longer and major collections more frequent.)
   */
  private readonly timer: NodeJS.Timeout;

  constructor(
    res: ServerResponse,
    outcome: ForwardOutcome,
    requestId: string,
    timeoutMs: number,
    clientTimeoutMs: number,
  ) {
    this.res = res;
    this.outcome = outcome;
    this.requestId = requestId;
    this.clientTimeoutMs = clientTimeoutMs;
    this.timer = setTimeout(onExchangeTimeout, timeoutMs, this);
    (res as ExchangeResponse)[exchangeOf] = this;
    res.on("close", onResponseClose);
  }

  /**
   * Streams `req` upstream through the route's body limit (and `rewriter`, when given); a broken, oversized or
   * refused body aborts the exchange.
   */
  streamBody(
    req: IncomingMessage,
    limit: number,
    rewriter: BodyRewriter | undefined,
    timeoutMs: number,
    minBodyRate: number,
  ): BodyLimit {
    // A client still sending its body keeps the exchange alive (the timeout counts silence, not size), as long as
    // it keeps up the least rate: past the route's timeout plus a second per `minBodyRate` bytes, its bytes no
    // longer do, so a body trickled a byte per silence interval cannot hold an upstream place for minutes.
    // The rate is measured from the body's start, or from when the upstream last held it back (undici pauses the
    // body while the upstream connection is full, and takes none before it has one): a body slowed by an upstream
    // that reads slowly is not the client's doing.
    let since = 0;
    let seenBefore = 0;
    const body = new BodyLimit(
      limit,
      timeoutMs,
      (seen) => {
        if (this.status !== 0 || this.settled) return;
        const now = performance.now();
        if (body.readableFlowing !== true) {
          since = now;
          seenBefore = seen;
        } else if (minBodyRate > 0 && now - since > timeoutMs + ((seen - seenBefore) * 1000) / minBodyRate) {
          body.tooSlow = minBodyRate;
          return;
        }
        body.tooSlow = 0;
        this.timer.refresh();
      },
      // The whole request is out: the upstream gets the rule's whole timeout to answer from here.
      () => {
        if (this.status === 0 && !this.settled) this.timer.refresh();
      },
      rewriter,
    );
    since = body.startedAt;
    body.on("resume", () => {
      since = performance.now();
      seenBefore = body.seen;
    });
    this.body = body;
    this.req = req;
    const onBodyError = (error: Error): void => {
      // The body limit's own error, or the client's request stream breaking off (it closed or reset the
      // connection).
      this.abort(error instanceof GatewayError ? error : clientClosed("request body broke off"));
    };
    this.onBodyError = onBodyError;
    // Stays on the body for good: undici may still destroy it with an error after the exchange settled.
    body.on("error", onBodyError);
    req.on("error", onBodyError);
    req.pipe(body);
    return body;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // The client left or the body failed while the request waited for a connection: send nothing.
    if (this.reason !== null) controller.abort(this.reason);
    else this.controller = controller;
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: UndiciHeaders,
  ): void {
    // 1xx interim responses are not relayed; the final one follows on the same request.
    if (statusCode < 200) return;
    this.status = statusCode;
    this.timer.refresh();
    this.outcome.responseStarted();
    try {
      const out = buildClientResponseHeaders(headers, this.requestId);
      // The upstream answered before it had the whole request body (an early 401 or 413): undici drops the rest,
      // so nothing reads the client's remaining bytes and the connection cannot carry another request.
      if (this.req !== null && !this.req.complete) {
        out.connection = "close";
        // … and lingers, so that a client still sending gets this answer rather than a reset.
        lingerOnClose(this.req);
      }
      this.res.writeHead(statusCode, out);
    } catch (error) {
      // node:http refused a header the upstream sent (e.g. an invalid character): nothing went out yet.
      this.abort(error as Error);
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.timer.refresh();
    if (!this.res.write(chunk)) {
      // The client reads slower than the upstream sends: stop reading the upstream until the client caught up.
      // The client's own timer now runs, until the connection drains.
      this.waitingForClient = true;
      this.waitForClient();
      controller.pause();
      this.res.once("drain", onResponseDrain);
    }
  }

  onResponseEnd(): void {
    this.outcome.upstreamEnded();
    // The client gets the client timeout to take what is still buffered for it.
    this.timer.refresh();
    this.ended = true;
    this.res.on("finish", onResponseFinish);
    this.res.end();
    if (!this.settled && this.res.writableLength > 0) this.waitForClient();
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, error: Error): void {
    this.fail(error);
  }

  /** Ends the exchange for a reason of the gateway's own, whether or not the request is on a connection yet. */
  private abort(reason: Error): void {
    // Once the whole answer is handed to res, only the client connection closing can still end the exchange.
    if (this.settled || this.ended) return;
    this.reason = reason;
    // Undici reports the abort back through onResponseError. Before onRequestStart there is no controller:
    // settle now, and onRequestStart aborts the request once it gets a connection.
    this.controller?.abort(reason);
    this.fail(reason);
  }

  private fail(error: Error): void {
    if (this.settled) return;
    this.cleanUp();
    // request() destroyed the body stream on failure; with dispatch() that is the handler's job.
    this.body?.destroy();
    const failure = this.reason instanceof GatewayError ? this.reason : mapUpstreamError(error);
    if (this.res.headersSent) {
      // The status line is out, so the connection is all we can end. The audit records the upstream status and
      // why the response was cut.
      this.outcome.cut = failure;
      this.res.destroy();
      this.outcome.forwarded(this.status);
      return;
    }
    this.outcome.failed(failure);
  }

  /** Starts the client's timeout, unless it runs already (it counts from when the connection first filled up). */
  private waitForClient(): void {
    if (this.clientTimer === undefined)
      this.clientTimer = setTimeout(onClientTimeout, this.clientTimeoutMs, this);
  }

  private cleanUp(): void {
    this.settled = true;
    clearTimeout(this.timer);
    clearTimeout(this.clientTimer);
    this.res.off("close", onResponseClose).off("drain", onResponseDrain).off("finish", onResponseFinish);
    (this.res as ExchangeResponse)[exchangeOf] = undefined;
    if (this.onBodyError !== null) this.req?.off("error", this.onBodyError);
  }

  clientLeft(): void {
    if (this.ended) {
      // The whole upstream answer was handed over; only its last bytes did not reach the client.
      this.cleanUp();
      this.outcome.forwarded(this.status);
      return;
    }
    this.abort(clientClosed("client closed the connection"));
  }

  finished(): void {
    this.cleanUp();
    this.outcome.forwarded(this.status);
  }

  drained(): void {
    this.waitingForClient = false;
    clearTimeout(this.clientTimer);
    this.clientTimer = undefined;
    if (this.settled) return;
    this.timer.refresh();
    if (!this.ended) this.controller?.resume();
  }

  timedOut(): void {
    const { req, body } = this;
    if (
      this.status === 0 &&
      body !== null &&
      req !== null &&
      !req.complete &&
      body.readableFlowing === true &&
      body.readableLength === 0
    ) {
      // The upstream takes every byte and waits for the rest of the body: the client is late, not the upstream.
      // (A body the upstream holds back means it stopped reading: an upstream timeout, below.)
      const seconds = ((performance.now() - body.startedAt) / 1000).toFixed(1);
      this.abort(
        new GatewayError(
          "PG_ERR_REQUEST_TIMEOUT",
          body.tooSlow > 0
            ? `request body too slow: ${body.seen} bytes in ${seconds} s (--min-body-rate ${body.tooSlow})`
            : `request body stalled: no bytes for ${body.silenceMs} ms`,
        ),
      );
      return;
    }
    if (this.ended || this.waitingForClient) {
      // The upstream is not what the exchange waits for: the client's own timeout decides (a slow reader empties
      // the kernel's multi-megabyte socket buffers without a sign the gateway can see until a `drain`).
      this.timer.refresh();
      this.waitForClient();
      return;
    }
    this.abort(
      this.status === 0
        ? new undiciErrors.HeadersTimeoutError("upstream sent no response head in time")
        : new undiciErrors.BodyTimeoutError("upstream body stalled"),
    );
  }

  /** The client's connection stayed full for the client timeout (its timer is cleared at each `drain`). */
  clientTimedOut(): void {
    this.clientTimer = undefined;
    if (this.settled) return;
    if (this.ended) {
      // The upstream is done, but the client has not taken the end of its response.
      this.outcome.cut = new GatewayError(
        "PG_ERR_CLIENT_TIMEOUT",
        "client did not take the end of the response",
      );
      this.cleanUp();
      this.res.destroy();
      this.outcome.forwarded(this.status);
      return;
    }
    this.abort(new GatewayError("PG_ERR_CLIENT_TIMEOUT", "client stopped reading the response"));
  }
}

/**
 * Sends the request upstream and streams the answer to the client; `input.outcome` hears how it ended: with the
 * upstream status once the response has been fully written (or cut after its status line went out), or with a
 * GatewayError when nothing was sent to the client yet. No promise per request: the exchange calls back.
 *
 * @throws GatewayError when the request is not sent at all (client already gone, declared body over the limit).
 */
export function forwardRequest(input: ForwardInput): void {
  const { req, res } = input;
  // The client may have left while the request waited for authentication: its close event has passed, so the
  // exchange would never learn of it. Nothing is sent upstream for it.
  if (res.destroyed) throw clientClosed("client closed the connection before forwarding");
  checkDeclaredLength(req, input.maxBodyBytes);
  const handler = new ForwardHandler(
    res,
    input.outcome,
    input.requestId,
    input.timeoutMs,
    input.clientTimeoutMs,
  );
  let body: BodyLimit | Buffer | null = null;
  if (input.bufferedBody !== undefined) {
    body = input.bufferedBody;
    input.headers["content-length"] = String(input.bufferedBody.length);
  } else if (requestHasBody(req)) {
    input.outcome.release();
    if (input.bodyRewriter !== undefined) {
      // The rewritten body has its own boundary and length (sent chunked).
      input.headers["content-type"] = input.bodyRewriter.contentType;
      delete input.headers["content-length"];
    }
    body = handler.streamBody(
      req,
      input.maxBodyBytes,
      input.bodyRewriter,
      input.timeoutMs,
      input.minBodyRate,
    );
  }
  try {
    input.dispatcher.dispatch(
      {
        origin: input.origin,
        path: input.pathAndQuery,
        method: req.method as Dispatcher.HttpMethod,
        headers: input.headers,
        body,
        // The handler keeps the time itself (see ForwardHandler.timer).
        headersTimeout: 0,
        bodyTimeout: 0,
      },
      handler,
    );
  } catch (error) {
    // Dispatchers report failures through onResponseError; this is for one that throws instead.
    handler.onResponseError(null, error as Error);
  }
}
