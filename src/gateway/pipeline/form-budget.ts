// The process-wide budget for form bodies held in memory. A form-urlencoded body is read whole and checked before
// any of it is forwarded (an upstream never sees part of a refused request); the budget bounds how many bytes all
// requests together may hold that way, whatever the number of connections.
/** Counts the form-body bytes held by every request of the process (`--max-form-buffer-bytes`, 64 MiB by default). */
export class FormBudget {
  readonly limit: number;
  private held = 0;

  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit <= 0)
      throw new RangeError("form budget must be a positive integer");
    this.limit = limit;
  }

  /** Takes `bytes` from the budget; false (and nothing taken) when they do not fit. */
  take(bytes: number): boolean {
    if (this.held + bytes > this.limit) return false;
    this.held += bytes;
    return true;
  }

  /** Gives back bytes taken with {@link take}. */
  give(bytes: number): void {
    this.held = Math.max(0, this.held - bytes);
  }
}
