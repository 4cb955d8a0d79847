// Package h1client is a synchronous HTTP/1.1 client: an
// http.RoundTripper for requests without a body to cleartext backends,
// and Send for pre-serialised requests to cleartext or TLS backends, with
// its own pool of keep-alive connections.
//
// http.Transport runs a read and a write goroutine per backend
// connection, hands each request and response between them over channels
// and makes a cancel context per request: about a fifth of a proxy's CPU
// at keep-alive rates (bench/README.md of the root module). A request
// without a body needs none of that: the caller's goroutine writes it on
// a pooled connection and reads the response head, and the caller reads
// the body from the connection in the same goroutine. Requests with a
// body belong on http.Transport (Handles says which a Client takes): a
// backend may answer (413) before reading the body and stop reading it,
// so writing and reading must run concurrently.
//
// The transport's read goroutine noticed at once when a backend closed
// an idle connection, or sent bytes on it. Here a pooled connection is
// peeked without blocking before reuse (one recvfrom on Unix): closed or
// holding unsolicited bytes (a body after a HEAD, more than its
// Content-Length, a stray response), it is dropped, so such bytes are
// not read as the next request's response. A request that can be
// repeated skips the peek on a connection idle under a millisecond
// (probeAfter in pool.go says why that is safe). A reused connection that
// fails before any byte of the response arrived is replaced by a new
// one, once, if repeating is safe (Replayable).
//
// Send is the exchange, for a caller that serialises the request head
// itself (the proxy's HTTP/1.1 fast path): the head, with the first body
// bytes behind it, goes out in one write, a body the caller framed
// follows from a reader, and the response head is parsed strictly
// (internal/h1parse) into the Exchange, with no http.Request or
// http.Response. A pooled connection failing before any response byte is
// replaced once, when nothing was sent or the caller says the request is
// replayable and no body byte was taken; the head timeout and the
// context interrupt bound the exchange. Lifecycle: Send returns an
// Exchange that belongs to its connection; the caller reads the body
// (decoded: Content-Length, chunked, until close) and calls Close
// exactly once, which pools the connection if the body ended cleanly
// and both sides allow, and closes it otherwise. 1xx heads are skipped
// or given to the caller; a request with a body is written in full
// before the response is read, each write bounded by HeadTimeout.
//
// RoundTrip is Send under a net/http face: it serialises the
// *http.Request head as http.Transport would (Request.Write), sends it
// with Send, and makes the *http.Response of the parsed head, its Body
// the Exchange. There is one exchange loop and one response parser: a
// backend response that the fast path refuses (Content-Length with
// Transfer-Encoding, obs-fold, a bare LF, differing Content-Lengths, a
// bad chunk) RoundTrip refuses too, where http.ReadResponse relayed some
// of it, so the proxy's paths cannot read one backend's bytes two ways.
// Each response head, 1xx heads included, is bounded by MaxHeaderBytes
// (16 KiB, the read buffer's size, HAProxy's default too; net/http's
// client allowed 10 MiB), and the heads of one exchange together by
// 10 MiB.
//
// TLS backends (Send with Outgoing.TLS): the Client dials, runs the
// handshake itself with the caller's config, its ServerName set to
// Outgoing.ServerName and ALPN offering http/1.1 only, and pools the
// connection under its address, config (by identity) and server name:
// a connection verified for one name is never reused for another. The
// probe peeks at the socket under the TLS connection: a record there (a
// close_notify, a late session ticket) drops the idle connection too.
//
// The Client knows nothing of the proxy: its owner gives it a dialer and
// timeouts in a Config. Which backend a request goes to is the request
// URL's host, or Send's address.
package h1client
