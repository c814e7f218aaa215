// The multipart/form-data check: every part's field name, read by @fastify/busboy as the body streams upstream,
// goes through the same name rules as query and form-urlencoded parameters. Frameworks (PHP, Laravel, Symfony,
// Rails) read `_method` and `access_token` from multipart bodies as from any form.
import { Busboy, Dicer, type BusboyInstance } from "@fastify/busboy";
import { GatewayError } from "../../errors/catalogue.ts";
import { forbiddenFieldName } from "./firewall.ts";

/** Checks a request body chunk by chunk; the body is forwarded only as far as it was checked. */
export interface BodyScanner {
  /** Checks `chunk`; `done` gets the refusal, if any, once the chunk was read (before it may be forwarded). */
  write(chunk: Buffer, done: (refusal: GatewayError | undefined) => void): void;
  /** The body ended; `done` gets a refusal when it did not end as a whole multipart body. */
  end(done: (refusal: GatewayError | undefined) => void): void;
  /** Drops the parser (the exchange ended early). */
  destroy(): void;
}

/**
 * Bounds on the scanner's own work. File sizes are not bounded here (the route's body limit is); parts and their
 * header sections are, and a body over them is refused rather than forwarded unread.
 */
const MULTIPART_LIMITS = {
  /** Parts per body. */
  parts: 10_000,
  /** Header fields per part; PHP's and Rack's parts carry two or three. */
  headerPairs: 64,
  /** Bytes of one part's header section. */
  headerSize: 16 * 1024,
} as const;

function ignore(): void {
  // the refusal is recorded from busboy's error event
}

function badMultipart(reason: string): GatewayError {
  return new GatewayError("PG_ERR_BAD_MULTIPART", reason);
}

function refusalFor(name: string): GatewayError | undefined {
  switch (forbiddenFieldName(name)) {
    case "access_token":
      return new GatewayError("PG_ERR_TOKEN_IN_QUERY", "access_token in a multipart body");
    case "_method":
      return new GatewayError("PG_ERR_BAD_REQUEST", "_method in a multipart body (a method override)");
    default:
      return undefined;
  }
}

/**
 * The parameters of a multipart `Content-Type` (from its first `;`), for busboy as `multipart/form-data`: the
 * gateway scans every `multipart/*` type alike, since Rack parses any of them that names a boundary.
 */
function busboyContentType(contentType: string): string {
  const parameters = contentType.indexOf(";");
  return `multipart/form-data${parameters === -1 ? "" : contentType.slice(parameters)}`;
}

/** busboy's multipart parser, whose part events tell the parts busboy skips (no usable form-data name). */
interface BusboyInternals {
  readonly _parser?: { readonly parser?: unknown };
}

/**
 * Creates the scanner for one multipart body.
 *
 * @param contentType - The request's `Content-Type` value (a `multipart/*` media type).
 * @throws GatewayError `PG_ERR_BAD_MULTIPART` when it names no boundary.
 */
export function createMultipartScanner(contentType: string): BodyScanner {
  let busboy: BusboyInstance;
  try {
    busboy = new Busboy({
      headers: { "content-type": busboyContentType(contentType) },
      limits: MULTIPART_LIMITS,
      // Every part is read as a file: busboy names a file part as soon as its headers are read, a field only
      // after its value, so each name is checked before any byte of its value is forwarded.
      isPartAFile: () => true,
    });
  } catch {
    throw badMultipart("multipart body without a usable boundary");
  }
  const dicer = (busboy as unknown as BusboyInternals)._parser?.parser;
  if (!(dicer instanceof Dicer)) throw new Error("@fastify/busboy: multipart parser not found");

  let refusal: GatewayError | undefined;
  let named = false;
  const refuse = (error: GatewayError): void => {
    refusal ??= error;
  };
  busboy.on("file", (name: string, stream: NodeJS.ReadableStream) => {
    named = true;
    const forbidden = refusalFor(name);
    if (forbidden !== undefined) refuse(forbidden);
    // A part cut off by the end of the body errors its stream; busboy's own error (below) refuses the body.
    stream.on("error", ignore);
    stream.resume();
  });
  busboy.on("partsLimit", () => refuse(badMultipart(`more than ${MULTIPART_LIMITS.parts} parts`)));
  busboy.on("error", (error: Error) => refuse(badMultipart(`multipart body unreadable: ${error.message}`)));
  // busboy's own part listener came first, so it named the part (or skipped it) before this one runs. A part
  // busboy skips (no form-data Content-Disposition with a name in its header section as busboy read it) might
  // still be named to an upstream that reads headers differently: refused.
  dicer.on("part", (part: Dicer.PartStream) => {
    named = false;
    part.once("header", () => {
      if (!named) refuse(badMultipart("multipart part without a form-data name"));
    });
  });

  return {
    write(chunk, done) {
      if (refusal !== undefined) {
        done(refusal);
        return;
      }
      busboy.write(chunk, () => {
        done(refusal);
      });
    },
    end(done) {
      if (refusal !== undefined) {
        done(refusal);
        return;
      }
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        done(refusal);
      };
      busboy.once("finish", settle);
      busboy.once("error", settle);
      busboy.end();
    },
    destroy() {
      busboy.removeAllListeners("file");
      busboy.on("error", ignore);
      busboy.destroy();
    },
  };
}
