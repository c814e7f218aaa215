// How the gateway's and the operator's settings read their text: environment variables, whole numbers and
// switches, so both programs accept and reject the same values.
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
