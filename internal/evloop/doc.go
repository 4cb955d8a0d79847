// Package evloop is the event-loop data path for TCP forwarding and TLS passthrough
// (issue 16), and HTTP/1.1 keep-alive in HTTP mode (Decision.HTTP, http_linux.go: requests
// decided by OnRequest, backend connections pooled per loop; the proxy's plain-HTTP ports,
// enginehttp_linux.go, and bench/cmd/evhttp): raw accept4 and connect on non-blocking sockets, one epoll set per loop and one
// loop per GOMAXPROCS, each with its own SO_REUSEPORT listening socket (no shared accept queue,
// no lock on the data path), every socket registered once for its lifetime (edge-triggered,
// EPOLLIN|EPOLLOUT|EPOLLRDHUP; close removes it), bytes moved with recv/send through one
// per-loop buffer, and no goroutine per connection.
//
// HTTP mode also serves adopted connections (Server.Adopt, adopt_linux.go): a client socket
// whose first steps ran on a goroutine (the proxy's TLS handshake) moves to a loop with a
// Stream that decodes what the socket carries and encodes what the loop writes (the proxy's
// crypto/tls connection), and is served from then on like an accepted one.
//
// It is the proxy's default data path for TCP forwarding and TLS passthrough ports on Linux
// (Options.Engine, engine_linux.go wires it: routing, SNI by OnHello, limits, metrics), and
// runs alone as bench/cmd/evproxy. Listening sockets are either one SO_REUSEPORT socket per
// loop or one socket opened elsewhere and shared (Config.SharedListen). It has the hooks the
// proxy's wiring needs: admission (Config.OnOpen), per-chunk counts (OnData), the end with its
// reason (OnClose), closing from another goroutine (Conn.Close, as the connection manager
// kills connections), a per-connection connect budget (Conn.SetConnectTimeout), and the
// half-close and write-progress timeouts of the goroutine path.
//
// What it does keep from the proxy's semantics: half-close (a FIN is passed on as
// shutdown(SHUT_WR) once everything read before it is written; the connection closes when
// both directions have ended), back-pressure (a destination that does not take everything
// stops reading from its source; only those bytes are copied into a per-direction buffer,
// dropped once written, so an idle connection holds no buffer), and exact byte counts.
//
// The one subtle rule is when a read may stop without a further recv that returns EAGAIN: a
// short read empties the socket, and with edge-triggered epoll new data raises a new event,
// except when the peer's FIN is already queued (a chunk and the FIN can be consumed by one
// read, leaving nothing to raise an event). The loop sees EPOLLRDHUP in the event bits and
// then reads to EOF; Go's netpoller does not expose those bits, which is why the goroutine
// path spends a read on EAGAIN after each chunk.
package evloop

import (
	"net/netip"
	"time"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// Defaults for Config's timeouts, the same as the goroutine path's (forwarding package).
const (
	DefaultHalfCloseTimeout = 30 * time.Second
	DefaultWriteTimeout     = 60 * time.Second
	DefaultConnectTimeout   = 30 * time.Second
	DefaultSniffTimeout     = 60 * time.Second
	DefaultSniffMax         = 64 << 10
	// HTTP mode's.
	DefaultHTTPHeadTimeout     = 30 * time.Second
	DefaultHTTPIdleTimeout     = 120 * time.Second
	DefaultHTTPResponseTimeout = 60 * time.Second
)

// Decision is OnOpen's answer for an accepted connection: forward it to Target, hand it off
// (OnHandOff takes the socket), or, as the zero Decision, refuse it (the socket is closed).
type Decision struct {
	Target  netip.AddrPort
	HandOff bool
	// Sniff, from OnOpen, reads the client's first bytes before deciding: OnHello is called
	// with them (and again with more, while it answers Sniff), and they reach the target
	// first. Handing off is not possible after sniffing.
	Sniff bool
	// HTTP serves the connection in HTTP mode (http_linux.go): OnRequest decides each request.
	HTTP bool
}

// Config configures a Server.
type Config struct {
	// Listen is the address to accept on; port 0 picks a free one.
	Listen netip.AddrPort
	// SharedListen makes the loops accept on ListenFD, a listening TCP socket opened
	// elsewhere (Listen then only names its address), instead of opening their own: each
	// loop registers a dup of it with EPOLLEXCLUSIVE, so one loop wakes per connection. The
	// Server owns ListenFD from Start on (it is closed, also when Start fails), and sets
	// TCP_NODELAY and ListenSocket's options on it as on its own sockets.
	SharedListen bool
	ListenFD     int
	// Target is where every connection is forwarded when OnOpen is nil.
	Target netip.AddrPort
	// Loops is the number of event loops; 0 means GOMAXPROCS.
	Loops int
	// HalfCloseTimeout bounds how long the remaining direction of a half-closed connection
	// may stay idle (re-armed by every chunk it moves). 0 means DefaultHalfCloseTimeout,
	// negative none.
	HalfCloseTimeout time.Duration
	// WriteTimeout closes a connection whose destination takes no byte for this long while
	// bytes wait for it. 0 means DefaultWriteTimeout, negative none.
	WriteTimeout time.Duration
	// ConnectTimeout bounds each backend connect. 0 means DefaultConnectTimeout, negative
	// none.
	ConnectTimeout time.Duration
	// NoDelayOff leaves Nagle's algorithm on for backend sockets (TCP_NODELAY is set on them
	// otherwise; accepted sockets inherit the listening socket's setting).
	NoDelayOff bool
	// KeepAlive turns TCP keep-alive on for backend sockets, with KeepAliveIdle (rounded up
	// to seconds) before the first probe when positive (the kernel's default otherwise).
	// Accepted sockets inherit the listening socket's options: set them with ListenSocket.
	KeepAlive     bool
	KeepAliveIdle time.Duration
	// ListenSocket and BackendSocket, when set, are called with each new listening socket and
	// each backend socket before it connects, to set other options.
	ListenSocket, BackendSocket func(fd int)

	// The callbacks run on the loop's goroutine, between its system calls: they must be quick
	// and must not block (a connection manager's bookkeeping, counters). Each may be nil.

	// OnOpen is called for each accepted connection before its backend is dialed, and
	// decides (admission, routing, the target).
	OnOpen func(c *Conn) Decision
	// OnHandOff takes over the socket of a connection OnOpen handed off (a non-blocking,
	// close-on-exec fd the loop forgets), for example to serve it on the goroutine path. data
	// is what was read from it already (an HTTP-mode connection handed off by
	// HTTPPlan.HandOff; nil from OnOpen), to be served before the rest.
	OnHandOff func(fd int, peer netip.AddrPort, data []byte)
	// OnHTTPHandOff, when set, takes HTTP-mode hand-offs (HTTPPlan.HandOff, OnMalformed's)
	// instead of OnHandOff, with the connection they come from (after OnClose reported it
	// ended with ErrHandedOff; c.Data is still the owner's), so that the owner can go on with
	// what it kept for the connection.
	OnHTTPHandOff func(c *Conn, fd int, data []byte)
	// OnHTTPFirst, when set, is asked about an HTTP-mode connection's first bytes while they
	// are not yet a whole request head (again as more come; data is valid during the call):
	// true hands the connection off (OnHTTPHandOff, with every byte read), for first bytes
	// that will never be a request (a TLS ClientHello, another protocol), on which the parser
	// would wait for a head until its timeout.
	OnHTTPFirst func(c *Conn, data []byte) bool
	// OnHTTPReading, when set, is called when an HTTP-mode connection's client bytes were
	// read that wait for the rest of their request (a head or a held body coming in pieces).
	// OnData counts a request's bytes only once it is served (a hand-off leaves them to the
	// new owner); this says the client is active meanwhile, for an owner's inactivity timeout.
	OnHTTPReading func(c *Conn)
	// OnHello decides for a connection OnOpen asked to sniff, given every byte received so
	// far (valid only during the call).
	OnHello func(c *Conn, data []byte) Decision
	// SniffTimeout bounds the wait for OnHello's decision (0: DefaultSniffTimeout, negative:
	// none); SniffMax caps the bytes read for it (0: DefaultSniffMax).
	SniffTimeout time.Duration
	SniffMax     int
	// OnConnect is called when the backend connect succeeded.
	OnConnect func(c *Conn)
	// OnDialError is called when a backend connect failed or timed out; it may name another
	// target to try. Otherwise the connection ends with err.
	OnDialError func(c *Conn, err error) (next netip.AddrPort, ok bool)
	// OnData is called after each chunk written, with its direction and size.
	OnData func(c *Conn, clientToBackend bool, n int)
	// OnClose is called once when a connection that passed OnOpen ends, with the bytes
	// written each way and why it ended: nil after both directions ended cleanly, ErrClosed,
	// a timeout error, or a socket error.
	OnClose func(c *Conn, clientToBackend, backendToClient int64, err error)
	// OnAcceptError is called, on the loop, when an accept failed for want of resources
	// (EMFILE and the like); the listening socket then rests until the next sweep, so it
	// comes at most once per tick and loop.
	OnAcceptError func(err error)

	// HTTP mode (Decision.HTTP, http_linux.go). OnRequest decides a request whose head (and
	// Content-Length body up to HTTPMaxHeld) came; raw is those bytes, valid during the call
	// only. OnResponse appends to dst the head the client gets for a backend response head
	// (interim ones included) and returns it; false refuses the response (the exchange fails).
	// It should say Connection: close where the loop will close after the response (the
	// request asked, Request.Close, or the plan did, HTTPPlan.Close), and frame the body as
	// the loop passes it on: as it came for Content-Length and chunked bodies (chunked ones
	// validated by h1parse.ChunkScanner, trailers included, and otherwise unchanged), and
	// chunked for a body the backend ends by closing (Response.Framing UntilClose: each piece
	// a chunk, the close the last chunk), so the client's connection stays open; HTTP mode's
	// framing is HTTP/1.1's (the owner hands off HTTP/1.0 clients). OnExchangeEnd is called once per
	// forwarded request, with the response's status (0 when no final head came), the body
	// bytes relayed, and err nil when the response was relayed whole; for a failed one whose
	// response was not started it returns the client's answer (a 502, a 504), written before
	// the connection closes. OnMalformed words the answer to a head the parser refused (nil: a
	// bare 400), given the bytes read (valid during the call); the connection closes after it.
	// For a connection's first bytes (first: no request came before them), and for a request
	// whose body the client cut short (ErrHTTPBodyCut), it may hand the connection off instead
	// (another protocol: the HTTP/2 preface, a TLS ClientHello; a path that answers the cut
	// request as it would).
	//
	// A request whose body the loop does not hold (chunked, or over HTTPMaxHeld) may be
	// answered (Respond: the connection closes after it, as the body is left unread) or handed
	// off, never forwarded: the loop sends Out alone, and the body would be read as requests.
	OnRequest     func(c *Conn, req *h1parse.Request, raw []byte) HTTPPlan
	OnResponse    func(c *Conn, resp *h1parse.Response, dst []byte) ([]byte, bool)
	OnExchangeEnd func(c *Conn, status int, body int64, err error) []byte
	OnMalformed   func(c *Conn, err error, first bool, data []byte) (answer []byte, handOff bool)
	// OnHTTPRetry, when set, is asked about a forwarded request that failed before any byte
	// of its response came (after the pool's own retry of a stale connection), before
	// OnExchangeEnd: it may plan the request again (another target, its own Out), which the
	// loop then sends as it sent the first; false ends the exchange as failed. connected
	// reports whether the failed attempt's connect had succeeded (when it had not, nothing of
	// the request reached a backend).
	OnHTTPRetry func(c *Conn, err error, connected bool) (HTTPPlan, bool)
	// HTTPTrailerName, when set, says which trailer fields of a chunked response are passed
	// on (given the name as it came; false drops the field): the trailer section is then held
	// until whole (up to 16 KiB; more fails the exchange) instead of passing as it comes.
	HTTPTrailerName func(name []byte) bool
	// HTTPHeadTimeout bounds a request head from its first byte, HTTPIdleTimeout a keep-alive
	// connection between requests (and a held body between reads), HTTPResponseTimeout the
	// wait from the request written to the response head. 0: the defaults, negative: none.
	HTTPHeadTimeout, HTTPIdleTimeout, HTTPResponseTimeout time.Duration
	// HTTPFirstTimeout bounds the wait for a connection's first byte (0: HTTPIdleTimeout's,
	// negative: none).
	HTTPFirstTimeout time.Duration
	// HTTPBodyTimeout bounds the wait for each piece of a response body once its head came
	// (0: HTTPResponseTimeout's, negative: none).
	HTTPBodyTimeout time.Duration
	// HTTPExpectUnheld gives OnRequest a request with Expect (100-continue) at once, with its
	// head alone, as a body the loop does not hold: no 100 Continue is sent for it, and the
	// owner answers or hands it off. Otherwise the loop sends 100 Continue for a body it holds.
	HTTPExpectUnheld bool
	// HTTPMaxHeld is the largest Content-Length body read whole with its head (0:
	// DefaultHTTPMaxHeld); OnRequest gets larger and chunked ones with the head alone.
	HTTPMaxHeld int
	// HTTPIdleConns caps the idle backend connections a loop keeps per target (0:
	// DefaultHTTPIdleConns); HTTPPoolIdleTimeout is how long one is kept (0:
	// DefaultHTTPPoolIdle).
	HTTPIdleConns       int
	HTTPPoolIdleTimeout time.Duration

	// accept replaces accept4 in tests (failures such as EMFILE on demand).
	accept func(lfd int) (int, netip.AddrPort, error)
}
