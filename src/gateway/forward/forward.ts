// Forwarding: streams the request to the chosen upstream through an undici dispatcher (one keep-alive pool per
// origin) and streams the response back. Maps upstream failures to 502/504.
import type { IncomingMessage, ServerResponse } from "node:http";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { errors as undiciErrors, type Dispatcher } from "undici";
import { GatewayError } from "../../errors/catalogue.ts";
import { buildClientResponseHeaders } from "./headers.ts";

export interface ForwardInput {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly dispatcher: Dispatcher;
  readonly origin: string;
  /** Normalised path plus the original query string. */
  readonly pathAndQuery: string;
  readonly headers: Record<string, string | string[]>;
  readonly timeoutMs: number;
  readonly maxBodyBytes: number;
  readonly requestId: string;
  /** The whole body when an earlier stage had to read it; otherwise the request is streamed. */
  readonly bufferedBody?: Buffer | undefined;
}

/** Counts request body bytes and fails the stream once the route's limit is passed (chunked uploads). */
class BodyLimit extends Transform {
  private seen = 0;
  private readonly limit: number;
  constructor(limit: number) {
    super();
    this.limit = limit;
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      callback(new GatewayError("PG_ERR_BODY_TOO_LARGE", `request body over ${this.limit} bytes`));
      return;
    }
    callback(null, chunk);
  }
}

function requestHasBody(req: IncomingMessage): boolean {
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

/**
 * Sends the request upstream and pipes the answer to the client. Resolves with the upstream status once the
 * response has been fully written; rejects with a GatewayError when nothing was sent to the client yet.
 */
export async function forwardRequest(input: ForwardInput): Promise<number> {
  const { req, res } = input;
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > input.maxBodyBytes) {
    throw new GatewayError("PG_ERR_BODY_TOO_LARGE", `content-length ${declared} over ${input.maxBodyBytes}`);
  }
  const abort = new AbortController();
  const onClientGone = (): void => {
    if (!res.writableFinished) abort.abort();
  };
  res.once("close", onClientGone);
  let bodyError: unknown;
  let body: BodyLimit | Buffer | null = null;
  if (input.bufferedBody !== undefined) {
    body = input.bufferedBody;
    input.headers["content-length"] = String(input.bufferedBody.length);
  } else if (requestHasBody(req)) {
    const limited = new BodyLimit(input.maxBodyBytes);
    body = limited;
    req.pipe(limited);
    limited.once("error", (error) => {
      bodyError = error;
      abort.abort();
    });
    req.once("error", (error) => {
      bodyError ??= error;
      abort.abort();
    });
  }
  let upstream: Dispatcher.ResponseData;
  try {
    upstream = await input.dispatcher.request({
      origin: input.origin,
      path: input.pathAndQuery,
      method: req.method as Dispatcher.HttpMethod,
      headers: input.headers,
      body,
      headersTimeout: input.timeoutMs,
      bodyTimeout: input.timeoutMs,
      signal: abort.signal,
    });
  } catch (error) {
    res.off("close", onClientGone);
    if (bodyError instanceof GatewayError) throw bodyError;
    throw mapUpstreamError(error);
  }
  res.writeHead(upstream.statusCode, buildClientResponseHeaders(upstream.headers, input.requestId));
  try {
    await pipeline(upstream.body, res);
  } catch {
    // The client went away or the upstream broke mid-body: the status line is out, so the connection is all we
    // can end. The audit line still records the upstream status.
    res.destroy();
  } finally {
    res.off("close", onClientGone);
  }
  return upstream.statusCode;
}
