// Formatting of the propagation benchmark's figures: tables, distributions and the targets verdict.
import { quantile } from "../lib/stats.ts";

export interface Distribution {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** Nearest-rank p50/p99/max of `values` (NaN entries dropped); with fewer than 100 values p99 is the max. */
export function distribution(values: readonly number[]): Distribution {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    max: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] ?? Number.NaN),
  };
}

export const ms = (value: number | undefined): string =>
  value !== undefined && Number.isFinite(value) ? `${Math.round(value)} ms` : "-";
export const seconds = (valueMs: number | undefined, digits = 2): string =>
  valueMs !== undefined && Number.isFinite(valueMs) ? `${(valueMs / 1000).toFixed(digits)} s` : "-";
export const mib = (bytes: number | undefined): string =>
  bytes !== undefined && Number.isFinite(bytes) ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : "-";

export function describe(d: Distribution, unit: (value: number) => string = ms): string {
  if (d.count === 0) return "-";
  return `p50 ${unit(d.p50)}, p99 ${unit(d.p99)}${d.count < 100 ? " (= max)" : `, max ${unit(d.max)}`} (n=${d.count})`;
}

/** A Markdown table, first column left-aligned, the others right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    `| ${cells
      .map((cell, column) =>
        column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join(" | ")} |`;
  const rule = `|${widths
    .map((width, column) => (column === 0 ? `:${"-".repeat(width + 1)}` : `${"-".repeat(width + 1)}:`))
    .join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

export interface Target {
  readonly name: string;
  readonly value: string;
  readonly target: string;
  /** undefined: not measured in this run. */
  readonly met: boolean | undefined;
}

export function targetsTable(targets: readonly Target[]): string {
  return table(
    ["measure", "value", "target", "met"],
    targets.map((t) => [t.name, t.value, t.target, t.met === undefined ? "-" : t.met ? "met" : "MISSED"]),
  );
}
