// The audit trail: one JSON line per request, written asynchronously to stdout or a file. Never a raw token:
// only the token's fingerprint.
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

/** `target`: "stdout", "off", or a file path (appended). */
export function createAuditSink(target: string): AuditSink {
  if (target === "off") {
    return { write() {}, flush: () => Promise.resolve() };
  }
  // Lines are batched into writes of at least 4 KiB, and flushed at least every 100 ms, so a busy gateway does
  // not make one write(2) per request while an idle one still shows its lines promptly.
  const destination = pino.destination({
    dest: target === "stdout" ? 1 : target,
    sync: false,
    mkdir: true,
    minLength: 4096,
  });
  const timer = setInterval(() => {
    try {
      destination.flush();
    } catch {
      // Not open yet (the file is opened asynchronously); the next tick flushes.
    }
  }, 100);
  timer.unref();
  return {
    write(record) {
      // The leading field is written by hand instead of spreading the record into a new object.
      destination.write(`{"type":"audit",${JSON.stringify(record).slice(1)}\n`);
    },
    flush() {
      clearInterval(timer);
      return new Promise((resolve) => {
        destination.flush((error) => {
          if (error) {
            // Flushing can only fail when the destination is gone; nothing more to do at shutdown.
          }
          resolve();
        });
      });
    },
  };
}
