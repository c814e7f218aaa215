// A pino logger whose output the test can read back.
import { Writable } from "node:stream";
import pino, { type Logger, type LevelWithSilent } from "pino";

export interface CapturedLogger {
  readonly logger: Logger;
  /** Everything logged so far, one JSON line per entry. */
  readonly text: () => string;
}

export function captureLogs(level: LevelWithSilent): CapturedLogger {
  let text = "";
  const logger = pino(
    { level },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        text += chunk.toString("utf8");
        done();
      },
    }),
  );
  return { logger, text: () => text };
}
