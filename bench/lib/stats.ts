// Small numeric helpers: a growable sample buffer with exact percentiles (sorted array), and medians.
import type { LatencySummary } from "./protocol.ts";

/** Latency samples in milliseconds; grows by doubling, sorted once at the end. */
export class Samples {
  #values = new Float64Array(1 << 16);
  #count = 0;

  add(value: number): void {
    if (this.#count === this.#values.length) {
      const bigger = new Float64Array(this.#values.length * 2);
      bigger.set(this.#values);
      this.#values = bigger;
    }
    this.#values[this.#count] = value;
    this.#count += 1;
  }

  get count(): number {
    return this.#count;
  }

  summary(): LatencySummary {
    const sorted = this.#values.subarray(0, this.#count).sort();
    let sum = 0;
    for (const value of sorted) sum += value;
    return {
      count: this.#count,
      mean: this.#count === 0 ? Number.NaN : sum / this.#count,
      p50: quantile(sorted, 0.5),
      p90: quantile(sorted, 0.9),
      p99: quantile(sorted, 0.99),
      p999: quantile(sorted, 0.999),
      max: this.#count === 0 ? Number.NaN : (sorted[this.#count - 1] ?? Number.NaN),
    };
  }
}

/** Nearest-rank quantile of an ascending array (NaN when empty). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/** Median (mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  const finite = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const middle = Math.floor(finite.length / 2);
  if (finite.length % 2 === 1) return finite[middle] ?? Number.NaN;
  return ((finite[middle - 1] ?? Number.NaN) + (finite[middle] ?? Number.NaN)) / 2;
}
