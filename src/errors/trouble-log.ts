// Repeated failures of one dependency (an authorization server's endpoint, an upstream), logged so that an
// operator learns of them and of their end without a line per failed request: the first failure at once, then at
// most one line per interval while they go on (with the count since the last line), and one line when the
// dependency answers again.
import type { Logger } from "pino";

/** How often a failure that goes on is logged again. */
export const TROUBLE_LOG_INTERVAL_MS = 10_000;
/** Keys come from configuration (routes, auth servers, endpoints); the oldest trouble is forgotten beyond this. */
const MAX_TROUBLES = 1_000;

interface Trouble {
  readonly sinceMs: number;
  lastLoggedMs: number;
  failures: number;
  unlogged: number;
}

export interface TroubleLog {
  /** How many keys are failing now: a caller on a hot path calls `succeeded` only when this is above 0. */
  readonly failing: number;
  /** One failure of `key`: logged at warn at once the first time, then at most once per interval. */
  failed(key: string, fields: Readonly<Record<string, unknown>>, message: string): void;
  /** A success of `key`: logged at info once when it had been failing. */
  succeeded(key: string, fields: Readonly<Record<string, unknown>>, message: string): void;
}

export function createTroubleLog(
  logger: Logger,
  now: () => number = Date.now,
  intervalMs: number = TROUBLE_LOG_INTERVAL_MS,
): TroubleLog {
  const troubles = new Map<string, Trouble>();
  return {
    get failing() {
      return troubles.size;
    },
    failed(key, fields, message) {
      const at = now();
      const trouble = troubles.get(key);
      if (trouble === undefined) {
        if (troubles.size >= MAX_TROUBLES) {
          const oldest = troubles.keys().next();
          if (oldest.done !== true) troubles.delete(oldest.value);
        }
        troubles.set(key, { sinceMs: at, lastLoggedMs: at, failures: 1, unlogged: 0 });
        logger.warn(fields, message);
        return;
      }
      trouble.failures += 1;
      trouble.unlogged += 1;
      if (at - trouble.lastLoggedMs < intervalMs) return;
      logger.warn(
        { ...fields, failuresSinceLastLine: trouble.unlogged, failingForMs: at - trouble.sinceMs },
        message,
      );
      trouble.lastLoggedMs = at;
      trouble.unlogged = 0;
    },
    succeeded(key, fields, message) {
      const trouble = troubles.get(key);
      if (trouble === undefined) return;
      troubles.delete(key);
      logger.info({ ...fields, failures: trouble.failures, failedForMs: now() - trouble.sinceMs }, message);
    },
  };
}
