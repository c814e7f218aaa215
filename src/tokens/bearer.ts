// The credential the upstream receives: `Authorization: Bearer <token>`, made once per cached token.
import { GatewayError } from "../errors/catalogue.ts";

const PREFIX = "Bearer ";
/** What undici refuses in a header value (RFC 9110 §5.5 field-value: HTAB, SP, VCHAR, obs-text). */
const invalidHeaderChar = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * `Bearer <token>` as one flat string, for a cache entry to keep: a hit then forwards the stored header value.
 * Joined per request instead, the value was a two-part string that undici's header check (a regular expression
 * over the whole ~1 KB of an AS-signed JWT) first had to copy into one piece: ~0.5 µs and 1 KB of garbage per
 * request. Made here once, and a token no upstream request could carry is refused.
 *
 * @throws GatewayError PG_ERR_AS_UNAVAILABLE when the token holds a character a header value cannot.
 */
export function bearerAuthorization(token: string): string {
  // Array#join builds one sequential string; `+` or a template would build a two-part one, which V8 copies into
  // one piece on the first regular expression and then keeps as an extra wrapper object.
  const value = [PREFIX, token].join("");
  if (invalidHeaderChar.test(value)) {
    throw new GatewayError("PG_ERR_AS_UNAVAILABLE", "the token to forward cannot be sent in a header");
  }
  return value;
}

/** The token inside a value made by {@link bearerAuthorization} (a view of it, not a copy). */
export function bearerToken(authorization: string): string {
  return authorization.slice(PREFIX.length);
}
