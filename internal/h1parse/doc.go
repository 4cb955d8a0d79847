// Package h1parse is a strict HTTP/1.1 request- and response-head parser for the
// proxy's fast path: it parses a head in place (fields are slices of the
// caller's buffer, the field list is reused between requests) and
// refuses every head whose framing another parser could read
// differently, so that a request the proxy forwards is the one request
// the backend reads.
//
// What it refuses (RFC 9112; each is ErrMalformed or ErrUnsupported
// with the reason):
//
//   - line ends other than CRLF (a bare LF or CR anywhere in the head);
//   - a request line that is not method SP target SP HTTP/1.x, a method
//     that is not a token, a target with a control byte, space or a byte
//     over 0x7e;
//   - obs-fold (a field line starting with SP or HTAB), whitespace
//     between a field name and its colon, a name that is not a token;
//   - NUL, CR, LF or another control byte but HTAB in a field value;
//   - Content-Length that is not 1*DIGIT, over 18 digits, or several
//     that differ (equal duplicates, "5, 5" included, count as one, as
//     RFC 9112 6.3 allows);
//   - Transfer-Encoding other than exactly one "chunked" (any other
//     coding, a list, duplicates, "xchunked", a quoted value), and any
//     Transfer-Encoding on HTTP/1.0;
//   - HTTP/1.1 without exactly one Host, a Host with bytes outside
//     RFC 3986 reg-name/IP-literal/port;
//   - more than MaxFields field lines, or a head over the caller's
//     buffer.
//
// A request with both Transfer-Encoding: chunked and Content-Length is
// read as chunked, the length dropped, and marked Close (RFC 9112 6.1,
// as HAProxy does). HAProxy 2.6 also accepts bare LF line ends; the
// parser is stricter there on purpose: a refusal costs the client a
// 400, an acceptance may cost a desync.
//
// ParseResponse reads a backend's response head under the same line and
// field rules, and decides its body's framing once (Framing: none for
// 1xx, 204, 304 and HEAD; Content-Length; chunked; until close). It
// refuses a response with both Content-Length and Transfer-Encoding,
// Transfer-Encoding other than exactly "chunked" (as net/http's client
// does), and a status line other than HTTP/1.x SP 3DIGIT [SP reason].
//
// The chunked body is read with ChunkReader, equally strict: 1 to 15 hex
// digits, extensions without control bytes, CRLF after the size and the
// data, trailer fields under the head's field rules. ChunkScanner applies
// the same rules to a chunked body fed in pieces, without decoding it: it
// finds where the body ends, for a relay that passes it on as it came (an
// event loop's, which has no reader to block on).
package h1parse
