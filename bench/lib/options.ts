// Numeric benchmark settings read from a flag, else an environment variable, else a default — checked once.

/** The flag's value, else `env[envName]`, else `fallback`; throws when it is not a number ≥ `min`. */
export function numberSetting(
  flag: string | undefined,
  envName: string,
  fallback: number,
  min: number,
  options: { integer?: boolean } = {},
): number {
  const raw = flag ?? process.env[envName];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  const valid = options.integer === true ? Number.isInteger(value) : Number.isFinite(value);
  if (!valid || value < min) {
    const kind = options.integer === true ? "an integer" : "a number";
    throw new Error(`${envName}/flag: expected ${kind} ≥ ${min}, got ${raw}`);
  }
  return value;
}
