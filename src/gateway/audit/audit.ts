// The audit trail: one JSON line per request, written asynchronously to stdout or a file. Never a raw token:
// only the token's fingerprint.
//
// Cost matters here: the line is written for every request. Measured on the cache-hit path, handing each line to
// the writer on its own cost ~29 µs of a ~117 µs request (a write(2) through the thread pool every few lines, and
// per-line bookkeeping in the writer). So lines are serialised by hand (auditLine) and collected here, and the
// writer (pino's sonic-boom) gets one string per batch: when a batch reaches BATCH_BYTES, or every FLUSH_MS.
import pino from "pino";

export interface AuditRecord {
  readonly time: string;
  readonly requestId: string;
  readonly traceId: string;
  readonly remoteAddress: string | undefined;
  readonly host: string | undefined;
  readonly method: string;
  readonly route: string | undefined;
  readonly pathTemplate: string | undefined;
  readonly authMode: string | undefined;
  readonly clientId: string | undefined;
  readonly sub: string | undefined;
  readonly scopes: readonly string[] | undefined;
  readonly tokenFingerprint: string | undefined;
  readonly cache: "hit" | "miss" | undefined;
  readonly decision: "allow" | "deny" | "error";
  readonly reason: string;
  readonly status: number;
  readonly upstreamStatus: number | undefined;
  readonly latencyMs: number;
}

export interface AuditSink {
  write(record: AuditRecord): void;
  flush(): Promise<void>;
}

/** A batch is handed to the writer once it holds this many characters. */
export const BATCH_CHARS = 64 * 1024;
/** … and at least this often, so an idle gateway's lines show promptly. */
export const FLUSH_MS = 100;

const q = JSON.stringify;

function field(name: string, value: string | undefined): string {
  return value === undefined ? "" : `,"${name}":${q(value)}`;
}

/**
 * The record as one JSON line (with its newline), byte for byte what `{"type":"audit",...JSON.stringify(record)}`
 * gives: same key order, undefined fields left out. Every string value goes through JSON.stringify, since hosts,
 * subjects, client ids and scopes come from outside.
 */
export function auditLine(r: AuditRecord): string {
  const scopes = r.scopes === undefined ? "" : `,"scopes":${q(r.scopes)}`;
  const upstream = r.upstreamStatus === undefined ? "" : `,"upstreamStatus":${q(r.upstreamStatus)}`;
  return (
    `{"type":"audit","time":${q(r.time)},"requestId":${q(r.requestId)},"traceId":${q(r.traceId)}` +
    `${field("remoteAddress", r.remoteAddress)}${field("host", r.host)},"method":${q(r.method)}` +
    `${field("route", r.route)}${field("pathTemplate", r.pathTemplate)}${field("authMode", r.authMode)}` +
    `${field("clientId", r.clientId)}${field("sub", r.sub)}${scopes}` +
    `${field("tokenFingerprint", r.tokenFingerprint)}${field("cache", r.cache)},"decision":${q(r.decision)}` +
    `,"reason":${q(r.reason)},"status":${q(r.status)}${upstream},"latencyMs":${q(r.latencyMs)}}\n`
  );
}

/** `target`: "stdout", "off", or a file path (appended). */
export function createAuditSink(target: string): AuditSink {
  if (target === "off") {
    return { write() {}, flush: () => Promise.resolve() };
  }
  // minLength 1: sonic-boom writes each batch as soon as it is not busy with the previous one (0 would do the same
  // but turn flush() into a no-op that does not wait for pending writes); maxWrite above a batch, so it does not
  // split one.
  const destination = pino.destination({
    dest: target === "stdout" ? 1 : target,
    sync: false,
    mkdir: true,
    minLength: 1,
    maxWrite: 4 * BATCH_CHARS,
  });
  let batch: string[] = [];
  let chars = 0;
  const handOver = (): void => {
    if (batch.length === 0) return;
    const text = batch.join("");
    batch = [];
    chars = 0;
    destination.write(text);
  };
  const timer = setInterval(handOver, FLUSH_MS);
  timer.unref();
  return {
    write(record) {
      const line = auditLine(record);
      batch.push(line);
      chars += line.length;
      if (chars >= BATCH_CHARS) handOver();
    },
    flush() {
      clearInterval(timer);
      handOver();
      return new Promise((resolve) => {
        // Flushing can only fail when the destination is gone; there is nothing more to do at shutdown.
        destination.flush(() => resolve());
      });
    },
  };
}
