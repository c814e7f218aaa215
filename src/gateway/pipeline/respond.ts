// Error responses: RFC 9457 problem+json bodies built only from the catalogue's safe text, with RFC 6750
// `WWW-Authenticate` challenges, `Allow` on 405 and `Retry-After` on 503 and 429.
import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { errorCatalogue, type GatewayError } from "../../errors/catalogue.ts";

const realm = "phantomgate";
/** Seconds a client should wait before retrying when the authorization server is unavailable. */
export const retryAfterSeconds = 5;

const closeAfter = new Set([400, 408, 413, 414, 417, 431, 501]);

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, "")}"`;
}

interface Problem {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly payload: string;
}

/** The status, headers and problem+json body for `error`. `close` asks for `Connection: close`. */
function problemFor(error: GatewayError, requestId: string, close: boolean): Problem {
  const spec = errorCatalogue[error.code];
  const headers: Record<string, string> = {
    "content-type": "application/problem+json",
    "cache-control": "no-store",
    "x-request-id": requestId,
  };
  if (spec.status === 401 || spec.status === 403 || "bearerError" in spec) {
    let challenge = `Bearer realm=${quote(realm)}`;
    if ("bearerError" in spec) {
      challenge += `, error=${quote(spec.bearerError)}, error_description=${quote(spec.detail)}`;
    }
    const scope = error.extra.scope;
    if (scope !== undefined) challenge += `, scope=${quote(scope)}`;
    headers["www-authenticate"] = challenge;
  }
  const allow = error.extra.allow;
  if (allow !== undefined) headers.allow = allow;
  if (spec.status === 503) headers["retry-after"] = String(retryAfterSeconds);
  else if (spec.status === 429) headers["retry-after"] = "1";
  const body: Record<string, unknown> = {
    type: `https://phantomgate.dev/errors/${error.code}`,
    title: spec.title,
    status: spec.status,
    detail: spec.detail,
    code: error.code,
    requestId,
  };
  for (const [key, value] of Object.entries(error.extra)) body[key] = value;
  const payload = JSON.stringify(body);
  headers["content-length"] = String(Buffer.byteLength(payload));
  // After a framing-level rejection the rest of the request cannot be trusted or is not worth reading.
  if (close || closeAfter.has(spec.status)) headers.connection = "close";
  return { status: spec.status, headers, payload };
}

/**
 * Writes the error response for `error` unless headers already went out (then the connection is cut).
 * `close` ends the connection after the answer, as framing-level rejections always do.
 */
export function sendError(res: ServerResponse, error: GatewayError, requestId: string, close = false): void {
  // The client is gone (or its connection was cut): there is no one to answer.
  if (res.destroyed) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const problem = problemFor(error, requestId, close);
  res.writeHead(problem.status, problem.headers);
  res.end(problem.payload);
}

/**
 * Writes the error response straight to a connection node:http holds no response object for (its parser
 * refused the request, or a CONNECT), then closes the connection.
 */
export function sendErrorToSocket(socket: Duplex, error: GatewayError, requestId: string): void {
  const { status, headers, payload } = problemFor(error, requestId, true);
  let head = `HTTP/1.1 ${status} ${errorCatalogue[error.code].title}\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  socket.end(`${head}\r\n${payload}`, () => socket.destroy());
}
