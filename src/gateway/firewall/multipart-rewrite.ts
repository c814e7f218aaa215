// Multipart bodies are taken apart and put back together. Frameworks (PHP, Laravel, Symfony, Rails) read
// `_method` and `access_token` from multipart bodies as from any form, and their multipart parsers disagree with
// each other and with any parser the gateway could use (line ends, a close delimiter before the first part,
// parameters written twice or as `name*`, boundaries with odd characters, header sections cut at a size). So the
// gateway does not forward the client's bytes: it parses the body (@fastify/busboy's Dicer, which splits parts),
// checks every part's name, and writes each part again in one plain form under a boundary of its own. The
// upstream reads exactly the names the gateway checked. Part bodies are copied unchanged, and nothing is
// buffered beyond one chunk.
import { randomBytes } from "node:crypto";
import { Dicer } from "@fastify/busboy";
import { GatewayError } from "../../errors/catalogue.ts";
import { forbiddenFieldName, forbiddenParameterError, mediaTypeOf } from "./firewall.ts";

/** Rewrites a request body as it streams upstream; the exchange sends what `push` gets instead of the body. */
export interface BodyRewriter {
  /** The Content-Type the upstream gets (the rewritten body's own boundary). */
  readonly contentType: string;
  /** Where the rewritten body goes; set once, before the first write. */
  start(sink: RewriteSink): void;
  /** Parses `chunk`; `done` once it may take the next one. */
  write(chunk: Buffer, done: () => void): void;
  /** The body ended; `done` gets a refusal when it did not end as a whole multipart body, after the last push. */
  end(done: (refusal: GatewayError | undefined) => void): void;
  /** Drops the parser (the exchange ended early). */
  destroy(): void;
}

export interface RewriteSink {
  push(data: Buffer): void;
  /** The body is refused: nothing more is pushed, and the exchange ends with `refusal`. */
  fail(refusal: GatewayError): void;
}

/**
 * Bounds on the parser's own work. Part sizes are not bounded here (the route's body limit is); the number of
 * parts and the size of each header section are.
 */
const LIMITS = {
  parts: 10_000,
  headerPairs: 64,
  headerSize: 16 * 1024,
} as const;

/** Part headers written again with their values as they came: the ones a part's reader needs. Others are dropped. */
const keptHeaders: ReadonlyMap<string, string> = new Map([
  ["content-type", "Content-Type"],
  ["content-id", "Content-ID"],
  ["content-transfer-encoding", "Content-Transfer-Encoding"],
]);

/**
 * What a kept header's value may not hold: older Rack searches a part's whole header section, unanchored, for
 * `Content-ID:` and `Content-Disposition: …; name=`, so such text inside another header's value would name the
 * part.
 */
const HEADER_IN_VALUE = /content-(?:id|disposition|type)\s*:/i;

/**
 * A parameter that names a part, wherever it stands: Rack 2 searches a part's whole header section for
 * `; filename=` (the last one wins) and `; name=`, also inside other headers and quoted values.
 */
const NAMING_PARAMETER = /;\s*(?:file)?name\s*\*?\s*=/i;

/**
 * The longest header value written again. PHP reads a part's header line in pieces of 5,120 bytes (a piece with
 * a `:` starts a new header), and Rack 3.1 ignores a Content-Disposition over 1,536 bytes.
 */
const MAX_HEADER_VALUE = 1024;

/** The largest piece of a chunk handed to the parser at once. */
const MAX_WRITE = 64 * 1024;

/**
 * What is refused in a part's name or filename as the gateway writes them again: double quotes and backslashes
 * (parsers disagree on escapes), controls, `; name=` and `; filename=` (Rack 2 takes the last of the line,
 * wherever it is), and a `Content-…:` header (older Rack searches the whole header section). Apostrophes and
 * other `;` are read literally inside the double quotes the gateway writes.
 */
const UNSAFE_IN_PARAMETER =
  // eslint-disable-next-line no-control-regex -- control characters are what is refused
  /["\\\u0000-\u001f\u007f]|;\s*(?:file)?name\s*\*?\s*=|content-(?:id|disposition|type)\s*:/i;
/** RFC 8187 ext-value: charset'language'value with value-chars and %XX only. */
const EXT_VALUE = /^[A-Za-z0-9-]+'[A-Za-z0-9-]*'(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9!#$&+.^_`|~-])*$/;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CRLF = Buffer.from("\r\n");

function badMultipart(reason: string): GatewayError {
  return new GatewayError("PG_ERR_BAD_MULTIPART", reason);
}

function refusalFor(name: string, where: string): GatewayError | undefined {
  const forbidden = forbiddenFieldName(name);
  return forbidden === undefined
    ? undefined
    : forbiddenParameterError(forbidden, `a multipart body (${where})`);
}

/**
 * The `boundary` parameter of a multipart Content-Type: the first one, as a token or a quoted string. Which one
 * an upstream would have taken does not matter: it gets the body under the gateway's own boundary.
 */
function boundaryOf(contentType: string): string | undefined {
  const match = /;\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;,"]{1,200}))/i.exec(contentType);
  return match?.[1] ?? match?.[2];
}

interface Disposition {
  readonly type: string;
  readonly name?: string;
  readonly filename?: string;
  readonly filenameStar?: string;
}

/**
 * A part's Content-Disposition, read strictly: a disposition type, then `;`-separated `key=value` parameters
 * (tokens or quoted strings without escapes). `name` at most once and never as `name*`; quotes, backslashes and
 * control characters in a name are refused. Other parameters than name, filename and filename* are dropped.
 */
function parseDisposition(value: string): Disposition | string {
  // Spaces and tabs only: `\s` would also take U+00A0, a byte of many latin1-read UTF-8 names.
  const type = /^[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*/.exec(value);
  if (type?.[1] === undefined) return "no disposition type";
  let at = type[0].length;
  let name: string | undefined;
  let filename: string | undefined;
  let filenameStar: string | undefined;
  const parameter = /;[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*(?:"([^"]*)"|([^ \t;"]+))[ \t]*/y;
  while (at < value.length) {
    parameter.lastIndex = at;
    const match = parameter.exec(value);
    if (match === null) {
      if (/^[ \t;]*$/.test(value.slice(at))) break;
      return "a Content-Disposition the gateway cannot read";
    }
    at = parameter.lastIndex;
    const key = (match[1] ?? "").toLowerCase();
    const text = match[2] ?? match[3] ?? "";
    if (key === "name") {
      if (name !== undefined) return "a part named twice";
      if (text === "") return "a part with an empty name";
      if (UNSAFE_IN_PARAMETER.test(text))
        return "a part name with quotes, backslashes, '; name=' or controls";
      name = text;
    } else if (key === "name*") {
      return "a part name in the name* form";
    } else if (key === "filename") {
      if (filename !== undefined) return "a part with two file names";
      if (UNSAFE_IN_PARAMETER.test(text))
        return "a file name with quotes, backslashes, '; name=' or controls";
      filename = text;
    } else if (key === "filename*") {
      if (filenameStar !== undefined || match[3] === undefined || !EXT_VALUE.test(text)) {
        return "a part with a bad filename*";
      }
      filenameStar = text;
    }
  }
  return {
    type: type[1].toLowerCase(),
    ...(name === undefined ? {} : { name }),
    ...(filename === undefined ? {} : { filename }),
    ...(filenameStar === undefined ? {} : { filenameStar }),
  };
}

/** The part's header section as the upstream gets it, or the reason it is refused. */
function partHead(header: Record<string, string[]>, formData: boolean): string | GatewayError {
  const lines: string[] = [];
  const dispositions = header["content-disposition"] ?? [];
  if (dispositions.length > 1) return badMultipart("a part with two Content-Disposition headers");
  const raw = dispositions[0];
  let named = false;
  let filename: string | undefined;
  let filenameStar: string | undefined;
  if (raw === undefined) {
    if (formData) return badMultipart("multipart part without a form-data name");
  } else {
    if (raw.length > MAX_HEADER_VALUE)
      return badMultipart(`a Content-Disposition over ${MAX_HEADER_VALUE} bytes`);
    const disposition = parseDisposition(raw);
    if (typeof disposition === "string") return badMultipart(disposition);
    if (formData && (disposition.type !== "form-data" || disposition.name === undefined)) {
      return badMultipart("multipart part without a form-data name");
    }
    if (disposition.name !== undefined) {
      const refused = refusalFor(disposition.name, "a part's name");
      if (refused !== undefined) return refused;
      named = true;
    }
    filename = disposition.filename;
    filenameStar = disposition.filenameStar;
    let line = `Content-Disposition: ${disposition.type}`;
    if (disposition.name !== undefined) line += `; name="${disposition.name}"`;
    if (disposition.filename !== undefined) line += `; filename="${disposition.filename}"`;
    if (disposition.filenameStar !== undefined) line += `; filename*=${disposition.filenameStar}`;
    lines.push(line);
  }
  for (const [name, values] of Object.entries(header)) {
    if (!TOKEN.test(name)) return badMultipart("a part header whose name is not a token");
    const written = keptHeaders.get(name);
    if (written === undefined) continue;
    for (const value of values) {
      if (value.length > MAX_HEADER_VALUE)
        return badMultipart(`a part's ${written} over ${MAX_HEADER_VALUE} bytes`);
      if (HEADER_IN_VALUE.test(value) || NAMING_PARAMETER.test(value)) {
        return badMultipart(`a part's ${written} that holds another header or a naming parameter`);
      }
      if (name !== "content-type" && value.includes(";")) {
        return badMultipart(`a part's ${written} with parameters`);
      }
      // Rack names a part by its Content-ID when it has no other name.
      if (name === "content-id") {
        const refused = refusalFor(value.trim().replace(/^<(.*)>$/, "$1"), "a part's Content-ID");
        if (refused !== undefined) return refused;
      }
      lines.push(`${written}: ${value}`);
    }
  }
  if (!named) {
    // Rack names a part without a name after its file name (percent-decoded, its last path segment; or
    // filename*), else `<its Content-Type>[]`.
    for (const candidate of fileNameReadings(filename, filenameStar)) {
      const byFile = refusalFor(candidate, "an unnamed part's file name");
      if (byFile !== undefined) return byFile;
    }
    const type = header["content-type"]?.[0] ?? "text/plain";
    const byType = refusalFor(`${type}[]`, "an unnamed part's Content-Type");
    if (byType !== undefined) return byType;
    // Never an empty header section: a reader looking for the blank line that ends it (Rack) would find the
    // next one, inside the part's body, and read headers from there.
    if (lines.length === 0) lines.push("Content-Type: text/plain");
  }
  return lines.join("\r\n");
}

/** The names a file name may stand for: as sent, percent-decoded, and their last path segment. */
function fileNameReadings(filename: string | undefined, filenameStar: string | undefined): string[] {
  const readings: string[] = [];
  const star = filenameStar?.slice(filenameStar.indexOf("'", filenameStar.indexOf("'") + 1) + 1);
  for (const raw of [filename, star]) {
    if (raw === undefined) continue;
    // Byte by byte, as Rack decodes, with bytes that are not UTF-8 read as U+FFFD.
    const bytes = Buffer.from(
      raw.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))),
      "latin1",
    );
    const decoded = bytes.toString("utf8");
    for (const name of [raw, decoded]) {
      readings.push(name, name.slice(Math.max(name.lastIndexOf("/"), name.lastIndexOf("\\")) + 1));
    }
  }
  return readings;
}

/**
 * Creates the rewriter for one multipart body.
 *
 * @param contentType - The request's `Content-Type` value (a `multipart/*` media type).
 * @throws GatewayError `PG_ERR_BAD_MULTIPART` when it names no boundary.
 */
export function createMultipartRewriter(contentType: string): BodyRewriter {
  const boundary = boundaryOf(contentType);
  if (boundary === undefined) throw badMultipart("multipart body without a usable boundary");
  const media = mediaTypeOf(contentType);
  const formData = media === "multipart/form-data";
  const own = `phantomgate-${randomBytes(16).toString("hex")}`;
  const delimiter = Buffer.from(`--${own}\r\n`);
  // Dicer hands its config to its header parser, which also reads maxHeaderSize, and reads partHwm itself (its
  // types list neither).
  const config: Dicer.Config & { maxHeaderSize: number; partHwm: number } = {
    boundary,
    maxHeaderPairs: LIMITS.headerPairs,
    maxHeaderSize: LIMITS.headerSize,
    // Dicer holds its write back while a part's buffer is over this mark, and a part that ended in that write
    // would never release it: far above the largest piece written (below), and the parts are read as they come.
    partHwm: 4 * MAX_WRITE,
  };
  const dicer = new Dicer(config);

  let sink: RewriteSink | undefined;
  let refusal: GatewayError | undefined;
  let parts = 0;
  let parsed = false;
  let finishing: ((refusal: GatewayError | undefined) => void) | undefined;
  // The parts still being written, in body order. A part's data comes as events of its own stream, some of them
  // on a later tick, while the parser may already have read the next part's headers: each part's output waits in
  // its slot until the parts before it are out.
  interface Slot {
    pieces: Buffer[];
    ended: boolean;
  }
  const slots: Slot[] = [];
  const emit = (slot: Slot, data: Buffer): void => {
    if (refusal !== undefined) return;
    if (slot === slots[0]) sink?.push(data);
    else slot.pieces.push(data);
  };
  const endSlot = (slot: Slot): void => {
    if (slot.ended) return;
    slot.ended = true;
    for (;;) {
      const head = slots[0];
      if (head === undefined || !head.ended) break;
      slots.shift();
      const next = slots.at(0);
      if (next === undefined) break;
      const waiting = next.pieces;
      next.pieces = [];
      for (const piece of waiting) emit(next, piece);
    }
    settle();
  };

  const refuse = (error: GatewayError): void => {
    if (refusal !== undefined) return;
    refusal = error;
    slots.length = 0;
    sink?.fail(error);
  };
  function settle(): void {
    if (finishing === undefined) return;
    if (refusal === undefined && (slots.length > 0 || !parsed)) return;
    const done = finishing;
    finishing = undefined;
    if (refusal === undefined) sink?.push(Buffer.from(`--${own}--\r\n`));
    done(refusal);
  }

  dicer.on("part", (part: Dicer.PartStream) => {
    const slot: Slot = { pieces: [], ended: false };
    slots.push(slot);
    let headed = false;
    part.on("error", () => refuse(badMultipart("multipart part cut off")));
    part.on("end", () => {
      // A part whose header section never ended (no blank line after it) has no headers to check.
      if (!headed) refuse(badMultipart("multipart part without a complete header section"));
      else emit(slot, CRLF);
      endSlot(slot);
    });
    part.on("close", () => endSlot(slot));
    if (++parts > LIMITS.parts) {
      refuse(badMultipart(`more than ${LIMITS.parts} parts`));
      part.resume();
      return;
    }
    part.on("header", (header: object) => {
      headed = true;
      if (refusal !== undefined) return;
      const head = partHead(header as Record<string, string[]>, formData);
      if (head instanceof GatewayError) {
        refuse(head);
        return;
      }
      emit(slot, Buffer.concat([delimiter, Buffer.from(`${head}\r\n\r\n`, "latin1")]));
    });
    part.on("data", (data: Buffer) => {
      if (headed) emit(slot, data);
    });
  });
  dicer.on("error", (error: Error) => refuse(badMultipart(`multipart body unreadable: ${error.message}`)));
  dicer.on("finish", () => {
    parsed = true;
    settle();
  });

  // One boundary parameter, the gateway's: a second one (the client's) could make the upstream split the part
  // bodies, which are copied unchanged, at the client's delimiters. multipart/related keeps its `type`.
  const typeParameter = formData ? undefined : /;\s*type\s*=\s*("[^"\\]*"|[^\s;,"]+)/i.exec(contentType)?.[1];
  // Only a media type: anything else (a quoted `a; boundary=x`) could bring a second boundary back.
  const relatedType =
    typeParameter !== undefined && /^"?[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+"?$/.test(typeParameter)
      ? typeParameter
      : undefined;
  return {
    contentType: `${media}; boundary=${own}${relatedType === undefined ? "" : `; type=${relatedType}`}`,
    start(target) {
      sink = target;
    },
    write(chunk, done) {
      if (refusal !== undefined) {
        done();
        return;
      }
      // In pieces of at most MAX_WRITE (node's HTTP server reads at most 64 KiB at a time anyway).
      let at = 0;
      const next = (): void => {
        if (refusal !== undefined || at >= chunk.length) {
          done();
          return;
        }
        const piece = chunk.subarray(at, at + MAX_WRITE);
        at += piece.length;
        dicer.write(piece, next);
      };
      next();
    },
    end(done) {
      finishing = done;
      if (refusal !== undefined) {
        finishing = undefined;
        done(refusal);
        return;
      }
      dicer.end();
      settle();
    },
    destroy() {
      finishing = undefined;
      // Nothing more goes out, whatever the parser still holds.
      sink = undefined;
      slots.length = 0;
      dicer.removeAllListeners("part");
      dicer.on("error", () => undefined);
      dicer.destroy();
    },
  };
}
