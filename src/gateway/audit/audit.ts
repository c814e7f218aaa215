// The audit trail: one JSON line per request, written asynchronously to stdout or a file. Never a raw token:
// only the token's fingerprint.
//
// Cost matters here: the line is written for every request. Measured on the cache-hit path, handing each line to
// the writer on its own cost ~29 µs of a ~117 µs request (a write(2) through the thread pool every few lines, and
// per-line bookkeeping in the writer); building each line as a string allocated ~2.5 KB per request. So lines
// are serialised by hand straight into a batch buffer, and the writer (pino's sonic-boom) gets one buffer per
// batch: when it is nearly full (BATCH_BYTES), or every FLUSH_MS.
import pino from "pino";

export interface AuditRecord {
  readonly time: string;
  readonly requestId: string;
  readonly traceId: string;
  readonly remoteAddress: string | undefined;
  /** The client's `X-Forwarded-For` chain, with `--trust-forwarded` only (cut to 256 characters). */
  readonly forwardedFor?: string | undefined;
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
  readonly decision: "allow" | "deny" | "error" | "abort";
  readonly reason: string;
  /** What went wrong, in words (the error's internal reason): on refusals and failures, never on success. */
  readonly detail?: string | undefined;
  readonly status: number;
  readonly upstreamStatus: number | undefined;
  readonly latencyMs: number;
}

/**
 * Where a caller keeps a line's token fields (client id, subject, scopes, fingerprint) encoded for its next line
 * with the same values: the gateway keeps one with each connection's credential, so a connection sending one
 * token copies those ~130 bytes instead of encoding them per request. The values are compared before the bytes
 * are reused; other values are encoded and kept instead.
 */
export interface AuditTokenMemo {
  clientId: string | undefined;
  sub: string | undefined;
  scopes: readonly string[] | undefined;
  tokenFingerprint: string | undefined;
  bytes: Uint8Array | undefined;
}

export function newAuditTokenMemo(): AuditTokenMemo {
  return {
    clientId: undefined,
    sub: undefined,
    scopes: undefined,
    tokenFingerprint: undefined,
    bytes: undefined,
  };
}

export interface AuditSink {
  /** `memo`: see {@link AuditTokenMemo}. */
  write(record: AuditRecord, memo?: AuditTokenMemo): void;
  flush(): Promise<void>;
}

/** A batch is handed to the writer once it holds this many bytes. */
export const BATCH_BYTES = 64 * 1024;
/** … and at least this often, so an idle gateway's lines show promptly. */
export const FLUSH_MS = 100;
/**
 * Audit bytes held for a target that does not keep up (a stalled reader of stdout, a full disk). Beyond this,
 * batches are dropped and counted instead of growing the gateway's memory until it is killed.
 */
export const MAX_PENDING_BYTES = 32 * 1024 * 1024;
/** How long a shutdown waits for the audit target to take the last lines. */
export const FLUSH_DEADLINE_MS = 5_000;
/** Written batch buffers kept for the next batches: memory already mapped and warm in the CPU caches. */
const SPARE_BATCHES = 4;

// Bytes are stored from JavaScript: a short string costs less to copy byte by byte than to hand to Buffer#write,
// whose call into C++ took most of the time of a line of ~25 pieces.

/** Writes ASCII text (the field names, numbers) at `at`; returns the offset after it. */
function putAscii(buf: Buffer, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) buf[at + i] = text.charCodeAt(i);
  return at + text.length;
}

/** DEL, the C1 controls (U+0080–U+009F, where a terminal reads U+009B as CSI) and the Unicode line separators. */
const UNSAFE_FOR_TERMINALS = /[\u007f-\u009f\u2028\u2029]/g;

function unicodeEscape(char: string): string {
  return `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/**
 * `value` as a JSON string: JSON.stringify's escapes, and also `\uXXXX` for DEL, the C1 controls and U+2028/U+2029,
 * which JSON allows raw but a terminal or a line-oriented tool reading the audit trail may act on.
 */
function jsonText(value: string): string {
  return JSON.stringify(value).replace(UNSAFE_FOR_TERMINALS, unicodeEscape);
}

/**
 * Writes `value` as a JSON string at `at`; returns the offset after it. Printable ASCII without quote or
 * backslash (nearly every value) is copied as it is; anything else goes through {@link jsonText}.
 */
function putString(buf: Buffer, at: number, value: string): number {
  buf[at] = 0x22;
  let o = at + 1;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) return at + buf.write(jsonText(value), at);
    buf[o++] = c;
  }
  buf[o] = 0x22;
  return o + 1;
}

function putNumber(buf: Buffer, at: number, value: number): number {
  return putAscii(buf, at, Number.isFinite(value) ? String(value) : "null");
}

/**
 * A latency in milliseconds as the pipeline records it, rounded to the microsecond, without Number#toString
 * (the shortest-round-trip conversion of a fraction was a measurable share of a line). For v = k / 1000 with k a
 * whole number below 2^42, the shortest decimal that reads back as v is k / 1000's own decimals with trailing
 * zeros dropped, which is what JSON.stringify prints. Anything else goes through putNumber.
 */
function putMillis(buf: Buffer, at: number, value: number): number {
  const micros = Math.round(value * 1000);
  if (micros / 1000 !== value || micros < 0 || micros >= 2 ** 42) return putNumber(buf, at, value);
  let o = putAscii(buf, at, String(Math.floor(micros / 1000)));
  const fraction = micros % 1000;
  if (fraction !== 0) {
    buf[o++] = 0x2e;
    buf[o++] = 0x30 + Math.floor(fraction / 100);
    const rest = fraction % 100;
    if (rest !== 0) {
      buf[o++] = 0x30 + Math.floor(rest / 10);
      if (rest % 10 !== 0) buf[o++] = 0x30 + (rest % 10);
    }
  }
  return o;
}

/** `,"name":"value"` when the value is there. */
function putField(buf: Buffer, at: number, name: string, value: string | undefined): number {
  if (value === undefined) return at;
  return putString(buf, putAscii(buf, at, name), value);
}

/** At most this many bytes: 6 per UTF-16 unit of any string (`\u00XX`), plus the names and numbers. */
function lineBound(r: AuditRecord): number {
  let units =
    r.time.length +
    r.requestId.length +
    r.traceId.length +
    (r.remoteAddress?.length ?? 0) +
    (r.forwardedFor?.length ?? 0) +
    (r.host?.length ?? 0) +
    r.method.length +
    (r.route?.length ?? 0) +
    (r.pathTemplate?.length ?? 0) +
    (r.authMode?.length ?? 0) +
    (r.clientId?.length ?? 0) +
    (r.sub?.length ?? 0) +
    (r.tokenFingerprint?.length ?? 0) +
    r.reason.length +
    (r.detail?.length ?? 0);
  let punctuation = 512;
  if (r.scopes !== undefined) {
    for (const scope of r.scopes) units += scope.length;
    punctuation += 3 * r.scopes.length;
  }
  return 6 * units + punctuation;
}

// A route's fields of a line are the same for every request of the route, so their encoded bytes are kept per
// route id and copied. The other fields are compared before the bytes are reused, so an id that comes back with
// other values (another snapshot) is encoded again, never written wrong. (Keeping a cached token's fields the
// same way saved ~0.3 µs per request but cost ~630 bytes per cached token, a third more memory per token.)
interface RoutePart {
  readonly pathTemplate: string | undefined;
  readonly authMode: string | undefined;
  readonly bytes: Uint8Array;
}
/** Route ids come and go with snapshots; the map starts over when it holds this many. */
const MAX_ROUTE_PARTS = 4096;
const routeParts = new Map<string, RoutePart>();

/** `,"route":…,"pathTemplate":…,"authMode":…`, each when there. */
function putRoutePart(buf: Buffer, at: number, r: AuditRecord): number {
  if (r.route === undefined) {
    return putField(buf, putField(buf, at, ',"pathTemplate":', r.pathTemplate), ',"authMode":', r.authMode);
  }
  const known = routeParts.get(r.route);
  if (known !== undefined && known.pathTemplate === r.pathTemplate && known.authMode === r.authMode) {
    buf.set(known.bytes, at);
    return at + known.bytes.length;
  }
  let o = putField(buf, at, ',"route":', r.route);
  o = putField(buf, o, ',"pathTemplate":', r.pathTemplate);
  o = putField(buf, o, ',"authMode":', r.authMode);
  if (routeParts.size >= MAX_ROUTE_PARTS) routeParts.clear();
  routeParts.set(r.route, {
    pathTemplate: r.pathTemplate,
    authMode: r.authMode,
    bytes: new Uint8Array(buf.subarray(at, o)),
  });
  return o;
}

function sameScopes(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `,"clientId":…,"sub":…,"scopes":[…],"tokenFingerprint":…`, each when there; copied from `memo` when it holds them. */
function putTokenPart(buf: Buffer, at: number, r: AuditRecord, memo: AuditTokenMemo | undefined): number {
  if (
    memo?.bytes !== undefined &&
    memo.tokenFingerprint === r.tokenFingerprint &&
    memo.clientId === r.clientId &&
    memo.sub === r.sub &&
    sameScopes(memo.scopes, r.scopes)
  ) {
    buf.set(memo.bytes, at);
    return at + memo.bytes.length;
  }
  let o = putField(buf, at, ',"clientId":', r.clientId);
  o = putField(buf, o, ',"sub":', r.sub);
  if (r.scopes !== undefined) {
    o = putAscii(buf, o, ',"scopes":[');
    for (let i = 0; i < r.scopes.length; i++) {
      if (i > 0) buf[o++] = 0x2c;
      o = putString(buf, o, r.scopes[i] ?? "");
    }
    buf[o++] = 0x5d;
  }
  o = putField(buf, o, ',"tokenFingerprint":', r.tokenFingerprint);
  if (memo !== undefined) {
    memo.clientId = r.clientId;
    memo.sub = r.sub;
    memo.scopes = r.scopes;
    memo.tokenFingerprint = r.tokenFingerprint;
    memo.bytes = new Uint8Array(buf.subarray(at, o));
  }
  return o;
}

/**
 * Writes the record as one JSON line (with its newline) at `at` and returns the offset after it: byte for byte
 * what `{"type":"audit",...JSON.stringify(record)}` gives, same key order, undefined fields left out, except that
 * DEL, C1 controls and U+2028/U+2029 are escaped too (see {@link jsonText}). Every string value is escaped, since
 * hosts, subjects, client ids and scopes come from outside. The caller leaves `lineBound(r)` bytes free.
 */
function putLine(buf: Buffer, at: number, r: AuditRecord, memo?: AuditTokenMemo): number {
  let o = putAscii(buf, at, '{"type":"audit","time":');
  o = putString(buf, o, r.time);
  o = putString(buf, putAscii(buf, o, ',"requestId":'), r.requestId);
  o = putString(buf, putAscii(buf, o, ',"traceId":'), r.traceId);
  o = putField(buf, o, ',"remoteAddress":', r.remoteAddress);
  o = putField(buf, o, ',"forwardedFor":', r.forwardedFor);
  o = putField(buf, o, ',"host":', r.host);
  o = putString(buf, putAscii(buf, o, ',"method":'), r.method);
  o = putRoutePart(buf, o, r);
  o = putTokenPart(buf, o, r, memo);
  o = putField(buf, o, ',"cache":', r.cache);
  o = putString(buf, putAscii(buf, o, ',"decision":'), r.decision);
  o = putString(buf, putAscii(buf, o, ',"reason":'), r.reason);
  o = putField(buf, o, ',"detail":', r.detail);
  o = putNumber(buf, putAscii(buf, o, ',"status":'), r.status);
  if (r.upstreamStatus !== undefined)
    o = putNumber(buf, putAscii(buf, o, ',"upstreamStatus":'), r.upstreamStatus);
  o = putMillis(buf, putAscii(buf, o, ',"latencyMs":'), r.latencyMs);
  buf[o] = 0x7d;
  buf[o + 1] = 0x0a;
  return o + 2;
}

// The audit time as an ISO string, `Date#toISOString` for `ms`. A busy gateway logs many lines per millisecond,
// and a quiet one pays toISOString's call into the runtime on every line (~8 µs per request at 500 req/s in a
// CPU profile, with cold caches): so the text up to the second is made once per second, and the milliseconds
// are appended from a table.
const MILLIS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, "0"));
let isoSecond = Number.NaN;
let isoPrefix = "";
let isoMs = Number.NaN;
let isoText = "";

/** `new Date(ms).toISOString()` for a whole number of milliseconds, cached per millisecond and per second. */
export function isoTime(ms: number): string {
  if (ms === isoMs) return isoText;
  const second = Math.floor(ms / 1000);
  if (second !== isoSecond) {
    const full = new Date(second * 1000).toISOString();
    // "…:SS.000Z": everything before the milliseconds, also for years beyond 9999 ("+010000-…").
    isoPrefix = full.slice(0, full.length - 4);
    isoSecond = second;
  }
  isoMs = ms;
  isoText = `${isoPrefix}${MILLIS[ms - second * 1000] ?? ""}Z`;
  return isoText;
}

/** The record's audit line as a string (what the sink writes, for tests and tools). */
export function auditLine(r: AuditRecord, memo?: AuditTokenMemo): string {
  const buf = Buffer.allocUnsafe(lineBound(r));
  return buf.toString("utf8", 0, putLine(buf, 0, r, memo));
}

interface BufferWriter {
  write(data: Buffer): boolean;
  flush(callback: (error?: Error) => void): void;
  once(event: "ready", listener: () => void): void;
  once(event: "error", listener: (error: NodeJS.ErrnoException) => void): void;
  on(event: "error", listener: (error: NodeJS.ErrnoException) => void): void;
  on(event: "write", listener: (bytes: number) => void): void;
  off(event: "error", listener: (error: NodeJS.ErrnoException) => void): void;
}

export interface AuditSinkOptions {
  /**
   * Called for each failed write (disk full, the reading end of a pipe gone). The gateway keeps serving: a
   * failing audit target must not take the data plane down, and the failure is logged and counted.
   */
  readonly onError?: (error: NodeJS.ErrnoException) => void;
  /** Called with the number of lines dropped because `maxPendingBytes` were already waiting for the target. */
  readonly onDrop?: (lines: number) => void;
  /** Default MAX_PENDING_BYTES. */
  readonly maxPendingBytes?: number;
}

function errorCode(error: NodeJS.ErrnoException): string {
  return error.code ?? error.message;
}

/** Mode of an audit file the gateway creates: its lines name subjects and client ids, so not world-readable. */
const AUDIT_FILE_MODE = 0o640;

/**
 * Opens the audit target and resolves once it can be written: a path that cannot be opened (no such directory,
 * no permission) fails here, at start, with a message naming it. Missing directories are not created: a
 * mistyped path must stop the start, not write the trail somewhere nobody looks.
 *
 * @param target - "stdout", "off", or a file path (appended, created with {@link AUDIT_FILE_MODE} when new; a
 *   FIFO works too).
 */
export async function openAuditSink(target: string, options: AuditSinkOptions = {}): Promise<AuditSink> {
  if (target === "off") {
    return { write() {}, flush: () => Promise.resolve() };
  }
  // Lines are written straight into a batch buffer, which the writer (sonic-boom, in buffer mode) gets whole:
  // no string per line. minLength 1: sonic-boom writes each batch as soon as it is not busy with the previous
  // one (0 would do the same but turn flush() into a no-op that does not wait for pending writes); maxWrite
  // above a batch, so it does not split one.
  // sonic-boom's types only know write(string); in buffer mode it takes (and keeps) Buffers.
  const destination: BufferWriter = pino.destination({
    dest: target === "stdout" ? 1 : target,
    sync: false,
    mkdir: false,
    mode: AUDIT_FILE_MODE,
    minLength: 1,
    maxWrite: 4 * BATCH_BYTES,
    contentMode: "buffer",
  }) as unknown as BufferWriter;
  await new Promise<void>((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException): void => {
      const hint = error.code === "ENOENT" ? " (its directory does not exist; it is not created)" : "";
      reject(new Error(`cannot open the audit log ${target}: ${errorCode(error)}${hint}`));
    };
    destination.once("error", failed);
    destination.once("ready", () => {
      destination.off("error", failed);
      resolve();
    });
  });
  // After EPIPE (the reader of stdout or a FIFO is gone) the writer drops every later write: nothing is left to
  // flush at shutdown.
  let broken = false;
  // After any other error (a full disk) the writer keeps the failed bytes and retries them only on its next
  // write: `failing` makes the flush timer offer one, so the trail resumes once the target recovers, also when
  // every new batch is being dropped meanwhile.
  let failing = false;
  let lastError: Error | undefined;
  destination.on("error", (error) => {
    // pino's EPIPE filter emits each other error a second time; count it once.
    if (error === lastError) return;
    lastError = error;
    if (error.code === "EPIPE") broken = true;
    else failing = true;
    options.onError?.(error);
  });
  // Batches handed to the writer and not yet written, oldest first. The writer writes them in order and reports
  // each write's size, so a batch whose last byte is out can be filled again.
  const pending: { buffer: Buffer; bytes: number; reusable: boolean }[] = [];
  const maxPendingBytes = options.maxPendingBytes ?? MAX_PENDING_BYTES;
  let pendingBytes = 0;
  const spare: Buffer[] = [];
  destination.on("write", (written) => {
    failing = false;
    pendingBytes -= written;
    let left = written;
    while (left > 0) {
      const head = pending[0];
      if (head === undefined) break;
      const taken = Math.min(left, head.bytes);
      head.bytes -= taken;
      left -= taken;
      if (head.bytes > 0) break;
      pending.shift();
      if (head.reusable && spare.length < SPARE_BATCHES) spare.push(head.buffer);
    }
  });
  const send = (buffer: Buffer, bytes: number, lines: number, reusable: boolean): void => {
    if (pendingBytes + bytes > maxPendingBytes) {
      options.onDrop?.(lines);
      if (reusable && spare.length < SPARE_BATCHES) spare.push(buffer);
      return;
    }
    pendingBytes += bytes;
    pending.push({ buffer, bytes, reusable });
    destination.write(buffer.subarray(0, bytes));
  };
  let batch: Buffer = Buffer.allocUnsafe(BATCH_BYTES);
  let used = 0;
  let lines = 0;
  const handOver = (): void => {
    if (used === 0) return;
    // The writer keeps the buffer it is given until written: the next lines go into another one.
    send(batch, used, lines, true);
    batch = spare.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
    used = 0;
    lines = 0;
  };
  let ticks = 0;
  const timer = setInterval(() => {
    handOver();
    // A retry about once a second while the target fails (an empty write restarts the writer).
    if (failing && !broken && ++ticks % 10 === 0) destination.write(Buffer.alloc(0));
  }, FLUSH_MS);
  timer.unref();
  return {
    write(record, memo) {
      const bound = lineBound(record);
      if (used + bound > batch.length) {
        handOver();
        if (bound > batch.length) {
          // A line larger than a whole batch (huge subjects or scope lists) goes out on its own.
          const own = Buffer.allocUnsafe(bound);
          send(own, putLine(own, 0, record, memo), 1, false);
          return;
        }
      }
      used = putLine(batch, used, record, memo);
      lines += 1;
      if (used >= BATCH_BYTES - 1024) handOver();
    },
    flush() {
      clearInterval(timer);
      handOver();
      if (broken) return Promise.resolve();
      return new Promise((resolve) => {
        // Flushing can only fail when the destination is gone; there is nothing more to do at shutdown. A target
        // that stopped reading gets FLUSH_DEADLINE_MS, so it cannot hold the shutdown forever.
        const deadline = setTimeout(resolve, FLUSH_DEADLINE_MS);
        destination.flush(() => {
          clearTimeout(deadline);
          resolve();
        });
      });
    },
  };
}
