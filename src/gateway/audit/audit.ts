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
  const destination = pino.destination({ dest: target === "stdout" ? 1 : target, sync: false, mkdir: true });
  return {
    write(record) {
      destination.write(`${JSON.stringify({ type: "audit", ...record })}\n`);
    },
    flush() {
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
