package smartproxy

import "strconv"

// Engine selects how the proxy serves TCP forwarding and TLS passthrough ports (see
// Options.Engine). The zero value is EngineEventLoop, the default.
type Engine int

const (
	// EngineEventLoop, the default (the zero value), serves TCP forwarding and TLS
	// passthrough ports from event loops (internal/evloop): raw accept4/connect, one epoll
	// set per loop and per GOMAXPROCS, no goroutine per connection. The loops share the
	// port's one listening socket, bound as the goroutine path binds it (or taken from
	// Options.Listen when that returns a *net.TCPListener; any other listener is served on
	// goroutines); with Options.ReusePort each loop opens its own SO_REUSEPORT socket
	// instead. Linux only, and only when the proxy dials its backends itself (no
	// Options.Dial); elsewhere it means EngineGoroutines.
	//
	// Ports whose routes are all plain TCP forwards or TLS passthrough (routed by SNI in the
	// loop) to IP-literal targets, with the default security checker, route matcher and
	// connection manager (the loop must never call code that may block), get event loops; the
	// others keep the goroutine path: ports with TLS termination (but see below), socket handlers, host-name
	// targets or target functions, ports that receive PROXY headers and routes sending them.
	// Should UpdateRoutes put such a route on a port that has loops, its connections are
	// handed to the goroutine path on accept.
	//
	// Plain-HTTP ports (on the HTTP/1.1 fast path, with those same built-in parts and no
	// PROXY headers in) get event loops in HTTP mode: each HTTP/1.1 keep-alive request is
	// parsed, routed, checked and answered in the loop by the fast path's own code, and
	// forwarded over the loop's pooled backend connections when its route forwards to
	// cleartext HTTP/1.1 backends at IP-literal hosts. A connection goes on on the goroutine
	// path, with the bytes read and under the same record, from the first request the loop
	// does not carry: HTTP/1.0, upgrades, Expect, a chunked body or one over 48 KiB, a
	// non-origin-form target, another route; and from its first bytes when they are no request
	// (TLS for the port's TLS routes, the h2c preface, raw TCP).
	//
	// TLS-terminated HTTP/1.1 moves to the loops after its handshake: a port with a
	// terminating route that forwards to such backends (and the same built-in parts) gets
	// event loops, which hand each connection to the goroutine path on accept for its
	// ClientHello, routing and handshake (a certificate lookup may block); once the client
	// negotiated HTTP/1.1 (ALPN, or none and an HTTP request), the socket goes back to one of
	// the port's loops with its crypto/tls connection, which decrypts what the loop reads and
	// encrypts what it writes. Its requests are then served as a plain-HTTP port's are, and
	// what the loop does not carry goes back to the goroutine path with the same TLS
	// connection. h2 connections and re-encrypting routes stay on goroutines.
	//
	// Behaviour is the goroutine path's (half-close, byte counts, limits, timeouts, metrics,
	// access logs, failover with ConnectTimeout shared among the hosts tried); the
	// differences are in cost: small messages move with recv/send through a per-loop
	// buffer, bulk transfers are spliced, and an idle connection holds no buffer and no
	// goroutine. Measured in bench/README.md ("Event-loop engine").
	EngineEventLoop Engine = iota
	// EngineGoroutines serves every connection on goroutines and Go's net package: the
	// explicit opt-out of the event loops.
	EngineGoroutines
)

// String is the engine's name as the config key engine spells it.
func (e Engine) String() string {
	switch e {
	case EngineEventLoop:
		return "eventloop"
	case EngineGoroutines:
		return "goroutines"
	}
	return "Engine(" + strconv.Itoa(int(e)) + ")"
}
