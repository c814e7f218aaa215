// Lingering close, as nginx does it. An answer given before the client sent its whole body (413 for a declared
// length, an early 401 from the upstream) ends the connection, since the rest of the body cannot be told apart
// from the next request. Closing a socket while the client still sends makes the kernel answer with a reset: the
// client's write fails (EPIPE, ECONNRESET), most clients then report that instead of the answer, and a reset can
// even drop the answer from the client's receive queue. So the gateway ends only its side once the answer is out,
// reads and drops what the client still sends, and destroys the socket when the client ends its side, when the
// body ended, after LINGER_MS, or after LINGER_MAX_BYTES, whichever comes first.
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";

/** Longest time a connection is kept open for the rest of a body no one reads. */
export const LINGER_MS = 5_000;
/** Most body bytes read and dropped after the answer; a larger upload gets its reset. */
export const LINGER_MAX_BYTES = 16 * 1024 * 1024;

const lingering = Symbol("phantomgate.lingering");
/** node:http ends a connection whose response says `Connection: close` with `socket.destroySoon()`. */
type LingeringSocket = Socket & { destroySoon?: () => void; [lingering]?: true };

/**
 * True when the connection's answer said `Connection: close` and the gateway is lingering on it: a request the
 * client pipelined behind the unread body must not be run (RFC 9112 §9.6; a client retries what got no answer).
 */
export function isLingering(socket: Socket | null): boolean {
  return socket !== null && (socket as LingeringSocket)[lingering] === true;
}

/**
 * Makes the connection of `req`, which is answered before its body was read, linger when node:http closes it
 * after the answer. Call before the answer ends. Nothing changes when the body has been read already.
 */
export function lingerOnClose(req: IncomingMessage): void {
  const socket = req.socket as LingeringSocket | null;
  if (socket === null || socket.destroyed || socket[lingering] === true) return;
  socket[lingering] = true;
  // An own property in front of net.Socket's method, for this connection only.
  socket.destroySoon = () => {
    linger(socket, req);
  };
}

function linger(socket: LingeringSocket, req: IncomingMessage): void {
  // The answer is queued on the socket: end() sends it, then FIN.
  if (socket.writable) socket.end();
  // However the lingering ends, the socket is gone after LINGER_MS (also when the client never reads the answer).
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once("close", () => clearTimeout(timer));
  if (req.complete || req.destroyed) {
    destroyOnceWritten(socket);
    return;
  }
  let dropped = 0;
  const done = (): void => {
    req.off("data", onData);
    destroyOnceWritten(socket);
  };
  const onData = (chunk: Buffer): void => {
    dropped += chunk.length;
    if (dropped > LINGER_MAX_BYTES) done();
  };
  socket.once("end", done);
  // The answer is out, so nothing else wants the body: a pipe to an upstream that stopped reading would pause it.
  req.unpipe();
  req.on("data", onData).once("end", done);
  req.resume();
}

/** Destroys the socket once what was written to it went out (at once when it already has). */
function destroyOnceWritten(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableFinished) socket.destroy();
  else socket.once("finish", () => socket.destroy());
}
