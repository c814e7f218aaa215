// How the gateway's and the operator's settings read their text: environment variables, whole numbers and
// switches, so both programs accept and reject the same values.
import { parseArgs } from "node:util";
import { z } from "zod";

/** The first of `names` holding a value; an empty or whitespace-only variable counts as unset. */
export function envSetting(
  env: Readonly<Record<string, string | undefined>>,
  names: readonly string[],
): string | undefined {
  for (const name of names) {
    const value = env[name];
    if (value !== undefined && value.trim() !== "") return value;
  }
  return undefined;
}

/** A whole number given as text; blank or other text is an error, never 0. */
export const wholeNumber = z
  .string()
  .trim()
  .regex(/^[+-]?\d+$/, {
    error: (issue) =>
      issue.input === ""
        ? "is empty; give a whole number"
        : `must be a whole number, got ${JSON.stringify(issue.input)}`,
  })
  .transform(Number)
  .pipe(z.number().int());

/** The longest delay a Node.js timer takes (2^31 - 1 ms, about 24.8 days); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

/** A duration in milliseconds that a timer will wait for: a whole number from 0 to {@link MAX_TIMER_MS}. */
export const timerMs = wholeNumber.pipe(
  z
    .number()
    .min(0)
    .max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} (about 24.8 days; longer timers fire at once)`),
);

const switchWords = new Map([
  ["true", true],
  ["1", true],
  ["yes", true],
  ["on", true],
  ["false", false],
  ["0", false],
  ["no", false],
  ["off", false],
]);

/** What a switch accepts as text (in any case), for messages and docs. */
export const switchValues = "true/false, 1/0, yes/no or on/off";

/** A switch: a boolean flag, or text from an environment variable or default; other text is an error. */
export const switchSetting = z.union([z.boolean(), z.string()]).transform((value, ctx) => {
  if (typeof value === "boolean") return value;
  const parsed = switchWords.get(value.trim().toLowerCase());
  if (parsed !== undefined) return parsed;
  ctx.addIssue({
    code: "custom",
    message: `must be ${switchValues} (any case), got ${JSON.stringify(value)}`,
  });
  return z.NEVER;
});

/** One setting as both programs declare it: a flag, the environment variable(s) behind it, its type, a default. */
export interface SettingSpec {
  readonly flag: string;
  /** One variable, or several where the first one set wins. */
  readonly env: string | readonly string[];
  readonly type: "string" | "boolean";
  /** A default value, or a description in parentheses when the default is computed or absent. */
  readonly defaultText: string;
}

/**
 * Each setting's value from its flag, else its environment variable, else its default; settings with none of
 * them are left out. Switches also take their `--no-…` form. Throws the argument parser's Error for an unknown
 * flag or a flag missing its value.
 */
export function readSettings(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  specs: readonly SettingSpec[],
  /** Filled with the flags given on the command line (not from the environment or defaults). */
  given?: Set<string>,
): Map<string, string | boolean> {
  const options: Record<string, { type: "string" | "boolean" }> = {};
  for (const spec of specs) options[spec.flag] = { type: spec.type };
  const { values } = parseArgs({
    args: [...argv],
    options,
    strict: true,
    allowPositionals: false,
    allowNegative: true,
  });
  const settings = new Map<string, string | boolean>();
  for (const spec of specs) if (values[spec.flag] !== undefined) given?.add(spec.flag);
  for (const spec of specs) {
    const value =
      values[spec.flag] ??
      envSetting(env, typeof spec.env === "string" ? [spec.env] : spec.env) ??
      (spec.defaultText.startsWith("(") ? undefined : spec.defaultText);
    // parseArgs gives a string or a boolean per flag (never an array: no option is `multiple`).
    if (typeof value === "string" || typeof value === "boolean") settings.set(spec.flag, value);
  }
  return settings;
}

/** `audit-log` → `auditLog`: a flag's name as a config key. */
export function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}
