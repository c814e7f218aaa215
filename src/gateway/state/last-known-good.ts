// The gateway's last-known-good snapshot on disk: written atomically after every snapshot the gateway accepted
// from the control plane, read at start so a gateway that cannot reach the operator still serves — also after a
// restart. The file holds AuthServer client credentials: the directory is 0700 and the file 0600.
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, chmod, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { checkSnapshot, describeSnapshotIssues } from "../../snapshot/check.ts";
import type { Snapshot } from "../../snapshot/snapshot.ts";
import { systemClock, type Clock } from "../../tokens/clock.ts";

export const LAST_KNOWN_GOOD_FILE = "snapshot.json";
const FORMAT = "phantomgate.dev/last-known-good/v1";
const TEMP_PREFIX = `.${LAST_KNOWN_GOOD_FILE}.`;
const TEMP_SUFFIX = ".tmp";

const envelopeSchema = z
  .object({
    format: z.literal(FORMAT),
    savedAt: z.iso.datetime(),
    /** The control plane it came from (absent in files of older gateways). */
    controlPlane: z.string().optional(),
    snapshot: z.unknown(),
  })
  .strict();

export interface LastKnownGood {
  readonly snapshot: Snapshot;
  /** When it was written (epoch ms). */
  readonly savedAtMs: number;
}

/** The state directory cannot be used; the message names the directory and the cause. */
export class StateDirError extends Error {
  override readonly name = "StateDirError";
}

/**
 * Creates the directory (0700) if needed and checks that it is writable; throws {@link StateDirError}. An existing
 * directory others may write to (an emptyDir is 0777) is narrowed to 0700 where this process may, so nobody else
 * can swap the snapshot file; `onWarning` hears when it may not.
 */
export async function prepareStateDir(dir: string, onWarning?: (message: string) => void): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await access(dir, constants.W_OK | constants.X_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    throw new StateDirError(`state directory ${dir} is not writable (${code})`);
  }
  const { mode } = await stat(dir);
  if ((mode & 0o077) !== 0) {
    await chmod(dir, 0o700).catch((error: unknown) =>
      onWarning?.(
        `state directory ${dir} is open to other users (mode ${(mode & 0o777).toString(8)}) and cannot be narrowed (${(error as NodeJS.ErrnoException).code ?? "error"})`,
      ),
    );
  }
  // Temp files of a write that was interrupted (crash, kill) are garbage: the rename never happened.
  for (const name of await readdir(dir)) {
    if (name.startsWith(TEMP_PREFIX) && name.endsWith(TEMP_SUFFIX))
      await rm(join(dir, name), { force: true });
  }
}

function summarise(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`)
    .join("; ");
}

/**
 * Reads the last-known-good snapshot. Missing → undefined. Unreadable, corrupt or invalid → logged and
 * undefined: the gateway then waits for the control plane instead of serving something it cannot trust. So is
 * a file saved from another control plane than `controlPlane` (a state directory reused by another install).
 */
export async function loadLastKnownGood(
  dir: string,
  logger: Logger,
  controlPlane?: string,
): Promise<LastKnownGood | undefined> {
  const file = join(dir, LAST_KNOWN_GOOD_FILE);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") logger.warn({ file, code }, "last-known-good snapshot unreadable; ignoring it");
    return undefined;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    logger.warn({ file }, "last-known-good snapshot is not JSON; ignoring it");
    return undefined;
  }
  const envelope = envelopeSchema.safeParse(json);
  if (!envelope.success) {
    logger.warn(
      { file, problem: summarise(envelope.error) },
      "last-known-good file has an unknown format; ignoring it",
    );
    return undefined;
  }
  const savedFrom = envelope.data.controlPlane;
  if (controlPlane !== undefined && savedFrom !== undefined && savedFrom !== controlPlane) {
    logger.warn(
      { file, savedFrom, controlPlane },
      "last-known-good snapshot came from another control plane; ignoring it",
    );
    return undefined;
  }
  const snapshot = checkSnapshot(envelope.data.snapshot);
  if (!snapshot.ok) {
    logger.warn(
      { file, problem: describeSnapshotIssues(snapshot.issues) },
      "last-known-good snapshot is invalid; ignoring it",
    );
    return undefined;
  }
  return { snapshot: snapshot.snapshot, savedAtMs: Date.parse(envelope.data.savedAt) };
}

/**
 * Writes the snapshot atomically: a temp file in the same directory (0600, fsynced), renamed over the old one,
 * then the directory fsynced. A crash at any point leaves either the old file or the new one, never half of one.
 */
export async function saveLastKnownGood(
  dir: string,
  snapshot: Snapshot,
  clock: Clock = systemClock,
  controlPlane?: string,
): Promise<void> {
  const body = JSON.stringify({
    format: FORMAT,
    savedAt: new Date(clock.now()).toISOString(),
    ...(controlPlane === undefined ? {} : { controlPlane }),
    snapshot,
  });
  const temp = join(dir, `${TEMP_PREFIX}${process.pid}.${randomBytes(6).toString("hex")}${TEMP_SUFFIX}`);
  const handle = await open(temp, "wx", 0o600);
  try {
    await handle.writeFile(body, "utf8");
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temp, join(dir, LAST_KNOWN_GOOD_FILE));
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  const directory = await open(dir, "r");
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
