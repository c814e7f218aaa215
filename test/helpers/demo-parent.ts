// A stand-in for `phantomgate demo` in tests: starts the demo authorization server through spawnReady on port 0,
// prints `{"child":<pid>,"port":<port>}`, and stops it on the signals the demo command waits for.
import { fileURLToPath } from "node:url";
import { waitForSignal } from "../../src/cli/signals.ts";
import { spawnReady } from "../../src/demo/spawn-ready.ts";

const entry = fileURLToPath(new URL("../../src/demo/auth-server-main.ts", import.meta.url));
const as = await spawnReady(entry, ["--port", "0"]);
// Listening before the line goes out: the test signals as soon as it reads it.
const signalled = waitForSignal();
process.stdout.write(`${JSON.stringify({ child: as.child.pid, port: as.ready.port })}\n`);
const signal = await signalled;
await as.stop();
process.stdout.write(`${JSON.stringify({ stopped: signal })}\n`);
