// Types of bin/start-up-settings.js for the TypeScript that imports it (the benchmarks).
export declare const commandLineFlags: readonly string[];
export declare const runTimeFlag: string;
export declare const mallocEnv: Readonly<Record<"MALLOC_ARENA_MAX" | "MALLOC_MMAP_THRESHOLD_", string>>;
