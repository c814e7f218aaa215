// The process settings of the long-running commands, in one place: bin/phantomgate.js applies them (and says why
// each one), and the benchmarks give the same ones to the processes they compare the gateway with.

/** V8 flags that take effect only on the command line; the launcher re-executes itself with them. */
export const commandLineFlags = ["--max-semi-space-size=16", "--expose-gc"];

/** The V8 flag the launcher sets at run time, before any application code loads. */
export const runTimeFlag = "--no-allocation-site-pretenuring";

/** glibc malloc settings, read by the C library at process start. */
export const mallocEnv = { MALLOC_ARENA_MAX: "2", MALLOC_MMAP_THRESHOLD_: "131072" };
