// The load generator: a child process of the benchmark driver (IPC), pinned by the driver to its own core.
// Raw HTTP/1.1 keep-alive over node:net — no client library between the clock and the socket — so the
// generator stays cheap next to the process under test. One request in flight per connection (no pipelining);
// latency is performance.now() from the write to the last byte of the response, kept as exact samples.
import { connect, type Socket } from "node:net";
import type { GeneratorMessage, LoadJob, LoadResult } from "./lib/protocol.ts";
import { Samples } from "./lib/stats.ts";

const CRLF2 = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");
/** How long in-flight requests may take to finish after the window closes before they count as timeouts. */
const DRAIN_MS = 10_000;

/** Incremental parser for one response at a time: content-length or chunked bodies. */
class ResponseParser {
  #pending: Buffer | undefined;
  #status = 0;
  /** -1 while reading the head; ≥ 0 remaining body bytes (length mode). */
  #remaining = -1;
  #chunked = false;

  /** Feeds bytes; returns the status once the response is complete, else 0. */
  feed(chunk: Buffer): number {
    let buf = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    this.#pending = undefined;
    if (this.#remaining === -1 && !this.#chunked) {
      const end = buf.indexOf(CRLF2);
      if (end === -1) {
        this.#pending = buf;
        return 0;
      }
      const head = buf.toString("latin1", 0, end).toLowerCase();
      this.#status = Number(head.slice(9, 12));
      buf = buf.subarray(end + 4);
      const length = /\r\ncontent-length: *(\d+)/.exec(head)?.[1];
      if (length !== undefined) {
        this.#remaining = Number(length);
      } else if (/\r\ntransfer-encoding:[^\r]*chunked/.test(head)) {
        this.#chunked = true;
      } else {
        // No body framing: only 1xx/204/304 would be legal; treat the response as complete.
        return this.#complete();
      }
    }
    if (this.#chunked) return this.#feedChunked(buf);
    this.#remaining -= buf.length;
    return this.#remaining <= 0 ? this.#complete() : 0;
  }

  #feedChunked(buf: Buffer): number {
    let position = 0;
    for (;;) {
      const lineEnd = buf.indexOf(CRLF, position);
      if (lineEnd === -1) break;
      const size = Number.parseInt(buf.toString("latin1", position, lineEnd), 16);
      if (size === 0) {
        // Last chunk, no trailers expected: "0\r\n\r\n".
        if (buf.length - lineEnd >= 4) return this.#complete();
        break;
      }
      const next = lineEnd + 2 + size + 2;
      if (next > buf.length) break;
      position = next;
    }
    this.#pending = buf.subarray(position);
    return 0;
  }

  #complete(): number {
    const status = this.#status;
    this.#pending = undefined;
    this.#remaining = -1;
    this.#chunked = false;
    this.#status = 0;
    return status;
  }

  reset(): void {
    this.#pending = undefined;
    this.#remaining = -1;
    this.#chunked = false;
    this.#status = 0;
  }
}

interface Connection {
  socket: Socket;
  readonly parser: ResponseParser;
  busy: boolean;
  sentAt: number;
  scheduledAt: number;
}

function buildRequests(job: LoadJob): Buffer[] {
  const base = `GET ${job.path} HTTP/1.1\r\nHost: 127.0.0.1:${job.port}\r\nUser-Agent: phantomgate-bench\r\n`;
  if (job.authorizations.length === 0) return [Buffer.from(`${base}\r\n`, "latin1")];
  return job.authorizations.map((value) => Buffer.from(`${base}Authorization: ${value}\r\n\r\n`, "latin1"));
}

function openSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1", noDelay: true });
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** Connects in batches so a thousand simultaneous SYNs do not overflow the listen backlog. */
async function openSockets(port: number, count: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  for (let start = 0; start < count; start += 100) {
    const batch = Math.min(100, count - start);
    sockets.push(...(await Promise.all(Array.from({ length: batch }, () => openSocket(port)))));
  }
  return sockets;
}

async function run(job: LoadJob): Promise<LoadResult> {
  const requests = buildRequests(job);
  let sequence = 0;
  const nextRequest = (): Buffer => {
    const request = requests[sequence % requests.length];
    sequence += 1;
    if (request === undefined) throw new Error("no request buffer");
    return request;
  };

  const latencies = new Samples();
  const scheduled = new Samples();
  const statuses: Record<string, number> = {};
  let completed = 0;
  let completedTotal = 0;
  let errors = 0;
  let queued = 0;

  const sockets = await openSockets(job.port, job.connections);
  const startedAt = performance.now();
  const measureFrom = job.mode === "burst" ? 0 : startedAt + job.warmupMs;
  const measureUntil = job.mode === "burst" ? Number.POSITIVE_INFINITY : measureFrom + job.durationMs;
  let stopping = false;
  const inWindow = (now: number): boolean => now >= measureFrom && now <= measureUntil;

  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });

  /** Rate mode: sends every request whose time has come (set below). */
  let issueDue = (): void => undefined;
  const idle: Connection[] = [];
  /** Scheduled send times of requests waiting for an idle connection (rate mode). */
  const backlog: number[] = [];
  const connections: Connection[] = [];

  const send = (conn: Connection, scheduledAt: number): void => {
    conn.busy = true;
    conn.scheduledAt = scheduledAt;
    conn.sentAt = performance.now();
    conn.socket.write(nextRequest());
  };

  const allIdle = (): boolean => connections.every((conn) => !conn.busy);

  const onFree = (conn: Connection, now: number): void => {
    conn.busy = false;
    if (job.mode === "closed" && !stopping && now < measureUntil) {
      send(conn, now);
      return;
    }
    if (job.mode === "rate" && !stopping) {
      const waiting = backlog.shift();
      if (waiting !== undefined) {
        send(conn, waiting);
        return;
      }
    }
    idle.push(conn);
    if ((stopping || job.mode === "burst") && allIdle()) finish();
  };

  const attach = (conn: Connection): void => {
    conn.socket.on("data", (chunk: Buffer) => {
      const status = conn.parser.feed(chunk);
      if (status === 0) return;
      const now = performance.now();
      completedTotal += 1;
      if (inWindow(now)) {
        completed += 1;
        statuses[status] = (statuses[status] ?? 0) + 1;
        if (status !== job.expectStatus) errors += 1;
        latencies.add(now - conn.sentAt);
        if (job.mode === "rate") scheduled.add(now - conn.scheduledAt);
      }
      onFree(conn, now);
      issueDue();
    });
    conn.socket.on("error", () => undefined);
    conn.socket.once("close", () => {
      if (!conn.busy && stopping) return;
      const now = performance.now();
      if (conn.busy) {
        if (inWindow(now)) {
          errors += 1;
          statuses["reset"] = (statuses["reset"] ?? 0) + 1;
        }
        conn.busy = false;
      }
      conn.parser.reset();
      const index = idle.indexOf(conn);
      if (index !== -1) idle.splice(index, 1);
      if (stopping || job.mode === "burst") {
        if (allIdle()) finish();
        return;
      }
      // Reconnect and carry on: a server closing keep-alive connections must not end the run.
      openSocket(job.port).then(
        (socket) => {
          conn.socket = socket;
          attach(conn);
          onFree(conn, performance.now());
        },
        () => {
          errors += 1;
        },
      );
    });
  };

  for (const socket of sockets) {
    const conn: Connection = { socket, parser: new ResponseParser(), busy: false, sentAt: 0, scheduledAt: 0 };
    connections.push(conn);
    attach(conn);
  }

  let ticker: NodeJS.Timeout | undefined;
  if (job.mode === "closed" || job.mode === "burst") {
    for (const conn of connections) send(conn, performance.now());
  } else {
    const rate = job.rate ?? 0;
    if (!(rate > 0)) throw new Error("rate mode needs a positive rate");
    idle.push(...connections);
    const interval = 1000 / rate;
    let issued = 0;
    // Requests go out when due, checked at every wake-up: each response, and a 1 ms timer for when none came.
    // With the timer alone, requests left in bursts of rate / 1000 every millisecond (8 at 8,000 req/s), and the
    // last of each burst queued behind the others in the server under test: latency measured the burst, not the
    // server.
    issueDue = (): void => {
      const now = performance.now();
      // The end timer may fire a little before measureUntil: nothing goes out once the run is stopping.
      if (stopping || now >= measureUntil) return;
      const due = Math.floor((now - startedAt) / interval);
      while (issued < due) {
        const at = startedAt + issued * interval;
        issued += 1;
        const conn = idle.pop();
        if (conn === undefined) {
          if (at >= measureFrom) queued += 1;
          backlog.push(at);
        } else {
          send(conn, at);
        }
      }
    };
    ticker = setInterval(issueDue, 1);
  }

  if (job.mode !== "burst") {
    const windowEnds = Math.max(0, measureUntil - performance.now());
    await new Promise((resolve) => setTimeout(resolve, windowEnds));
    stopping = true;
    if (ticker !== undefined) clearInterval(ticker);
    backlog.length = 0;
    if (allIdle()) finish();
  }
  const drain = setTimeout(() => {
    for (const conn of connections) {
      if (conn.busy) {
        errors += 1;
        statuses["timeout"] = (statuses["timeout"] ?? 0) + 1;
        conn.busy = false;
      }
    }
    finish();
  }, DRAIN_MS);
  await finished;
  clearTimeout(drain);
  stopping = true;
  for (const conn of connections) conn.socket.destroy();

  const windowMs = job.mode === "burst" ? performance.now() - startedAt : job.durationMs;
  return {
    id: job.id,
    completed,
    completedTotal,
    windowMs,
    rps: (completed / windowMs) * 1000,
    errors,
    statuses,
    latency: latencies.summary(),
    ...(job.mode === "rate" ? { scheduledLatency: scheduled.summary(), queued } : {}),
  };
}

function reply(message: GeneratorMessage): void {
  process.send?.(message);
}

process.on("message", (job: LoadJob) => {
  run(job).then(
    (result) => reply({ type: "result", result }),
    (error: unknown) => reply({ type: "failed", id: job.id, message: String(error) }),
  );
});
// The driver owns this process: when the IPC channel goes, so do we.
process.on("disconnect", () => process.exit(0));
reply({ type: "ready" });
